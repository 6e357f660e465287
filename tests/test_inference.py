import threading

import numpy as np
import pytest
import torch
from torch import nn

from sr import inference
from sr.errors import Cancelled, SRError
from sr.inference import plan_tiles, upscale, upscale_with_info
from sr.models import create_model

TOL = 1 / 255


class TinySR(nn.Module):
    """conv-relu-conv-PixelShuffle: receptive field of 2 LR pixels."""

    def __init__(self, scale=2, width=8):
        super().__init__()
        self.scale, self.arch = scale, "tiny"
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3 * scale * scale, 3, padding=1),
                                  nn.PixelShuffle(scale))

    def forward(self, x):
        return self.body(x)


class SymmetricSR(nn.Module):
    """Equivariant to flips and transposes: D4-symmetric kernels, nearest upsampling."""

    def __init__(self, scale=2):
        super().__init__()
        self.scale, self.arch = scale, "symmetric"
        self.a, self.b = nn.Conv2d(3, 6, 3, padding=1), nn.Conv2d(6, 3, 3, padding=1)
        with torch.no_grad():
            for conv in (self.a, self.b):
                w = conv.weight
                sym = sum(inference._flip_rot(w, k) for k in range(8)) / 8
                w.copy_(sym)

    def forward(self, x):
        y = self.b(torch.relu(self.a(x)))
        return nn.functional.interpolate(y, scale_factor=self.scale, mode="nearest")


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinySR()


