"""eval.metrics: the paper protocol's PSNR/SSIM, cross-checked against scikit-image."""
import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from eval.metrics import (Lpips, MetricUnavailable, detail_ratio, evaluate_batch, evaluate_pair,
                          psnr, quantize, ssim, y_channel, _filter_valid)


def _pair(seed, c=3, h=53, w=61, noise=0.05):
    g = torch.Generator().manual_seed(seed)
    hr = torch.randint(0, 256, (c, h, w), dtype=torch.uint8, generator=g)
    sr = (hr.double() / 255 + noise * torch.randn(c, h, w, generator=g, dtype=torch.float64)).clamp(0, 1)
    return sr, hr


def _skimage_reference(sr, hr, scale):
    """The protocol written with numpy + scikit-image, step by step."""
    sr8 = np.floor(np.clip(sr.numpy().astype(np.float64), 0, 1) * 255 + 0.5)
    hr8 = hr.numpy().astype(np.float64)
    h, w = hr8.shape[-2] // scale * scale, hr8.shape[-1] // scale * scale
    crop = (slice(None), slice(scale, h - scale), slice(scale, w - scale))
    sr8, hr8 = sr8[crop], hr8[crop]
    if sr8.shape[0] == 1:
        sr8, hr8 = np.repeat(sr8, 3, 0), np.repeat(hr8, 3, 0)
    coef = np.array([65.481, 128.553, 24.966])
    ysr = 16 + np.tensordot(coef, sr8, axes=1) / 255
    yhr = 16 + np.tensordot(coef, hr8, axes=1) / 255
    kw = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    return {
        "psnr_y": peak_signal_noise_ratio(yhr, ysr, data_range=255),
        "ssim_y": structural_similarity(yhr, ysr, **kw),
        "psnr_rgb": peak_signal_noise_ratio(hr8, sr8, data_range=255),
        "ssim_rgb": structural_similarity(hr8, sr8, channel_axis=0, **kw),
    }


@pytest.mark.parametrize("seed,c,h,w,scale", [(0, 3, 53, 61, 2), (1, 3, 64, 64, 3), (2, 3, 48, 70, 4),
                                              (3, 1, 50, 47, 2)])
def test_matches_scikit_image(seed, c, h, w, scale):
    sr, hr = _pair(seed, c, h, w)
    if c == 1:  # a model returns RGB for a grayscale input: R = G = B
        sr = sr.expand(3, -1, -1)
    ours = evaluate_pair(sr, hr, scale)
    ref = _skimage_reference(sr[:1] if c == 1 else sr, hr, scale)
    for k in ref:
        assert ours[k] == pytest.approx(ref[k], abs=1e-6), k


def test_window_is_matlab_fspecial_gaussian_11_1_5():
    # Filtering 121 unit impulses in 'valid' mode reads the window back, tap by tap.
    deltas = torch.zeros(121, 11, 11, dtype=torch.float64)
    deltas.view(121, 121)[torch.arange(121), torch.arange(121)] = 1
    window = _filter_valid(deltas).view(11, 11)
    t = torch.arange(-5, 6, dtype=torch.float64)
    ref = torch.exp(-(t[:, None] ** 2 + t[None, :] ** 2) / (2 * 1.5 ** 2))
    torch.testing.assert_close(window, ref / ref.sum(), rtol=0, atol=1e-15)


def test_known_answer_one_grey_level():
    hr = torch.full((3, 20, 20), 100, dtype=torch.uint8)
    sr = torch.full((3, 20, 20), 101, dtype=torch.uint8)
    r = evaluate_pair(sr, hr, 2)
    # Y of R = G = B changes by 219/255 per grey level.
    assert r["psnr_y"] == pytest.approx(10 * math.log10(255 ** 2 / (219 / 255) ** 2), abs=1e-9)
    assert r["psnr_rgb"] == pytest.approx(10 * math.log10(255 ** 2), abs=1e-9)


def test_identical_images():
    _, hr = _pair(4)
    r = evaluate_pair(hr, hr, 2)
    assert r["psnr_y"] == math.inf and r["ssim_y"] == pytest.approx(1.0, abs=1e-12)


def test_quantize_rounds_half_away_from_zero_and_clamps():
    x = torch.tensor([-0.2, 0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 254.49 / 255, 1.0, 1.7])
    assert quantize(x).tolist() == [0, 0, 1, 2, 3, 254, 255, 255]
    # float32 inputs whose x*255 sits just below a half must not round up.
    below = torch.tensor([np.nextafter(np.float32(k + 0.5), np.float32(0)) / 255 for k in range(200)],
                         dtype=torch.float32)
    expected = np.floor(below.double().numpy() * 255 + 0.5)
    assert quantize(below).numpy().tolist() == expected.tolist()


