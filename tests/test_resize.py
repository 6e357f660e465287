"""MATLAB-exact bicubic: the shared LR_bicubic images are the ground truth."""
import numpy as np
import pytest
import torch
from PIL import Image

from sr.resize import imresize, modcrop


def _load(path) -> torch.Tensor:
    a = np.array(Image.open(path))
    t = torch.from_numpy(a)
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1).contiguous()


@pytest.mark.parametrize("dataset", ["Set5", "Set14"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_regenerates_matlab_lr_exactly(benchmarks_dir, dataset, scale):
    hr_paths = sorted((benchmarks_dir / dataset / "HR").glob("*.png"))
    assert hr_paths, f"no HR images in {benchmarks_dir / dataset}"
    for hr_path in hr_paths:
        hr = _load(hr_path)
        lr = _load(benchmarks_dir / dataset / "LR_bicubic" / f"X{scale}" / f"{hr_path.stem}x{scale}.png")
        ours = imresize(modcrop(hr, scale), 1 / scale)
        assert ours.dtype == torch.uint8 and ours.shape == lr.shape, hr_path.name
        differing = int((ours != lr).sum())
        assert differing == 0, f"{hr_path.name} x{scale}: {differing} differing pixels"


def _reference(x: np.ndarray, scale: float, uint8: bool = False) -> np.ndarray:
    """Direct float64 transcription of MATLAB's imresize (slow, for cross-checking);
    ``uint8`` rounds half away from zero and saturates after each pass, as MATLAB does
    for a uint8 image."""
    def cubic(t):
        # Powers as products, as sr.resize evaluates them: which of two neighbouring
        # doubles a weight gets decides exact .5 ties in the uint8 comparison.
        a = np.abs(t)
        a2 = a * a
        a3 = a2 * a
        return ((1.5 * a3 - 2.5 * a2 + 1) * (a <= 1)
                + (-0.5 * a3 + 2.5 * a2 - 4 * a + 2) * ((a > 1) & (a <= 2)))

    def resize_dim(img, axis):
        n = img.shape[axis]
        out_n = int(np.ceil(n * scale))
        width = 4.0 / scale if scale < 1 else 4.0
        o = np.arange(1, out_n + 1, dtype=np.float64)
        u = o / scale + 0.5 * (1 - 1 / scale)
        left = np.floor(u - width / 2)
        idx = left[:, None] + np.arange(int(np.ceil(width)) + 2)[None, :]
        d = u[:, None] - idx
        w = scale * cubic(scale * d) if scale < 1 else cubic(d)
        total = w[:, 0].copy()
        for k in range(1, w.shape[1]):  # sequential, like MATLAB's sum over a short row
            total = total + w[:, k]
        w = w / total[:, None]
        aux = np.concatenate([np.arange(n), np.arange(n - 1, -1, -1)])
        idx = aux[np.mod(idx.astype(int) - 1, 2 * n)]
        moved = np.moveaxis(img, axis, 0)
        res = 0.0
        for k in range(w.shape[1]):  # MATLAB's order: it decides exact .5 ties
            res = res + w[:, k].reshape(-1, *[1] * (moved.ndim - 1)) * moved[idx[:, k]]
        return np.moveaxis(res, 0, axis)

    def matlab_round(y):
        return np.clip(np.floor(y + 0.5), 0, 255) if uint8 else y

    return matlab_round(resize_dim(matlab_round(resize_dim(x.astype(np.float64), 0)), 1))


@pytest.mark.parametrize("scale", [4, 3, 2, 1 / 2, 1 / 3, 1 / 4, 0.7, 1.5])
def test_float_path_matches_reference(scale):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 23, 17, generator=g, dtype=torch.float64)
    ours = imresize(x, scale)
    ref = np.stack([[_reference(x[n, c].numpy(), scale) for c in range(3)] for n in range(2)])
    assert ours.shape == ref.shape
    assert np.abs(ours.numpy() - ref).max() < 1e-10
    ours32 = imresize(x.float(), scale)
    assert ours32.dtype == torch.float32
    assert np.abs(ours32.numpy() - ref).max() < 1e-5


@pytest.mark.parametrize("scale", [4, 3, 2, 1 / 2, 1 / 3, 1 / 4, 0.7, 1.5])
@pytest.mark.parametrize("shape", [(2, 3, 23, 17), (1, 2, 150, 131)], ids=["dense", "blocks"])
def test_uint8_path_matches_reference(scale, shape):
    """Small planes go through one batched dense matmul, large ones through the
    polyphase blocks; both must round exactly like MATLAB, also between the passes."""
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)
    # Smooth regions as well as noise: they put many outputs near rounding ties.
    x[..., : shape[-2] // 2, :] = x[..., :1, :1]
    ours = imresize(x, scale)
    ref = np.stack([[_reference(x[n, c].numpy(), scale, uint8=True) for c in range(shape[1])]
                    for n in range(shape[0])])
    assert ours.dtype == torch.uint8 and ours.shape == ref.shape
    assert int((ours.numpy() != ref).sum()) == 0


def test_shapes_dtypes_and_size_argument():
    x = torch.randint(0, 256, (1, 17, 13), dtype=torch.uint8)
    assert imresize(x, 2).shape == (1, 34, 26)
    assert imresize(x, 1 / 2).shape == (1, 9, 7)  # MATLAB: ceil
    assert imresize(x, size=(10, 30)).shape == (1, 10, 30)
    assert imresize(x.float() / 255, 3).dtype == torch.float32
    assert imresize(x.to(torch.bfloat16), 2).dtype == torch.bfloat16
    with pytest.raises(ValueError):
        imresize(x)
    with pytest.raises(TypeError):
        imresize(x.to(torch.int32), 2)


def test_constant_image_stays_constant():
    x = torch.full((3, 20, 20), 77, dtype=torch.uint8)
    for s in (2, 3, 4, 1 / 2, 1 / 3, 1 / 4):
        assert bool((imresize(x, s) == 77).all())


def test_modcrop():
    x = torch.zeros(3, 10, 11)
    assert modcrop(x, 4).shape == (3, 8, 8)
    assert modcrop(x, 1).shape == (3, 10, 11)