def _image(h=37, w=29, n=None, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (3, h, w) if n is None else (n, 3, h, w)
    return torch.rand(shape, generator=g)


# ------------------------------------------------------------------------------ tiling

def test_plan_tiles_cover_image_once():
    for h, w, tile, overlap in [(37, 29, 10, 3), (5, 5, 100, 4), (64, 64, 16, 0), (1, 9, 4, 2)]:
        cover = torch.zeros(h, w, dtype=torch.int32)
        plan = plan_tiles(h, w, tile, overlap)
        for t in plan:
            y0, y1, x0, x1 = t.core
            sy0, sy1, sx0, sx1 = t.src
            assert y1 - y0 <= tile and x1 - x0 <= tile
            assert 0 <= sy0 <= y0 and y1 <= sy1 <= h and 0 <= sx0 <= x0 and x1 <= sx1 <= w
            assert y0 - sy0 == min(overlap, y0) and sy1 - y1 == min(overlap, h - y1)
            cover[y0:y1, x0:x1] += 1
        assert bool((cover == 1).all())
    assert len(plan_tiles(5, 5, 100, 4)) == 1
    assert len(plan_tiles(37, 29, 10, 3)) == 4 * 3


def test_plan_tiles_rejects_bad_sizes():
    with pytest.raises(SRError):
        plan_tiles(10, 10, 0, 2)


@pytest.mark.parametrize("tile", [5, 8, 13, 16, 29, 200])
def test_tiled_equals_whole_tiny(tiny, tile):
    x = _image()
    whole = tiny(x[None])[0].detach()
    out = upscale(tiny, x, tile=tile, device="cpu", precision="fp32")
    assert out.shape == whole.shape
    assert (out - whole).abs().max().item() < 1e-5


def test_zero_overlap_shows_seams(tiny):
    # Guards the test above: without context the tiles do differ from the whole image.
    x = _image()
    whole = tiny(x[None])[0].detach()
    out = upscale(tiny, x, tile=8, tile_overlap=0, device="cpu", precision="fp32")
    assert (out - whole).abs().max().item() > TOL


def test_receptive_field_probe(tiny):
    fp = inference._footprint(tiny, torch.device("cpu"))
    assert fp.receptive_field == 2
    assert fp.bytes_per_pixel > 0


def _registry_model(name, scale, **hp):
    torch.manual_seed(0)
    return create_model(name, scale, **hp)


# Real registry architectures, made shallow where deep, so the receptive field (and the
# test) stays small; `hp` only sets depth.
@pytest.mark.parametrize("name,scale,hp", [("edsr_baseline", 2, {"n_resblocks": 3}),
                                           ("srresnet", 2, {"n_resblocks": 2}),
                                           ("espcn", 3, {}), ("fsrcnn", 2, {}),
                                           ("srcnn", 3, {}), ("bicubic", 4, {})])
def test_tiled_equals_whole_registry(name, scale, hp):
    model = _registry_model(name, scale, **hp).eval()
    x = _image(40, 33)
    with torch.inference_mode():
        whole = model(x[None])[0]
    rf = inference._footprint(model, torch.device("cpu")).receptive_field
    # receptive field + bicubic margin, then the default overlap, then one tile
    for tile, overlap in ((11, rf + 2), (16, None), (50, None)):
        out = upscale(model, x, tile=tile, tile_overlap=overlap, device="cpu", precision="fp32")
        assert (out - whole).abs().max().item() < TOL, (name, tile)


def test_auto_tile_follows_memory_budget(tiny):
    x = _image(64, 64)
    _, small = upscale_with_info(tiny, x, device="cpu", precision="fp32", memory_budget_mb=0.05)
    _, big = upscale_with_info(tiny, x, device="cpu", precision="fp32", memory_budget_mb=512)
    assert big["tiles"] == 1
    assert small["tiles"] > 1 and small["tile"] < 64


# ------------------------------------------------------------------- precision, device

def test_fp32_bit_identical_to_direct_call(tiny):
    x = _image(20, 24, n=2)
    with torch.inference_mode():
        direct = tiny(x)
    out = upscale(tiny, x, device="cpu", precision="fp32")
    assert out.dtype == torch.float32 and out.shape == direct.shape
    assert torch.equal(out, direct)


@pytest.mark.parametrize("precision,tile", [("auto", None), ("fp32", None), ("fp32", 4)])
def test_result_is_an_ordinary_tensor(tiny, precision, tile):
    out = upscale(tiny, _image(8, 8), device="cpu", precision=precision, tile=tile)
    assert not out.is_inference() and not out.requires_grad
    out.clamp_(0, 1)  # in-place use by callers must work


def test_fp16_on_cpu_refused(tiny):
    with pytest.raises(SRError, match="fp16"):
        upscale(tiny, _image(8, 8), device="cpu", precision="fp16")


def test_auto_precision_on_cpu(tiny):
    x = _image(16, 16)
    out, info = upscale_with_info(tiny, x, device="cpu")
    assert info["device"] == "cpu" and info["channels_last"]
    assert info["precision"] == ("bf16" if inference.cpu_supports_bf16() else "fp32")
    with torch.inference_mode():
        ref = tiny(x[None])[0]
    assert (out - ref).abs().max().item() < 4 * TOL


def test_auto_precision_without_native_bf16(tiny, monkeypatch):
    monkeypatch.setattr(inference, "cpu_supports_bf16", lambda: False)
    x = _image(16, 16)
    out, info = upscale_with_info(tiny, x, device="cpu")
    assert info["precision"] == "fp32" and info["channels_last"]
    with torch.inference_mode():
        ref = tiny(x[None])[0]
    assert (out - ref).abs().max().item() < 1e-5


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_cuda
def test_cuda_fp32_exact_and_tf32_restored():
    model = _registry_model("edsr_baseline", 2)
    x = _image(24, 24)
    ref = upscale(model, x, device="cpu", precision="fp32")
    flags = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    out, info = upscale_with_info(model, x, device="cuda", precision="fp32")
    assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags
    assert out.device == x.device and info["device"].startswith("cuda")
    assert (out - ref).abs().max().item() < 1e-4


@needs_cuda
def test_cuda_auto_precision_close_to_fp32():
    model = _registry_model("edsr_baseline", 2)
    x = _image(24, 24)
    ref = upscale(model, x, device="cpu", precision="fp32")
    out, info = upscale_with_info(model, x, device="cuda")
    assert info["precision"] in ("bf16", "fp16")
    assert (out - ref).abs().max().item() < 4 * TOL


def test_bf16_close_to_fp32_edsr():
    model = _registry_model("edsr_baseline", 2)
    x = _image(24, 24)
    ref = upscale(model, x, device="cpu", precision="fp32")
    fast = upscale(model, x, device="cpu", precision="bf16")
    assert (fast - ref).abs().max().item() < 4 * TOL


def test_pick_device():
    assert inference.pick_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert inference.pick_device().type == expected
    with pytest.raises(SRError):
        inference.pick_device("nonsense")


def test_model_stays_put_and_keeps_training_flag(tiny):
    tiny.train()
    weight = tiny.body[0].weight
    upscale(tiny, _image(8, 8), device="cpu", precision="fp32")
    assert tiny.training
    assert tiny.body[0].weight is weight
    tiny.eval()


# -------------------------------------------------------------------------- ensemble

def test_ensemble_shape_and_equivariant_model():
    torch.manual_seed(0)
    model = SymmetricSR()
    x = _image(15, 22)
    plain = upscale(model, x, device="cpu", precision="fp32")
    ens, info = upscale_with_info(model, x, device="cpu", precision="fp32", ensemble=True,
                                  tile=8)
    assert ens.shape == plain.shape == (3, 30, 44)
    assert info["passes"] == 8
    assert (ens - plain).abs().max().item() < 1e-5


def test_ensemble_differs_for_generic_model(tiny):
    x = _image(15, 22)
    plain = upscale(tiny, x, device="cpu", precision="fp32")
    ens = upscale(tiny, x, device="cpu", precision="fp32", ensemble=True)
    assert ens.shape == plain.shape
    assert (ens - plain).abs().max().item() > 1e-3


# -------------------------------------------------------------- progress, cancellation

def test_progress_counts_tiles_and_passes(tiny):
    calls = []
    x = _image(20, 30)
    upscale(tiny, x, tile=10, device="cpu", precision="fp32", ensemble=True,
            progress=lambda done, total: calls.append((done, total)))
    total = 8 * len(plan_tiles(20, 30, 10, 4))
    assert calls[0] == (0, total) and calls[-1] == (total, total)
    assert [d for d, _ in calls] == list(range(total + 1))
    assert all(t == total for _, t in calls)


def test_cancel_callable_raises(tiny):
    seen = []

    def cancel():
        return seen[-1] >= 2  # stop after two tiles

    with pytest.raises(Cancelled):
        upscale(tiny, _image(32, 32), tile=8, device="cpu", precision="fp32",
                progress=lambda d, t: seen.append(d), cancel=cancel)
    assert seen[-1] == 2


def test_cancel_event_raises(tiny):
    event = threading.Event()
    event.set()
    with pytest.raises(Cancelled):
        upscale(tiny, _image(16, 16), device="cpu", cancel=event)


# ----------------------------------------------------------------------- bad inputs

@pytest.mark.parametrize("bad", [torch.rand(4, 8, 8), torch.rand(8, 8), torch.rand(1, 1, 3, 8, 8),
                                 torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8),
                                 torch.rand(3, 0, 8)])
