"""Export a model to TorchScript or ONNX with dynamic batch, height and width.

Both formats are produced by tracing, which records tensor shapes symbolically but
turns every shape computed in Python into a constant. The MATLAB bicubic of
``sr.resize`` (used by the bicubic baseline and by the chroma / pre-upsampling path of
the Y-channel models) plans its taps in Python from the image size, so while tracing
it is swapped for an equivalent shape-agnostic upsampler (symmetric padding, one
polyphase convolution, pixel shuffle) built from the same weights. Every export is
checked against the eager model at two sizes other than the traced one; a model that
does not generalise is refused instead of written.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sr import resize
from sr.errors import SRError

FORMATS = ("torchscript", "onnx")
SUFFIXES = {"torchscript": ".pt", "onnx": ".onnx"}
ONNX_OPSET = 17
TRACE_SIZE = (24, 20)  # H, W; not square, so swapped axes cannot pass the check
CHECK_SIZES = ((17, 29), (32, 36))
CHECK_TOLERANCE = 1e-4


class ExportError(SRError):
    """The model cannot be exported in the requested format."""


def export_model(model: nn.Module, path: str | os.PathLike, fmt: str) -> Path:
    """Write ``model`` as ``fmt`` ("torchscript" or "onnx") to ``path``, atomically.

    Input ``input`` (N, 3, H, W) float32 RGB in [0, 1], output ``output``
    (N, 3, sH, sW); N, H and W are dynamic. The result is verified against the eager
    model at two other sizes (ONNX only when onnxruntime is installed).
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")
    path = Path(path)
    model = copy.deepcopy(model).to("cpu", torch.float32).eval()
    example = torch.rand(1, 3, *TRACE_SIZE, generator=torch.Generator().manual_seed(0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with warnings.catch_warnings():
            # Tracer warnings about Python values are expected (the size check below
            # catches the cases where they matter), and so are torch's deprecation
            # notices for TorchScript and the TorchScript-based ONNX exporter.
            warnings.simplefilter("ignore")
            with torch.no_grad(), _traceable_bicubic(model.scale):
                if fmt == "torchscript":
                    _export_torchscript(model, example, tmp)
                else:
                    _export_onnx(model, example, tmp)
            run = _runner(fmt, tmp)
            if run is not None:
                _check(model, run, fmt)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _describe(model: nn.Module) -> str:
    return f"{getattr(model, 'arch', type(model).__name__)} x{getattr(model, 'scale', '?')}"


def _export_torchscript(model: nn.Module, example: torch.Tensor, tmp: str) -> None:
    try:
        traced = torch.jit.trace(model, example, check_trace=False)
    except Exception as e:
        raise ExportError(f"cannot trace {_describe(model)} for TorchScript: {_one_line(e)}") from None
    meta = {"arch": getattr(model, "arch", None), "scale": getattr(model, "scale", None),
            "hparams": getattr(model, "hparams", {})}
    torch.jit.save(traced, tmp, _extra_files={"srwb.json": json.dumps(meta)})


def _export_onnx(model: nn.Module, example: torch.Tensor, tmp: str) -> None:
    dims = {0: "batch", 2: "height", 3: "width"}
    out_dims = {0: "batch", 2: "out_height", 3: "out_width"}
    try:
        # The TorchScript-based exporter: the dynamo one needs onnxscript, which is
        # not among the project's dependencies.
        torch.onnx.export(model, (example,), tmp, input_names=["input"], output_names=["output"],
                          dynamic_axes={"input": dims, "output": out_dims},
                          opset_version=ONNX_OPSET, dynamo=False)
    except Exception as e:
        raise ExportError(f"cannot export {_describe(model)} to ONNX: {_one_line(e)}") from None


def _runner(fmt: str, path: str):
    """A function running the exported file, or None when no runtime is installed."""
    if fmt == "torchscript":
        loaded = torch.jit.load(path, map_location="cpu")
        return lambda x: loaded(x)
    try:
        import onnxruntime
    except ImportError:
        return None
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"input": x.numpy()})[0])


