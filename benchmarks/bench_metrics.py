"""Throughput of eval.metrics vs scikit-image on B100-sized images (480x321).

Both sides compute the same four protocol numbers per image from uint8 SR/HR pairs
(Y PSNR, Y SSIM, RGB PSNR, RGB SSIM; border crop, Gaussian SSIM) and are checked to
agree before timing. Run: python benchmarks/bench_metrics.py [--images 24] [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from eval.metrics import evaluate_batch, evaluate_pair, psnr, ssim, y_channel  # noqa: E402

H, W, SCALE = 321, 480, 4
_SSIM = dict(gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
_COEF = np.array([65.481, 128.553, 24.966])


def make_pairs(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Natural-looking pairs: smooth random HR, SR = HR + noise, both uint8 (N, 3, H, W)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, H // 8 + 1, W // 8 + 1, generator=g)
    hr = torch.nn.functional.interpolate(coarse, size=(H, W), mode="bicubic", align_corners=False)
    sr = hr + 0.03 * torch.randn(hr.shape, generator=g)
    to8 = lambda x: (x.clamp(0, 1) * 255).round().to(torch.uint8)  # noqa: E731
    return to8(sr), to8(hr)


def skimage_metrics(sr8: np.ndarray, hr8: np.ndarray, scale: int, rgb: bool = True) -> dict[str, float]:
    c, h, w = scale, sr8.shape[1] // scale * scale, sr8.shape[2] // scale * scale  # modcrop
    sr, hr = (x[:, c:h - c, c:w - c].astype(np.float64) for x in (sr8, hr8))
    ysr = 16 + np.tensordot(_COEF, sr, axes=1) / 255
    yhr = 16 + np.tensordot(_COEF, hr, axes=1) / 255
    out = {"psnr_y": peak_signal_noise_ratio(yhr, ysr, data_range=255),
           "ssim_y": structural_similarity(yhr, ysr, **_SSIM)}
    if rgb:
        out.update(psnr_rgb=peak_signal_noise_ratio(hr, sr, data_range=255),
                   ssim_rgb=structural_similarity(hr, sr, channel_axis=0, **_SSIM))
    return out


def ours_y_only(sr8: torch.Tensor, hr8: torch.Tensor, scale: int) -> tuple[float, float]:
    """The two numbers papers print, with eval.metrics' building blocks."""
    c, h, w = scale, sr8.shape[-2] // scale * scale, sr8.shape[-1] // scale * scale
    ys, yh = (y_channel(x[None, :, c:h - c, c:w - c]) for x in (sr8, hr8))
    return float(psnr(ys, yh)[0]), float(ssim(ys, yh)[0])


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=24)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    sr, hr = make_pairs(args.images)
    sr_np, hr_np = sr.numpy(), hr.numpy()
    n = args.images

    # Same numbers first, then speed.
    for i in range(min(n, 4)):
        ours, ref = evaluate_pair(sr[i], hr[i], SCALE), skimage_metrics(sr_np[i], hr_np[i], SCALE)
        worst = max(abs(ours[k] - ref[k]) for k in ref)
        assert worst < 1e-6, f"image {i}: differs from scikit-image by {worst}"

    ref = skimage_metrics(sr_np[0], hr_np[0], SCALE, rgb=False)
    assert max(abs(a - b) for a, b in zip(ours_y_only(sr[0], hr[0], SCALE), ref.values())) < 1e-6
    t_sk_y = best_time(lambda: [skimage_metrics(sr_np[i], hr_np[i], SCALE, rgb=False) for i in range(n)],
                       args.repeats)
    t_y = best_time(lambda: [ours_y_only(sr[i], hr[i], SCALE) for i in range(n)], args.repeats)
    t_sk = best_time(lambda: [skimage_metrics(sr_np[i], hr_np[i], SCALE) for i in range(n)], args.repeats)
    t_one = best_time(lambda: [evaluate_pair(sr[i], hr[i], SCALE) for i in range(n)], args.repeats)
    t_batch = best_time(lambda: evaluate_batch(sr, hr, SCALE), args.repeats)
    print(f"{n} pairs of {W}x{H}, x{SCALE} border; torch threads: {torch.get_num_threads()}")
    print("Y PSNR + Y SSIM (the protocol's numbers):")
    print(f"  scikit-image           {n / t_sk_y:8.1f} img/s")
    print(f"  eval.metrics           {n / t_y:8.1f} img/s   x{t_sk_y / t_y:.2f} vs scikit-image")
    print("All four columns (Y and RGB PSNR/SSIM):")
    print(f"  scikit-image           {n / t_sk:8.1f} img/s")
    print(f"  eval.metrics per image {n / t_one:8.1f} img/s   x{t_sk / t_one:.2f} vs scikit-image")
    print(f"  eval.metrics batched   {n / t_batch:8.1f} img/s   x{t_sk / t_batch:.2f} vs scikit-image")
    if torch.cuda.is_available():
        srg, hrg = sr.cuda(), hr.cuda()

        def gpu():
            out = evaluate_batch(srg, hrg, SCALE)
            torch.cuda.synchronize()
            return out

        t_gpu = best_time(gpu, args.repeats)
        ours = evaluate_batch(srg, hrg, SCALE)
        ref = skimage_metrics(sr_np[0], hr_np[0], SCALE)
        assert max(abs(ours[k][0].item() - ref[k]) for k in ref) < 1e-6
        print(f"  eval.metrics GPU batch {n / t_gpu:8.1f} img/s   x{t_sk / t_gpu:.2f} vs scikit-image "
              f"({torch.cuda.get_device_name()})")


if __name__ == "__main__":
    main()
