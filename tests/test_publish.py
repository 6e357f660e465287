"""Shipping a trained checkpoint: scores measured with the protocol land in its metadata."""
import pytest
import torch

from sr.checkpoints import read_metadata, save_checkpoint
from sr.models import create_model
from sr.train.publish import main


def test_publish_writes_scores_and_keeps_provenance(tmp_path, benchmarks_dir):
    """The trainer's record is kept as is; --command replaces all of it with one text."""
    torch.manual_seed(0)
    src = tmp_path / "final.safetensors"
    recorded = {"steps": 7, "command": "python -m sr.train --run-dir b", "resumed_with": ["... --resume"],
                "history": [{"file": "a/final.safetensors", "command": "python -m sr.train --run-dir a"}]}
    save_checkpoint(create_model("bicubic", 4), src, {"provenance": recorded})
    kept = tmp_path / "kept"
    assert main([str(src), "--datasets", "Set5", "--weights-dir", str(kept), "--data-root", str(benchmarks_dir)]) == 0
    assert read_metadata(kept / "bicubic_x4.safetensors")["provenance"] == recorded
    out = tmp_path / "weights"
    rc = main([str(src), "--datasets", "Set5", "--weights-dir", str(out),
               "--data-root", str(benchmarks_dir), "--command", "python -m sr.train ..."])
    assert rc == 0
    meta = read_metadata(out / "bicubic_x4.safetensors")
    assert meta["provenance"] == {"steps": 7, "command": "python -m sr.train ..."}
    # the bicubic row of the protocol (pinned in test_eval.py)
    assert abs(meta["eval"]["Set5"]["psnr"] - 28.4290) < 1e-3
    assert meta["eval"]["Set5"]["scale"] == 4


def test_publish_reports_a_bad_checkpoint(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main([str(bad), "--weights-dir", str(tmp_path)]) == 1
    assert capsys.readouterr().err.startswith("error: ")


def test_publish_half_records_the_fp16_files_scores(tmp_path, benchmarks_dir, capsys):
    """--half ships fp16; the metadata scores are the shipped file's, and re-evaluating it agrees."""
    from eval import evaluate
    from sr.checkpoints import load_model

    torch.manual_seed(0)
    src = tmp_path / "final.safetensors"
    save_checkpoint(create_model("espcn", 4), src, {"provenance": {"steps": 3}})
    out = tmp_path / "weights"
    assert main([str(src), "--datasets", "Set5", "--weights-dir", str(out), "--data-root", str(benchmarks_dir),
                 "--half"]) == 0
    shipped = out / "espcn_x4.safetensors"
    meta = read_metadata(shipped)
    assert meta["dtype"] == "float16"
    record = meta["provenance"]["fp16_storage"]
    change = record["set5_psnr_change_db"]
    assert abs(change) < 0.01
    assert meta["eval"]["Set5"]["psnr"] == pytest.approx(record["fp32_eval"]["Set5"]["psnr"] + change, abs=2e-4)
    again = evaluate({"espcn": load_model(shipped)}, ["Set5"], [4], data_root=benchmarks_dir, cache=False,
                     progress=False)["psnr_y"].mean()
    assert again == pytest.approx(meta["eval"]["Set5"]["psnr"], abs=1e-4)
    assert "fp16 storage moves Set5 by" in capsys.readouterr().out


def test_publish_half_refusal_keeps_the_shipped_file(tmp_path, benchmarks_dir, monkeypatch, capsys):
    import sr.train.publish as publish

    src = tmp_path / "final.safetensors"
    save_checkpoint(create_model("espcn", 4), src, {"provenance": {"steps": 3}})
    out = tmp_path / "weights"
    out.mkdir()
    (out / "espcn_x4.safetensors").write_bytes(b"the file shipped before")
    monkeypatch.setattr(publish, "HALF_TOLERANCE_DB", 0.0)  # any change refuses
    assert main([str(src), "--datasets", "Set5", "--weights-dir", str(out), "--data-root", str(benchmarks_dir),
                 "--half"]) == 1
    assert "ship it without --half" in capsys.readouterr().err
    assert (out / "espcn_x4.safetensors").read_bytes() == b"the file shipped before"
    assert sorted(p.name for p in out.iterdir()) == ["espcn_x4.safetensors"]
