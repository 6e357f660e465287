"""PSNR and SSIM exactly as SR papers compute them (docs/EVAL_PROTOCOL.md, steps 3-7).

Everything is vectorised torch on CPU or GPU and batched over images of equal size.
Y-channel numbers (``psnr_y``, ``ssim_y``) are the ones papers print; the RGB numbers
are extra columns and are never comparable with published tables.
"""
from __future__ import annotations

import contextlib
import warnings
from functools import lru_cache

import torch

from eval.cache import state_dict_sha256
from sr.color import Y_ROW as _Y_ROW
from sr.resize import modcrop

# Bump when anything that changes a metric value changes (the result cache keys on it).
PROTOCOL_VERSION = "1"

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_STRIP_BYTES = 1 << 21
_MIN_STRIP_ROWS = 64

METRIC_COLUMNS = ("psnr_y", "ssim_y", "psnr_rgb", "ssim_rgb")
LPIPS_MIN_SIZE = 32


class MetricUnavailable(RuntimeError):
    """An optional metric (LPIPS) cannot be computed here; str() says why."""


@contextlib.contextmanager
def _one_cpu_thread(x: torch.Tensor):
    """Run CPU metric code on one thread. It is a long series of small memory-bound
    operations: a second thread gains little, and when the cores are shared, OpenMP's
    spin-waiting at every operation's barrier made it 10-60x slower (measured)."""
    if x.is_cuda or torch.get_num_threads() == 1:
        yield
        return
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)


