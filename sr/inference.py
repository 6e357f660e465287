"""Inference engine: tiled, device- and precision-aware upscaling with optional self-ensemble.

`upscale(model, image)` accepts a tensor, a PIL image or a numpy array and returns the
same kind. Tensors: (3, H, W) or (N, 3, H, W) float RGB in [0, 1] in, float32 out with
the same rank, on the input's device, *not* clamped (the raw model output, so evaluation
can apply its own quantisation). PIL images and numpy arrays come back clamped and
quantised in their own mode / dtype, with alpha, grayscale and 16-bit preserved.

Tiling: the LR image is cut into cores of at most `tile` pixels; each core is run with up
to `tile_overlap` pixels of real image context on every side (none past the image border,
so border pixels see exactly the zero padding they see in a whole-image pass) and the
context is cropped from the output. When the overlap covers the model's receptive field
the tiled result equals the whole-image result; models with global operations (RCAN's
channel attention) differ slightly between tiles.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
import weakref
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
from PIL import Image
from torch import nn

from sr import io as sr_io
from sr.errors import Cancelled, SRError
from sr.resize import imresize

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
ALPHA_MODES = ("bicubic", "model")

# Default context around each tile (LR pixels): the estimated receptive field, capped
# because deep residual nets have a nominal field of hundreds of pixels whose far part
# contributes far less than one grey level.
MAX_DEFAULT_OVERLAP = 32
RESAMPLE_MARGIN = 2  # bicubic resampling (Y-channel models' chroma) reads 2 LR pixels out
MIN_AUTO_TILE = 32
CPU_BUDGET_MB = 1024
CUDA_BUDGET_FRACTION = 0.5
_SAFETY = 1.25  # allocator slack and library workspaces on top of the activation estimate

@dataclass(frozen=True)
class Tile:
    """One tile in LR pixels: `core` is the part it writes, `src` the part it reads.

    Both are (y0, y1, x0, x1), end-exclusive; `src` contains `core`.
    """
    core: tuple[int, int, int, int]
    src: tuple[int, int, int, int]


def _split(n: int, tile: int) -> list[tuple[int, int]]:
    # Equal-ish parts, so no thin leftover tile at the end.
    k = max(1, math.ceil(n / tile))
    bounds = [round(i * n / k) for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def plan_tiles(h: int, w: int, tile: int, overlap: int) -> list[Tile]:
    """Cover an h x w LR image with cores of at most tile x tile, read with `overlap` context."""
    if h < 1 or w < 1 or tile < 1 or overlap < 0:
        raise SRError(f"cannot tile a {w}x{h} image with tile={tile}, overlap={overlap}; "
                      "use a positive tile size and a non-negative overlap")
    tiles = []
    for y0, y1 in _split(h, tile):
        for x0, x1 in _split(w, tile):
            src = (max(0, y0 - overlap), min(h, y1 + overlap),
                   max(0, x0 - overlap), min(w, x1 + overlap))
            tiles.append(Tile((y0, y1, x0, x1), src))
    return tiles


# --------------------------------------------------------------------- device, precision

def pick_device(device: str | torch.device | None = None) -> torch.device:
    """The given device, else CUDA when available, else the CPU."""
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as err:
            raise SRError(f"unknown device {device!r}; use 'cpu', 'cuda' or 'cuda:N'") from err
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise SRError("device 'cuda' was requested but no CUDA GPU is available; "
                          "use device='cpu'")
        return dev
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@lru_cache(maxsize=1)
def cpu_supports_bf16() -> bool:
    """True when the CPU computes bfloat16 natively (AVX512-BF16 or AMX), so bf16 is fast."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


@dataclass(frozen=True)
class _Mode:
    name: str                     # "fp32", "bf16" or "fp16"
    dtype: torch.dtype | None     # autocast dtype; None = plain fp32
    channels_last: bool