def test_y_channel_range_and_grayscale():
    rgb = torch.tensor([[[0]], [[0]], [[0]]], dtype=torch.uint8)
    assert y_channel(rgb).item() == pytest.approx(16.0)
    assert y_channel(rgb + 255).item() == pytest.approx(235.0)
    gray = torch.randint(0, 256, (1, 1, 9, 9), dtype=torch.uint8)
    torch.testing.assert_close(y_channel(gray), y_channel(gray.expand(1, 3, 9, 9)))
    assert y_channel(gray).dtype == torch.float64
    with pytest.raises(TypeError):
        y_channel(gray.float())


def test_modcrop_and_border():
    sr, hr = _pair(5, h=50, w=50)
    # At x3 the 50x50 HR is modcropped to 48x48, the size of the model's output.
    r = evaluate_pair(sr[:, :48, :48], hr, 3)
    ref = _skimage_reference(sr[:, :48, :48], hr, 3)
    assert r["psnr_y"] == pytest.approx(ref["psnr_y"], abs=1e-9)
    # The border crop is `scale` pixels: changing them changes nothing.
    edited = sr[:, :48, :48].clone()
    edited[:, :3] = 0
    edited[:, :, -3:] = 1
    assert evaluate_pair(edited, hr, 3) == r
    with pytest.raises(ValueError, match="modcropped HR"):
        evaluate_pair(sr[:, :45, :48], hr, 3)


def test_uint8_and_float_sr_agree():
    sr, hr = _pair(6)
    assert evaluate_pair(sr, hr, 2) == evaluate_pair(quantize(sr), hr, 2)


def test_batch_equals_single_images():
    pairs = [_pair(s) for s in range(3)]
    batch = evaluate_batch(torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), 2)
    for i, (sr, hr) in enumerate(pairs):
        single = evaluate_pair(sr, hr, 2)
        for k, v in single.items():
            assert batch[k][i].item() == pytest.approx(v, abs=1e-12)
    with pytest.raises(ValueError, match="one image"):
        evaluate_pair(torch.stack([pairs[0][0]] * 2), torch.stack([pairs[0][1]] * 2), 2)


def test_detail_ratio_ranks_smooth_below_sharp():
    hr = _pair(7, h=48, w=48)[1]
    blurred = torch.nn.functional.avg_pool2d(hr.double().unsqueeze(0) / 255, 3, 1, 1, count_include_pad=False)
    flat = torch.full((3, 48, 48), 0.5, dtype=torch.float64)

    def energy_by_hand(img8):  # Y plane, border of 2 cropped, valid 3x3 Laplacian
        y = y_channel(img8)[..., 2:-2, 2:-2]
        lap = y[..., :-2, 1:-1] + y[..., 2:, 1:-1] + y[..., 1:-1, :-2] + y[..., 1:-1, 2:] - 4 * y[..., 1:-1, 1:-1]
        return lap.abs().mean().item()

    got = detail_ratio(torch.stack([hr, quantize(blurred)[0], quantize(flat)]), torch.stack([hr] * 3), 2)
    assert got.shape == (3,)
    assert got[0].item() == 1.0
    assert got[1].item() == pytest.approx(energy_by_hand(quantize(blurred)) / energy_by_hand(hr), rel=1e-12)
    assert 0 < got[1].item() < 0.6 and got[2].item() == 0.0


def test_psnr_and_ssim_shapes():
    a = torch.rand(4, 1, 20, 20, dtype=torch.float64) * 255
    assert psnr(a, a + 1).shape == (4,)
    assert ssim(a, a).shape == (4,)
    with pytest.raises(ValueError):
        ssim(a[:, :, :8, :8], a[:, :, :8, :8])  # smaller than the 11x11 window


def test_lpips_unavailable_is_explicit(monkeypatch):
    import eval.lpips_weights as lw

    def gone(path=None):
        raise lw.LpipsWeightsError("gone")

    monkeypatch.setattr(lw, "load_backbone", gone)
    with pytest.raises(MetricUnavailable, match="LPIPS unavailable: gone"):
        Lpips()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu():
    sr, hr = _pair(7, h=120, w=90)
    cpu = evaluate_pair(sr, hr, 4)
    gpu = evaluate_pair(sr.cuda(), hr.cuda(), 4)
    for k in cpu:
        assert gpu[k] == pytest.approx(cpu[k], abs=1e-9)
