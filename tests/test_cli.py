import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import sr.checkpoints as ckpt
from sr.checkpoints import load_model, save_checkpoint
from sr.cli import main
from sr.inference import upscale
from sr.io import read_image
from sr.models import MODELS, create_model

ROOT = Path(__file__).resolve().parent.parent


def write_image(path, h=12, w=10, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, len(mode)), dtype=np.uint8), mode).save(path)
    return path


def pixels(path):
    return np.asarray(Image.open(path))


def expected(model_name, src, alpha="bicubic", **kw):
    model = load_model(model_name, **kw)
    return np.asarray(upscale(model, read_image(src), precision="fp32", alpha=alpha))


def files(folder):
    return sorted(p.name for p in Path(folder).iterdir())


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    model = create_model("edsr_baseline", 2, n_resblocks=1, n_feats=8)
    return save_checkpoint(model, tmp_path / "tiny.safetensors",
                           metadata={"provenance": {"steps": 123}, "eval": {"Set5": {"psnr": 31.25, "ssim": 0.8812}}})


def error_lines(err: str) -> list[str]:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert all(ln.startswith("error: ") for ln in lines), err
    return lines


def test_upscale_file_with_checkpoint(tmp_path, checkpoint, capsys):
    src = write_image(tmp_path / "photo.png")
    out = tmp_path / "out"
    assert main(["upscale", str(src), "-o", str(out), "--model", str(checkpoint), "--precision", "fp32"]) == 0
    assert files(out) == ["photo_x2.png"]
    got = pixels(out / "photo_x2.png")
    assert got.shape == (24, 20, 3)
    np.testing.assert_array_equal(got, expected(checkpoint, src))
    assert capsys.readouterr().err == ""


def test_upscale_subprocess_bicubic_to_file(tmp_path):
    src = write_image(tmp_path / "a.png", mode="RGBA")
    out = tmp_path / "result.png"
    proc = subprocess.run([sys.executable, "-m", "sr", "upscale", str(src), "-o", str(out),
                           "--model", "bicubic", "--scale", "3", "--precision", "fp32", "--alpha", "model"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    got = pixels(out)
    assert got.shape == (36, 30, 4)
    np.testing.assert_array_equal(got, expected("bicubic", src, alpha="model", scale=3))


def test_folder_input(tmp_path, checkpoint):
    folder = tmp_path / "in"
    folder.mkdir()
    for i, name in enumerate(["b.png", "a.jpg", "c.bmp"]):
        write_image(folder / name, seed=i)
    (folder / "notes.txt").write_text("not an image")
    single = write_image(tmp_path / "z.png", seed=9)
    out = tmp_path / "out"
    assert main(["upscale", str(folder), str(single), "-o", str(out), "--model", str(checkpoint), "--tile", "4"]) == 0
    assert files(out) == ["a_x2.png", "b_x2.png", "c_x2.png", "z_x2.png"]


def test_bad_inputs_fail_cleanly(tmp_path, checkpoint, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    write_image(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    out = tmp_path / "out"
    rc = main(["upscale", str(folder), str(tmp_path / "missing.png"), "-o", str(out), "--model", str(checkpoint)])
    assert rc == 1
    lines = error_lines(capsys.readouterr().err)
    assert any("broken.png" in ln for ln in lines) and any("missing.png" in ln for ln in lines)
    assert lines[-1] == "error: 2 of 3 inputs failed"
    assert files(out) == ["good_x2.png"]  # the good one is done, no partial or temp files

    # single input to an explicit file: nothing is created
    target = tmp_path / "single.png"
    assert main(["upscale", str(folder / "broken.png"), "-o", str(target), "--model", "bicubic", "--scale", "2"]) == 1
    assert len(error_lines(capsys.readouterr().err)) == 2
    assert not target.exists()


def test_bad_model_is_one_line(tmp_path, capsys):
    src = write_image(tmp_path / "a.png")
    for model, scale in (("no_such_model", "2"), (str(tmp_path / "missing.safetensors"), "2"), ("bicubic", "5")):
        assert main(["upscale", str(src), "-o", str(tmp_path / "o"), "--model", model, "--scale", scale]) == 1
        assert len(error_lines(capsys.readouterr().err)) == 1
    assert not (tmp_path / "o").exists()


def test_interrupt_leaves_no_output(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("sr.inference.upscale", interrupted)
    src = write_image(tmp_path / "a.png")
    assert main(["upscale", str(src), "-o", str(tmp_path / "o.png"), "--model", "bicubic", "--scale", "2"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert files(tmp_path) == ["a.png"]


def test_models_lists_architectures_and_bundled_weights(tmp_path, checkpoint, monkeypatch, capsys):
    monkeypatch.setenv(ckpt.WEIGHTS_ENV, str(tmp_path / "weights"))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert f"  {name} " in out
    assert "43,089,923" in out  # EDSR at x4, the paper's 43M
    assert "none" in out

    (tmp_path / "weights").mkdir()
    os.replace(checkpoint, tmp_path / "weights" / "edsr_baseline_x2.safetensors")
    assert main(["models"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if "edsr_baseline_x2" in ln)
    assert row.split() == ["edsr_baseline_x2", "x2", "123", "31.25", "/", "0.8812"]


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_command(tmp_path, checkpoint, monkeypatch, capsys):
    out = tmp_path / "tiny.pt"
    assert main(["export", str(checkpoint), "--format", "torchscript", "-o", str(out)]) == 0
    loaded = torch.jit.load(str(out))
    x = torch.rand(1, 3, 7, 9)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), load_model(checkpoint)(x), atol=1e-5, rtol=0)

    monkeypatch.chdir(tmp_path)
    assert main(["export", "bicubic", "--scale", "2", "--format", "torchscript"]) == 0
    assert (tmp_path / "bicubic_x2.torchscript.pt").is_file()
    capsys.readouterr()
    assert main(["export", "bicubic", "--format", "torchscript"]) == 1
    assert len(error_lines(capsys.readouterr().err)) == 1
