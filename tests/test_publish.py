"""Shipping a trained checkpoint: scores measured with the protocol land in its metadata."""
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