def _check(model: nn.Module, run, fmt: str) -> None:
    gen = torch.Generator().manual_seed(1)
    for h, w in CHECK_SIZES:
        x = torch.rand(1, 3, h, w, generator=gen)
        with torch.no_grad():
            want = model(x)
            try:
                got = run(x)
            except Exception as e:
                raise ExportError(f"{_describe(model)} exported to {fmt} fails on a {w}x{h} input "
                                  f"(its size is not dynamic): {_one_line(e)}") from None
        if got.shape != want.shape:
            raise ExportError(f"{_describe(model)} exported to {fmt} gives shape {tuple(got.shape)} "
                              f"for a {w}x{h} input instead of {tuple(want.shape)} (its size is not dynamic)")
        err = (got - want).abs().max().item()
        if not err <= CHECK_TOLERANCE:
            raise ExportError(f"{_describe(model)} exported to {fmt} differs from the original by {err:.2g} "
                              f"on a {w}x{h} input (its size is not dynamic)")


def _one_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return f"{type(e).__name__}: {lines[0][:200] if lines else ''}"


# ------------------------------------------------------------ shape-agnostic bicubic

@functools.lru_cache(maxsize=None)
def _bicubic_kernel(scale: int) -> tuple[torch.Tensor, int, int]:
    """MATLAB bicubic x``scale`` as one 2-D polyphase filter bank.

    Returns (kernel (scale**2, 1, k, k), left, right): output pixel
    (``scale*i + r``, ``scale*j + c``) is filter ``r*scale + c`` applied to input rows
    ``i - left .. i + right`` and the same columns of the symmetrically padded image.
    The 1-D taps are ``sr.resize``'s own weights at an interior position, where they
    no longer depend on the image size; the 2-D filter is their outer product
    because the resize is separable. Cached, so tracing records it as a constant.
    """
    n, i0 = 16, 8
    weights, raw_first, _ = resize._contributions(n, n * scale, float(scale), True)
    rows = range(scale * i0, scale * i0 + scale)
    offsets = [int(raw_first[o]) - i0 for o in rows]
    taps = weights.shape[1]
    left, right = -min(offsets), max(offsets) + taps - 1
    phases = torch.zeros(scale, left + right + 1, dtype=torch.float64)
    for r, o in enumerate(rows):
        phases[r, offsets[r] + left: offsets[r] + left + taps] = weights[o]
    span = left + right + 1
    kernel = torch.einsum("ri,cj->rcij", phases, phases).reshape(scale * scale, 1, span, span)
    return kernel.float(), left, right


def _symmetric_pad(x: torch.Tensor, dim: int, left: int, right: int) -> torch.Tensor:
    """Mirror padding that repeats the edge sample (MATLAB's 'symmetric')."""
    parts = [x]
    if left:
        parts.insert(0, x.narrow(dim, 0, left).flip(dim))
    if right:
        parts.append(x.narrow(dim, x.shape[dim] - right, right).flip(dim))
    return torch.cat(parts, dim)


def bicubic_upscale(x: torch.Tensor, scale: int) -> torch.Tensor:
    """``sr.resize.imresize(x, scale=scale)`` for an integer ``scale`` on a float
    (N, C, H, W) tensor, written with ops whose shapes tracing keeps dynamic.

    One grouped convolution with scale**2 outputs per channel and a pixel shuffle do
    both passes. H and W must be at least the padding (2 pixels).
    """
    kernel, left, right = _bicubic_kernel(scale)
    channels = int(x.shape[1])  # a constant in traces: ONNX needs a static kernel shape
    kernel = kernel.to(x.device, x.dtype).repeat(channels, 1, 1, 1)
    x = _symmetric_pad(_symmetric_pad(x, -2, left, right), -1, left, right)
    return F.pixel_shuffle(F.conv2d(x, kernel, groups=channels), scale)


def _tracing_imresize(x, scale=None, size=None, antialias=True):
    if size is None and scale is not None and float(scale).is_integer() and scale >= 1 \
            and x.is_floating_point() and x.dim() == 4:
        return bicubic_upscale(x, int(scale))
    return resize.imresize(x, scale=scale, size=size, antialias=antialias)


@contextlib.contextmanager
def _traceable_bicubic(scale: int):
    """Point the model modules' ``imresize`` at the shape-agnostic version while tracing."""
    _bicubic_kernel(scale)  # computed now, so the trace holds it as a constant
    patched = [m for name, m in list(sys.modules.items())
               if name.startswith("sr.models") and getattr(m, "imresize", None) is resize.imresize]
    for m in patched:
        m.imresize = _tracing_imresize
    try:
        yield
    finally:
        for m in patched:
            m.imresize = resize.imresize