def test_bad_tensor_rejected(tiny, bad):
    with pytest.raises(SRError):
        upscale(tiny, bad, device="cpu")


def test_bad_arguments_rejected(tiny):
    x = _image(8, 8)
    with pytest.raises(SRError):
        upscale(tiny, x, precision="fp8")
    with pytest.raises(SRError):
        upscale(tiny, x, alpha="ignore")
    with pytest.raises(SRError):
        upscale(tiny, x, tile=0)
    with pytest.raises(SRError):
        upscale(nn.Conv2d(3, 3, 1), x)
    with pytest.raises(SRError):
        upscale(tiny, "picture.png")


def test_wrong_scale_reported(tiny):
    liar = TinySR(scale=2)
    liar.scale = 3
    with pytest.raises(SRError, match="scale"):
        upscale(liar, _image(8, 8), device="cpu")


# ------------------------------------------------------------------ PIL and numpy

@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "I;16"])
def test_pil_in_pil_out(tiny, mode):
    from PIL import Image
    rng = np.random.default_rng(0)
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (9, 11), dtype=np.uint16))
    else:
        img = Image.fromarray(rng.integers(0, 256, (9, 11, 4), dtype=np.uint8), "RGBA")
        img = img.convert(mode)
    out = upscale(tiny, img, device="cpu", precision="fp32")
    assert isinstance(out, Image.Image)
    assert out.mode == img.mode
    assert out.size == (22, 18)