def _resolve_precision(precision: str, device: torch.device) -> _Mode:
    if precision not in PRECISIONS:
        raise SRError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if precision == "fp16" and device.type == "cpu":
        raise SRError("fp16 is not supported on the CPU (slow and inaccurate there); "
                      "use precision='auto', 'bf16' or 'fp32'")
    if precision == "fp32":
        return _Mode("fp32", None, False)
    if precision == "bf16":
        return _Mode("bf16", torch.bfloat16, True)
    if precision == "fp16":
        return _Mode("fp16", torch.float16, True)
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return _Mode("bf16", torch.bfloat16, True)
        return _Mode("fp16", torch.float16, True)
    if device.type == "cpu":
        if cpu_supports_bf16():
            return _Mode("bf16", torch.bfloat16, True)
        return _Mode("fp32", None, True)
    return _Mode("fp32", None, False)


@contextlib.contextmanager
def _numerics(mode: _Mode, device: torch.device):
    """Autocast for reduced precision; for fp32 on CUDA, switch TF32 off (exact fp32)."""
    if mode.dtype is not None:
        with torch.autocast(device_type=device.type, dtype=mode.dtype):
            yield
        return
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# ------------------------------------------------------------------ model footprint probe

@dataclass(frozen=True)
class _Footprint:
    receptive_field: int   # LR pixels each side (upper bound for chains and residual nets)
    bytes_per_pixel: int   # peak activation bytes per LR input pixel, per image


_FOOTPRINTS: "weakref.WeakKeyDictionary[nn.Module, _Footprint]" = weakref.WeakKeyDictionary()
_PROBE = 8


def _footprint(model: nn.Module, device: torch.device) -> _Footprint:
    """Measure the model once on a tiny input: conv radii and activation sizes per LR pixel."""
    cached = _FOOTPRINTS.get(model)
    if cached is not None:
        return cached
    radius = 0.0
    peak_pair = 0.0   # largest input + output of one layer, in elements per LR pixel
    widest_lr = 0.0   # widest feature map at LR resolution (residual carries stay alive)
    area = _PROBE * _PROBE

    def hook(module, inputs, output):
        nonlocal radius, peak_pair, widest_lr
        if not (inputs and torch.is_tensor(inputs[0]) and torch.is_tensor(output)):
            return
        x = inputs[0]
        if x.dim() != 4 or output.dim() != 4:
            return
        factor = x.shape[-2] / _PROBE
        peak_pair = max(peak_pair, (x.numel() + output.numel()) / area)
        if output.shape[-2] == _PROBE:
            widest_lr = max(widest_lr, output.numel() / area)
        if isinstance(module, nn.Conv2d) and factor > 0:
            k, d = module.kernel_size[0], module.dilation[0]
            radius += d * (k - 1) / 2 / factor
        elif isinstance(module, nn.ConvTranspose2d) and factor > 0:
            radius += (module.kernel_size[0] - 1) / 2 / module.stride[0] / factor

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.inference_mode():
            model(torch.full((1, 3, _PROBE, _PROBE), 0.5, device=device))
    finally:
        for h in handles:
            h.remove()
    scale = int(model.scale)
    floor = 2 * 3 + 2 * 3 * scale * scale  # input + output image for hook-less models
    elems = max(peak_pair + 2 * widest_lr, floor)
    fp = _Footprint(math.ceil(radius), int(elems * 4 * _SAFETY))
    _FOOTPRINTS[model] = fp
    return fp


