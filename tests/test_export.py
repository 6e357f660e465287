import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sr.export import ExportError, bicubic_upscale, export_model
from sr.models import create_model
from sr.resize import imresize

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")

TINY = {
    "edsr_baseline": dict(n_resblocks=2, n_feats=16),
    "espcn": dict(n1=16, n2=8),
    "srcnn": dict(n1=16, n2=8),
}
# Sizes other than export's own trace and check sizes, with a batch of 2 for one.
SIZES = ((2, 13, 19), (1, 40, 27))


def tiny(arch, scale):
    torch.manual_seed(0)
    return create_model(arch, scale, **TINY.get(arch, {})).eval()


def inputs():
    gen = torch.Generator().manual_seed(3)
    return [torch.rand(n, 3, h, w, generator=gen) for n, h, w in SIZES]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_traceable_bicubic_matches_imresize(scale):
    for h, w in ((2, 2), (5, 9), (17, 12)):
        x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h))
        torch.testing.assert_close(bicubic_upscale(x, scale), imresize(x, scale=scale), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch,scale", [("edsr_baseline", 2), ("espcn", 3), ("srcnn", 2), ("bicubic", 4)])
def test_torchscript_dynamic_sizes(arch, scale, tmp_path):
    model = tiny(arch, scale)
    path = export_model(model, tmp_path / "m.pt", "torchscript")
    extra = {"srwb.json": ""}
    loaded = torch.jit.load(str(path), _extra_files=extra)
    assert json.loads(extra["srwb.json"])["arch"] == arch
    for x in inputs():
        with torch.no_grad():
            want = model(x)
            got = loaded(x)
        assert got.shape == (x.shape[0], 3, x.shape[2] * scale, x.shape[3] * scale)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch,scale", [("edsr_baseline", 3), ("espcn", 2)])
def test_onnx_dynamic_sizes(arch, scale, tmp_path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements-test.txt)")
    model = tiny(arch, scale)
    path = export_model(model, tmp_path / "m.onnx", "onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in inputs():
        got = torch.from_numpy(session.run(["output"], {"input": x.numpy()})[0])
        with torch.no_grad():
            want = model(x)
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_spandrel_model_exports(tmp_path):
    from spandrel.architectures.Compact import Compact

    from sr.checkpoints import load_model

    torch.save(Compact(num_feat=8, num_conv=2, upscale=2).state_dict(), tmp_path / "c.pth")
    model = load_model(tmp_path / "c.pth")
    loaded = torch.jit.load(str(export_model(model, tmp_path / "c.pt", "torchscript")))
    for x in inputs():
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), model(x), atol=1e-5, rtol=0)


class _FixedSize(nn.Module):
    """Computes its output size in Python: a trace freezes it to the example's size."""

    scale, arch = 2, "fixed"

    def forward(self, x):
        return F.interpolate(x, size=(int(x.shape[2]) * 2, int(x.shape[3]) * 2), mode="nearest")


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
def test_size_frozen_model_is_refused_and_nothing_written(fmt, tmp_path):
    if fmt == "onnx":
        pytest.importorskip("onnxruntime", reason="the ONNX check needs onnxruntime")
    with pytest.raises(ExportError, match="not dynamic"):
        export_model(_FixedSize(), tmp_path / "m.out", fmt)
    assert list(tmp_path.iterdir()) == []


def test_unknown_format(tmp_path):
    with pytest.raises(ExportError, match="torchscript, onnx"):
        export_model(tiny("espcn", 2), tmp_path / "m.x", "tflite")