def test_pil_alpha_modes(tiny):
    from PIL import Image
    rgba = np.zeros((8, 10, 4), dtype=np.uint8)
    rgba[..., 0] = 200
    rgba[:, 5:, 3] = 255          # right half opaque, left half transparent
    img = Image.fromarray(rgba, "RGBA")
    for how in ("bicubic", "model"):
        out = np.asarray(upscale(tiny, img, device="cpu", precision="fp32", alpha=how))
        assert out.shape == (16, 20, 4)
    out = np.asarray(upscale(tiny, img, device="cpu", precision="fp32"))
    assert out[:, :8, 3].max() <= 10 and out[:, 12:, 3].min() >= 245


@pytest.mark.parametrize("dtype,shape", [(np.uint8, (7, 9, 3)), (np.uint8, (7, 9)),
                                         (np.uint16, (7, 9, 3)), (np.float32, (7, 9, 3)),
                                         (np.uint8, (7, 9, 4))])
def test_numpy_in_numpy_out(tiny, dtype, shape):
    rng = np.random.default_rng(0)
    if dtype == np.float32:
        arr = rng.random(shape, dtype=np.float32)
    else:
        arr = rng.integers(0, np.iinfo(dtype).max + 1, shape).astype(dtype)
    out = upscale(tiny, arr, device="cpu", precision="fp32")
    assert isinstance(out, np.ndarray) and out.dtype == arr.dtype
    assert out.shape == (14, 18) + shape[2:]


def test_numpy_matches_tensor_path(tiny):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (7, 9, 3), dtype=np.uint8)
    x = torch.from_numpy(arr).permute(2, 0, 1).float() / 255
    ref = upscale(tiny, x, device="cpu", precision="fp32").clamp(0, 1)
    ref = torch.round(ref * 255).to(torch.uint8).permute(1, 2, 0).numpy()
    out = upscale(tiny, arr, device="cpu", precision="fp32")
    assert np.abs(out.astype(int) - ref.astype(int)).max() <= 1


class NearestSR(nn.Module):
    """Pixel replication: shows whether values survive the engine unchanged."""
    scale, arch = 2, "nearest"

    def forward(self, x):
        return x.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)


@pytest.mark.parametrize("shape", [(6, 5), (6, 5, 3)])
def test_sixteen_bit_precision_kept(shape):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 65536, shape).astype(np.uint16)
    out = upscale(NearestSR(), arr, device="cpu", precision="fp32")
    assert out.dtype == np.uint16
    assert np.array_equal(out, arr.repeat(2, 0).repeat(2, 1))


def test_sixteen_bit_pil_kept():
    from PIL import Image
    arr = np.random.default_rng(0).integers(0, 65536, (6, 5)).astype(np.uint16)
    out = upscale(NearestSR(), Image.fromarray(arr), device="cpu", precision="fp32")
    assert out.mode == "I;16"
    assert np.array_equal(np.asarray(out), arr.repeat(2, 0).repeat(2, 1))


def test_float_numpy_not_cut_to_8_bits():
    arr = np.random.default_rng(0).random((6, 5, 3), dtype=np.float32)
    out = upscale(NearestSR(), arr, device="cpu", precision="fp32")
    assert out.dtype == np.float32
    assert np.abs(out - arr.repeat(2, 0).repeat(2, 1)).max() <= 1 / 65535