def _default_budget_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * CUDA_BUDGET_FRACTION)
    budget = CPU_BUDGET_MB * 2**20
    try:
        avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        budget = min(budget, avail // 4)
    except (ValueError, OSError, AttributeError):
        pass
    return budget


def _auto_tile(fp: _Footprint, shape: torch.Size, overlap: int, budget_bytes: int) -> int:
    n, _, h, w = shape
    pixels = budget_bytes // max(1, fp.bytes_per_pixel * n)
    if h * w <= pixels:
        return max(h, w)  # one tile: no context to recompute
    return max(MIN_AUTO_TILE, math.isqrt(pixels) - 2 * overlap)


# --------------------------------------------------------------------------- the engine

def _flip_rot(x: torch.Tensor, k: int) -> torch.Tensor:
    if k & 4:
        x = x.transpose(-2, -1)
    if k & 1:
        x = x.flip(-1)
    if k & 2:
        x = x.flip(-2)
    return x


def _unflip_rot(x: torch.Tensor, k: int) -> torch.Tensor:
    if k & 2:
        x = x.flip(-2)
    if k & 1:
        x = x.flip(-1)
    if k & 4:
        x = x.transpose(-2, -1)
    return x


def _cancel_check(cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if hasattr(cancel, "is_set"):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise SRError("cancel must be a callable returning True to stop, or a threading.Event")


class _Engine:
    """Runs one model on tensors with a fixed device, precision, tiling and ensemble setting."""

    def __init__(self, model, device, mode, tile, overlap, ensemble, progress, cancel):
        self.model, self.device, self.mode = model, device, mode
        self.scale = int(model.scale)
        self.tile, self.overlap = tile, overlap
        self.passes = 8 if ensemble else 1
        self.progress, self.stop = progress, _cancel_check(cancel)
        self.done = 0
        self.total = 0
        self.tiles_per_pass = 0

    def count(self, h: int, w: int) -> int:
        """Tiles one `run` of an h x w input will process (all ensemble passes)."""
        return sum(len(plan_tiles(*((w, h) if k & 4 else (h, w)), self.tile, self.overlap))
                   for k in range(self.passes))

    def run(self, x: torch.Tensor) -> torch.Tensor:
        if self.passes == 1:
            return self._tiled(x)
        acc = None
        for k in range(self.passes):
            y = _unflip_rot(self._tiled(_flip_rot(x, k)), k)
            acc = y if acc is None else acc.add_(y)
        return acc.div_(self.passes)

    def _tiled(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = self.scale
        plan = plan_tiles(h, w, self.tile, self.overlap)
        self.tiles_per_pass = max(self.tiles_per_pass, len(plan))
        out = None
        for t in plan:
            if self.stop():
                raise Cancelled("upscaling was cancelled")
            sy0, sy1, sx0, sx1 = t.src
            cy0, cy1, cx0, cx1 = t.core
            y = self._forward(x[:, :, sy0:sy1, sx0:sx1])
            if len(plan) == 1:  # the whole image: no canvas
                out = y.to(x.device)
                if out.is_inference():  # callers may modify the result in place
                    out = out.clone()
            else:
                if out is None:
                    out = torch.empty((n, 3, h * s, w * s), dtype=torch.float32,
                                      device=x.device)
                out[:, :, cy0 * s:cy1 * s, cx0 * s:cx1 * s] = \
                    y[:, :, (cy0 - sy0) * s:(cy1 - sy0) * s, (cx0 - sx0) * s:(cx1 - sx0) * s]
            self.done += 1
            if self.progress is not None:
                self.progress(self.done, self.total)
        return out

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        layout = torch.channels_last if self.mode.channels_last else torch.contiguous_format
        x = x.to(self.device, torch.float32).contiguous(memory_format=layout)
        with torch.inference_mode(), _numerics(self.mode, self.device):
            y = self.model(x)
        expected = (x.shape[0], 3, x.shape[2] * self.scale, x.shape[3] * self.scale)
        if not torch.is_tensor(y) or tuple(y.shape) != expected:
            got = tuple(y.shape) if torch.is_tensor(y) else type(y).__name__
            raise SRError(f"model {getattr(self.model, 'arch', '?')} returned {got} for an "
                          f"input of {tuple(x.shape)}, expected {expected}; "
                          "check that its .scale matches its weights")
        return y.float()


def _check_model(model) -> int:
    if not isinstance(model, nn.Module):
        raise SRError(f"expected a torch model, got {type(model).__name__}; "
                      "create one with sr.models.create_model or sr.checkpoints.load_model")
    scale = getattr(model, "scale", None)
    if not isinstance(scale, int) or isinstance(scale, bool) or scale < 1:
        raise SRError(f"model has no valid integer .scale (got {scale!r}); "
                      "use a model from sr.models.create_model")
    return scale


def _move(model: nn.Module, device: torch.device) -> None:
    first = next(model.parameters(), None)
    if first is None:
        first = next(model.buffers(), None)
    if first is not None and first.device != device:
        model.to(device)


def _check_tensor(x: torch.Tensor) -> None:
    ok = (x.dim() in (3, 4) and x.shape[-3] == 3 and x.shape[-1] > 0 and x.shape[-2] > 0
          and x.is_floating_point() and (x.dim() == 3 or x.shape[0] > 0))
    if not ok:
        raise SRError(f"expected a float RGB tensor of shape (3, H, W) or (N, 3, H, W) "
                      f"in [0, 1], got {x.dtype} {tuple(x.shape)}")


@contextlib.contextmanager
def _eval_mode(model: nn.Module):
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def upscale_with_info(model, image, *, tile=None, tile_overlap=None, device=None,
                      precision="auto", ensemble=False, progress=None, cancel=None,
                      alpha="bicubic", memory_budget_mb=None):
    """Like `upscale`, and also return a run-info dict.

    Info keys: device, precision, channels_last, tile, overlap, tiles (per pass),
    passes, seconds, output_size ((width, height), like PIL's .size).
    """
    start = time.perf_counter()
    scale = _check_model(model)
    if alpha not in ALPHA_MODES:
        raise SRError(f"unknown alpha mode {alpha!r}; use one of {', '.join(ALPHA_MODES)}")
    dev = pick_device(device)
    mode = _resolve_precision(precision, dev)
    if tile is not None and (not isinstance(tile, int) or tile < 1):
        raise SRError(f"tile must be a positive number of pixels, got {tile!r}")
    if tile_overlap is not None and (not isinstance(tile_overlap, int) or tile_overlap < 0):
        raise SRError(f"tile_overlap must be a non-negative number of pixels, got {tile_overlap!r}")

    kind, planes, batch = _to_batch(image)
    _move(model, dev)
    # no_grad, not inference_mode, out here: results stay ordinary tensors that callers
    # may modify in place; the model itself runs under inference_mode.
    with _eval_mode(model), torch.no_grad():
        fp = None
        if tile_overlap is None or tile is None:
            fp = _footprint(model, dev)
        overlap = tile_overlap if tile_overlap is not None else \
            min(MAX_DEFAULT_OVERLAP, fp.receptive_field + RESAMPLE_MARGIN)
        if tile is None:
            budget = (int(memory_budget_mb * 2**20) if memory_budget_mb is not None
                      else _default_budget_bytes(dev))
            tile = _auto_tile(fp, batch.shape, overlap, budget)
        engine = _Engine(model, dev, mode, tile, overlap, ensemble, progress, cancel)
        jobs = _jobs(kind, planes, batch, alpha)
        engine.total = sum(engine.count(*b.shape[-2:]) for b, use_model in jobs if use_model)
        if progress is not None:
            progress(0, engine.total)
        results = [engine.run(b) if use_model else b for b, use_model in jobs]
        result = _from_batch(kind, planes, image, results, scale, alpha)
    h, w = batch.shape[-2] * scale, batch.shape[-1] * scale
    info = {"device": str(dev), "precision": mode.name, "channels_last": mode.channels_last,
            "tile": tile, "overlap": overlap, "tiles": engine.tiles_per_pass,
            "passes": engine.passes, "seconds": time.perf_counter() - start,
            "output_size": (w, h)}
    return result, info


def upscale(model, image, *, tile=None, tile_overlap=None, device=None, precision="auto",
            ensemble=False, progress=None, cancel=None, alpha="bicubic",
            memory_budget_mb=None):
    """Upscale `image` (tensor, PIL image or numpy array) by `model.scale`; same kind back.

    tile / tile_overlap: LR core size and context in pixels (default: from the memory
    budget and the model's receptive field). precision: "auto" (fastest for the device:
    bf16 autocast on CUDA and bf16-capable CPUs, channels_last on the CPU), "fp32" (exact,
    no TF32; what evaluation uses), "bf16", "fp16" (GPU only). ensemble: average the 8
    flips/rotations. progress(done, total) counts tiles over all passes; `cancel` (callable
    or threading.Event) is checked between tiles and raises sr.errors.Cancelled. alpha:
    "bicubic" or "model" for the alpha plane of RGBA images.
    """
    return upscale_with_info(model, image, tile=tile, tile_overlap=tile_overlap,
                             device=device, precision=precision, ensemble=ensemble,
                             progress=progress, cancel=cancel, alpha=alpha,
                             memory_budget_mb=memory_budget_mb)[0]


# ---------------------------------------------------------------- image kinds in and out

def _to_batch(image):
    """(kind, planes or None, (N, 3, H, W) float tensor) for tensor, PIL or numpy input."""
    if torch.is_tensor(image):
        _check_tensor(image)
        x = image if image.dim() == 4 else image.unsqueeze(0)
        return "tensor", None, x.float()
    if isinstance(image, np.ndarray):
        planes = sr_io.decompose(sr_io.from_numpy(_float_to_uint16(image)))
        return "numpy", planes, planes.rgb.unsqueeze(0)
    if isinstance(image, Image.Image):
        planes = sr_io.decompose(image)
        return "pil", planes, planes.rgb.unsqueeze(0)
    raise SRError(f"cannot upscale a {type(image).__name__}; pass a PIL image, a numpy "
                  "array or a float tensor of shape (3, H, W) or (N, 3, H, W)")


def _float_to_uint16(arr: np.ndarray) -> np.ndarray:
    # Float arrays travel as 16-bit so they are not cut to 8 bits on the way.
    if arr.dtype.kind != "f" or not np.isfinite(arr).all():
        return arr  # from_numpy gives the error for non-finite values
    return np.round(np.clip(arr, 0, 1) * 65535).astype(np.uint16)


def _numpy_like(out: np.ndarray, like: np.ndarray) -> np.ndarray:
    if like.ndim == 3 and like.shape[2] == 1:
        out = out[..., None]
    if like.dtype.kind == "f":
        return (out / np.float64(65535)).astype(like.dtype)
    if like.dtype == bool:
        return out >= (np.iinfo(out.dtype).max + 1) // 2
    return out.astype(like.dtype)


def _jobs(kind, planes, batch, alpha):
    """Tensors to run, as (tensor, through_model) pairs; images carry alpha separately."""
    if kind == "tensor" or planes.alpha is None:
        return [(batch, True)]
    colour = sr_io.premultiply(planes).unsqueeze(0)
    a = planes.alpha.unsqueeze(0)
    if alpha == "model":
        return [(colour, True), (a.expand(-1, 3, -1, -1), True)]
    return [(colour, True), (a, False)]


def _from_batch(kind, planes, image, results, scale, alpha):
    if kind == "tensor":
        y = results[0]
        return y if image.dim() == 4 else y[0]
    rgb = results[0][0].clamp_(0, 1)
    out_alpha = None
    if planes.alpha is not None:
        if alpha == "model":
            out_alpha = results[1][0].mean(0, keepdim=True)
        else:
            out_alpha = imresize(results[1], scale=scale)[0]
        out_alpha = out_alpha.clamp_(0, 1)
        rgb = sr_io.unpremultiply(rgb, out_alpha)
    out = sr_io.compose(dataclasses.replace(planes, rgb=rgb, alpha=out_alpha))
    if kind == "numpy":
        return _numpy_like(sr_io.to_numpy(out), image)
    return out