def quantize(x: torch.Tensor) -> torch.Tensor:
    """Float image in [0, 1] -> uint8: clamp, x255, round half away from zero (MATLAB)."""
    if x.dtype == torch.uint8:
        return x
    # float64 so that x*255 + 0.5 cannot round up across an integer in float32.
    return torch.floor(x.double().clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


def _as_rgb(x: torch.Tensor) -> torch.Tensor:
    """(N, 1 or 3, H, W) -> (N, 3, H, W); a grayscale plane is R = G = B."""
    if x.shape[-3] == 1:
        return x.expand(*x.shape[:-3], 3, *x.shape[-2:])
    if x.shape[-3] != 3:
        raise ValueError(f"expected 1 or 3 channels, got {x.shape[-3]}")
    return x


def y_channel(x: torch.Tensor) -> torch.Tensor:
    """uint8 RGB (or grayscale) (..., C, H, W) -> BT.601 Y in [16, 235], float64, unrounded."""
    if x.dtype != torch.uint8:
        raise TypeError("y_channel expects a uint8 image; quantize() the model output first")
    with _one_cpu_thread(x):
        return _y_from_rgb(_as_rgb(x).double())


def _y_from_rgb(rgb: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """float64 RGB in [0, 255] (..., 3, H, W) -> Y (..., 1, H, W), into ``out`` if given."""
    y = torch.mul(rgb[..., 0:1, :, :], _Y_ROW[0], out=out)
    y.add_(rgb[..., 1:2, :, :], alpha=_Y_ROW[1]).add_(rgb[..., 2:3, :, :], alpha=_Y_ROW[2])
    return y.div_(255.0).add_(16.0)


def _metric_planes(x: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1 or 3, H, W) -> float64 (4N, 1, H, W): N Y planes, then N x (R, G, B)."""
    n, _, h, w = x.shape
    planes = torch.empty(4 * n, 1, h, w, dtype=torch.float64, device=x.device)
    rgb = planes[n:].view(n, 3, h, w)
    rgb.copy_(_as_rgb(x))
    _y_from_rgb(rgb, out=planes[:n])
    return planes


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Per-image PSNR in dB over all but the first dim, float64: (N, ...) -> (N,)."""
    with _one_cpu_thread(a):
        mse = (a.double() - b.double()).flatten(1).square().mean(dim=1)
        return 10.0 * torch.log10(data_range ** 2 / mse)  # inf for identical images


@lru_cache(maxsize=1)
def _gaussian_taps() -> tuple[float, ...]:
    r = (SSIM_WINDOW - 1) // 2
    t = torch.arange(-r, r + 1, dtype=torch.float64)
    g = torch.exp(-(t * t) / (2 * SSIM_SIGMA ** 2))
    # The normalised 2-D window of MATLAB's fspecial is the outer product of this.
    return tuple((g / g.sum()).tolist())


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable 11x11 Gaussian, 'valid' region only: (..., H, W) -> (..., H-10, W-10).

    Shifted-slice multiply-adds: about 10x faster than a float64 conv2d on the CPU
    (which has no fast float64 kernel); the same code runs on a GPU.
    """
    taps = _gaussian_taps()
    for dim in (-1, -2):
        n = x.shape[dim] - len(taps) + 1
        out = x.narrow(dim, 0, n) * taps[0]
        for k in range(1, len(taps)):
            out.add_(x.narrow(dim, k, n), alpha=taps[k])
        x = out
    return x


def _ssim_sum(a: torch.Tensor, b: torch.Tensor, c1: float, c2: float) -> torch.Tensor:
    """Sum of the SSIM map over the valid region of (N, 1, h, W) planes -> (N,)."""
    # The map needs E[a^2] and E[b^2] only as a sum, so four filtered moments suffice
    # (the filter is linear); one pass filters them for all images.
    moments = torch.empty((4, *a.shape), dtype=a.dtype, device=a.device)
    moments[0].copy_(a)
    moments[1].copy_(b)
    torch.mul(a, a, out=moments[2]).addcmul_(b, b)
    torch.mul(a, b, out=moments[3])
    mu_a, mu_b, e_sq, e_ab = _filter_valid(moments).unbind(0)
    # In place from here on: these are temporaries, and fewer passes over memory count.
    mu_ab = mu_a * mu_b
    mu_sq = mu_a.square_().add_(mu_b.square_())
    num = (mu_ab * 2 + c1).mul_(e_ab.sub_(mu_ab).mul_(2).add_(c2))
    den = e_sq.sub_(mu_sq).add_(c2).mul_(mu_sq.add_(c1))
    return num.div_(den).flatten(1).sum(dim=1)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 255.0) -> torch.Tensor:
    """Wang et al. SSIM (MATLAB ssim_index) of planes (N, 1, H, W) -> (N,), float64.

    ``data_range`` scales the constants; the protocol's values are for 255.
    """
    if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 1:
        raise ValueError(f"ssim expects two (N, 1, H, W) planes, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs planes of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(a.shape[-2:])}")
    with _one_cpu_thread(a):
        return _ssim(a.double(), b.double(), data_range)


def _ssim(a: torch.Tensor, b: torch.Tensor, data_range: float) -> torch.Tensor:
    n, _, h, w = a.shape
    halo = SSIM_WINDOW - 1
    out_h, out_w = h - halo, w - halo
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    if a.is_cuda:
        return _ssim_sum(a, b, c1, c2) / (out_h * out_w)
    # On the CPU the filter is memory-bound: strips of rows whose moment maps stay in
    # the cache run several times faster than whole images.
    row_bytes = 4 * w * 8  # four float64 moment maps
    k = max(1, _STRIP_BYTES // (row_bytes * (_MIN_STRIP_ROWS + halo)))
    total = torch.empty(n, dtype=torch.float64)
    for i0 in range(0, n, k):
        i1 = min(n, i0 + k)
        rows = max(_MIN_STRIP_ROWS, _STRIP_BYTES // (row_bytes * (i1 - i0)) - halo)
        acc = torch.zeros(i1 - i0, dtype=torch.float64)
        for y0 in range(0, out_h, rows):
            y1 = min(out_h, y0 + rows)
            acc += _ssim_sum(a[i0:i1, :, y0:y1 + halo], b[i0:i1, :, y0:y1 + halo], c1, c2)
        total[i0:i1] = acc
    return total / (out_h * out_w)


def _batched(x: torch.Tensor) -> torch.Tensor:
    if x.dim() == 3:
        return x.unsqueeze(0)
    if x.dim() != 4:
        raise ValueError(f"expected an image (C, H, W) or batch (N, C, H, W), got shape {tuple(x.shape)}")
    return x


def _prepare(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise SR, modcrop both, check sizes, crop `scale` border pixels from both."""
    sr, hr = _batched(quantize(sr)), _batched(hr)
    if hr.dtype != torch.uint8:
        raise TypeError("the HR reference must be uint8")
    sr, hr = modcrop(sr, scale), modcrop(hr, scale)
    if sr.shape[-2:] != hr.shape[-2:]:
        raise ValueError(f"SR output is {tuple(sr.shape[-2:])} but the modcropped HR is "
                         f"{tuple(hr.shape[-2:])}")
    if sr.shape[0] != hr.shape[0]:
        raise ValueError(f"batch sizes differ: {sr.shape[0]} SR vs {hr.shape[0]} HR")
    h, w = hr.shape[-2:]
    c = scale
    return sr[..., c:h - c, c:w - c], hr[..., c:h - c, c:w - c].to(sr.device)


def evaluate_batch(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, torch.Tensor]:
    """Protocol metrics of a batch: each value a float64 tensor (N,).

    ``sr``: model output, float in [0, 1] or uint8, (N, C, H, W); ``hr``: uint8 reference.
    Both are modcropped to multiples of ``scale`` and must then have the same size.
    Grayscale (C = 1) is treated as R = G = B.
    """
    sr, hr = _batched(sr), _batched(hr)
    if not sr.is_cuda and sr.shape[0] > 1 and sr.shape[0] == hr.shape[0]:
        # Image by image on the CPU: each one's planes stay in the cache.
        singles = [evaluate_batch(s, h, scale) for s, h in zip(sr, hr)]
        return {k: torch.cat([d[k] for d in singles]) for k in singles[0]}
    with _one_cpu_thread(sr):
        sr8, hr8 = _prepare(sr, hr, scale)
        n = sr8.shape[0]
        # Y then R, G, B planes in one float64 tensor, so one SSIM pass covers them all.
        p_sr, p_hr = _metric_planes(sr8), _metric_planes(hr8)
        s = ssim(p_sr, p_hr)
        rgb = lambda p: p[n:].view(n, 3, *p.shape[-2:])  # noqa: E731
        return {
            "psnr_y": psnr(p_sr[:n], p_hr[:n]),
            "ssim_y": s[:n],
            "psnr_rgb": psnr(rgb(p_sr), rgb(p_hr)),
            "ssim_rgb": s[n:].view(n, 3).mean(dim=1),
        }


def evaluate_pair(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> dict[str, float]:
    """Protocol metrics of one image: {psnr_y, ssim_y, psnr_rgb, ssim_rgb} as floats.

    ``sr`` float in [0, 1] or uint8, (C, H, W) or (1, C, H, W); ``hr`` uint8.
    """
    if _batched(sr).shape[0] != 1:
        raise ValueError("evaluate_pair takes one image; use evaluate_batch for a batch")
    return {k: float(v[0]) for k, v in evaluate_batch(sr, hr, scale).items()}


_LAPLACIAN = ((0.0, 1.0, 0.0), (1.0, -4.0, 1.0), (0.0, 1.0, 0.0))


def detail_ratio(sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
    """High-frequency energy of SR relative to HR, (N,) float64: 1 = as much fine detail
    as the reference, below 1 = smoother, above 1 = more (real or false) texture.

    Mean absolute 3x3 Laplacian of the Y plane, on the same quantised, modcropped,
    border-cropped images as PSNR. Not a paper metric: it puts a number on "sharper" in
    the crops figure, where PSNR and LPIPS say "closer" instead. It cannot tell restored
    detail from invented detail (a GAN's grain counts too), so read it with PSNR/LPIPS.
    """
    with _one_cpu_thread(sr):
        sr8, hr8 = _prepare(sr, hr, scale)
        n = sr8.shape[0]
        y = y_channel(torch.cat([sr8, hr8]))  # SR planes, then HR planes
        kernel = torch.tensor(_LAPLACIAN, dtype=y.dtype, device=y.device).view(1, 1, 3, 3)
        energy = torch.nn.functional.conv2d(y, kernel).abs().mean(dim=(1, 2, 3))
        return energy[:n] / energy[n:].clamp_min(1e-12)


class Lpips:
    """LPIPS v0.1 (AlexNet) on the border-cropped RGB images. Raises MetricUnavailable with
    the reason when the `lpips` package or the ImageNet AlexNet weights are missing.

    backbone: None finds the weights (``eval.lpips_weights.load_backbone``: the converted
    file, else torchvision's cached download; never a download here); a path to a
    converted file; or "random" for an untrained AlexNet, which tests use and which
    gives meaningless distances.
    """

    def __init__(self, device: torch.device | str = "cpu", backbone: str | None = None):
        try:
            import lpips  # the field's implementation; only its heads ship with it
        except ImportError as e:
            raise MetricUnavailable("LPIPS unavailable: the `lpips` package is not installed "
                                    "(pip install lpips)") from e
        from eval.lpips_weights import LpipsWeightsError, load_backbone

        with warnings.catch_warnings():  # lpips still asks torchvision for `pretrained=False`
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            net = lpips.LPIPS(net="alex", pnet_rand=True, verbose=False)  # heads loaded, backbone untrained
        if backbone != "random":
            try:
                features = load_backbone(backbone)
            except LpipsWeightsError as e:
                raise MetricUnavailable(f"LPIPS unavailable: {e}") from e
            # lpips keeps torchvision's layer indices inside its slices: net.sliceK.N.* = features.N.*
            mapped = {k: features.get("features." + k.split(".", 1)[1]) for k in net.net.state_dict()}
            missing = [k for k, v in mapped.items() if v is None]
            if missing:
                raise MetricUnavailable(f"LPIPS unavailable: the AlexNet weights lack {missing[0]}")
            net.net.load_state_dict(mapped)
        self.backbone_id = "alexnet:" + state_dict_sha256(net.net)  # the result cache keys on it
        self.net = net.to(device).eval()
        self.device = torch.device(device)

    @torch.no_grad()
    def __call__(self, sr: torch.Tensor, hr: torch.Tensor, scale: int) -> torch.Tensor:
        sr8, hr8 = _prepare(sr, hr, scale)
        if min(hr8.shape[-2:]) < LPIPS_MIN_SIZE:  # AlexNet's strides leave nothing to compare
            raise ValueError(f"LPIPS needs at least {LPIPS_MIN_SIZE}x{LPIPS_MIN_SIZE} pixels after the "
                             f"border crop; this image has {hr8.shape[-2]}x{hr8.shape[-1]}")
        to_net = lambda x: _as_rgb(x).to(self.device).float() / 127.5 - 1.0  # noqa: E731
        return self.net(to_net(sr8), to_net(hr8)).flatten().double().cpu()

