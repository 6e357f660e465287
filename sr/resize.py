"""MATLAB-exact bicubic ``imresize`` in vectorised torch (CPU and GPU, batched).

SR papers make their LR images with MATLAB ``imresize(HR, 1/s, 'bicubic')`` and
measure bicubic upsampling with ``imresize(LR, s, 'bicubic')``; any other resize
shifts PSNR by 0.1-1.5 dB. This port follows MATLAB step by step:

* Keys cubic kernel (a = -0.5), widened by 1/scale when shrinking (antialiasing);
* output sample x (1-based) sits at input coordinate ``x/scale + 0.5*(1 - 1/scale)``;
* symmetric (edge-repeating) border handling;
* one dimension at a time, rows first; a uint8 input is rounded back to uint8
  (half away from zero, saturating) after each pass, exactly as MATLAB does.

Speed: for the scale factors SR uses (x2, x3, x4, 1/2, 1/3, 1/4, and any rational
scale with a small period), the per-output weights repeat with a short period, so a
pass is a batch of small matmuls of one block matrix over overlapping windows of the
input (BLAS, float32). Large images go plane by plane, the column pass in strips of
rows that stay in the cache, with buffers reused across planes and strips (page-faulting
fresh buffers in cost more than the arithmetic); small planes (training crops, tiles)
take one dense matmul per pass for the whole batch. Other scales fall back to a gather
per tap.

uint8 exactness: with weights that are multiples of 2**-14 (x2, x4, 1/2, 1/4) every
float32 partial sum is exact; with weights that are multiples of 1/D for a small odd D
(x3, 1/3) no sum can come near a rounding tie. Otherwise values within float32 error of
a tie are recomputed in float64 in MATLAB's summation order. Either way the rounding
matches MATLAB bit for bit (tested against every Set5/Set14 LR image).
"""
from __future__ import annotations

import math
from functools import lru_cache

import torch

# float32 error of one pass is below 1e-4 grey levels (measured 5e-5 at x3);
# anything within this of a rounding tie is recomputed in float64.
_TIE_TOLERANCE = 1e-3
_MAX_PERIOD = 32
_BLOCK_OUTPUTS = 16
# Passes over at most this many input samples run as one dense matmul for all planes.
_DENSE_MAX_LEN = 128
# Column passes run over strips of about this many output samples (a few MB of float32).
_STRIP_ELEMENTS = 1 << 19


def _cubic(x: torch.Tensor) -> torch.Tensor:
    absx = x.abs()
    absx2 = absx * absx
    absx3 = absx2 * absx
    inner = (1.5 * absx3 - 2.5 * absx2 + 1) * (absx <= 1)
    outer = (-0.5 * absx3 + 2.5 * absx2 - 4 * absx + 2) * ((absx > 1) & (absx <= 2))
    return inner + outer


@lru_cache(maxsize=256)
def _contributions(in_len: int, out_len: int, scale: float, antialias: bool = True):
    """MATLAB's ``contributions``: float64 weights (out, P) and 0-based indices.

    Returns (weights, raw_first, mirrored) where ``raw_first[i]`` is the unmirrored
    index of tap 0 for output i and ``mirrored`` the symmetric-border indices.
    """
    kernel_width = 4.0
    shrink = scale < 1 and antialias
    if shrink:
        kernel_width = kernel_width / scale
    x = torch.arange(1, out_len + 1, dtype=torch.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = torch.floor(u - kernel_width / 2)
    taps = math.ceil(kernel_width) + 2
    indices = left[:, None] + torch.arange(taps, dtype=torch.float64)[None, :]
    dist = u[:, None] - indices
    weights = scale * _cubic(scale * dist) if shrink else _cubic(dist)
    total = weights[:, 0].clone()
    for k in range(1, taps):  # sequential, as MATLAB sums a short row
        total = total + weights[:, k]
    weights = weights / total[:, None]
    raw = indices.long() - 1  # 0-based
    period = 2 * in_len
    aux = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    mirrored = aux[torch.remainder(raw, period)]
    # MATLAB drops taps that are zero for every output; they add exact zeros, so
    # dropping them changes no sum, but it keeps the exact path short.
    keep = weights.ne(0).any(dim=0)
    first = int(keep.nonzero()[0])
    last = int(keep.nonzero()[-1])
    weights = weights[:, first:last + 1].contiguous()
    mirrored = mirrored[:, first:last + 1].contiguous()
    raw_first = raw[:, first].contiguous()
    return weights, raw_first, mirrored


@lru_cache(maxsize=256)
def _float32_rounds_exactly(in_len: int, out_len: int, scale: float, antialias: bool) -> bool:
    """True when rounding the float32 pass of a uint8 plane always gives MATLAB's value,
    so no tie check is needed. Two cases:

    * every weight is a multiple of 2**-14 (x2, x4, 1/2, 1/4): each product with a uint8
      sample and every partial sum is exact in float32, equal to MATLAB's float64 sum;
    * every weight is a multiple of 1/D for an odd D < 500 (x3 upscaling: D = 27): a
      uint8 sum is m/D, at least 1/(2D) > _TIE_TOLERANCE from any rounding tie.
    """
    weights = _contributions(in_len, out_len, scale, antialias)[0]
    dyadic = weights * 2.0 ** 14
    if torch.equal(dyadic, dyadic.round()):
        return True
    for d in range(3, 500, 2):
        scaled = weights * d
        if bool(((scaled - scaled.round()).abs() < 1e-9).all()):
            return 1 / (2 * d) > _TIE_TOLERANCE
    return False


@lru_cache(maxsize=256)
def _polyphase(in_len: int, out_len: int, scale: float, antialias: bool = True):
    """Find (period p, stride d) such that output i + p uses the weights of output i
    shifted by d input samples. Returns None when there is no short period."""
    weights, raw_first, _ = _contributions(in_len, out_len, scale, antialias)
    for p in range(1, min(_MAX_PERIOD, out_len - 1) + 1):
        shifts = raw_first[p:] - raw_first[:-p]
        # Rows of one phase differ by float64 rounding of u at most; that is far
        # below float32 precision, and ties are recomputed from the exact rows.
        if (torch.allclose(weights[p:], weights[:-p], rtol=0, atol=1e-12) and bool((shifts == shifts[0]).all())
                and int(shifts[0]) >= 1):
            return p, int(shifts[0])
    return None


def _output_length(in_len: int, scale: float) -> int:
    return int(math.ceil(in_len * scale))


@lru_cache(maxsize=64)
def _block_matrix(in_len: int, out_len: int, scale: float, antialias: bool,
                  dtype: torch.dtype, device: torch.device):
    """The polyphase block matrix of a pass and its layout.

    `group` periods of outputs form one dense (outputs x rows_in) matrix shared by all
    blocks, so a pass is a batch of small matmuls over overlapping windows of the
    input (views, no copies): cache-friendly and on the BLAS kernels. Returns
    (block, input step between blocks, rows_in, number of blocks, raw input index
    read first by block 0)."""
    weights, raw_first, _ = _contributions(in_len, out_len, scale, antialias)
    period, stride = _polyphase(in_len, out_len, scale, antialias)
    taps = weights.shape[1]
    # Phase r starts reading at raw_first[r]; fold that offset into the block matrix.
    offsets = [int(raw_first[r]) - int(raw_first[0]) for r in range(period)]
    group = max(1, _BLOCK_OUTPUTS // period)
    rows_in = (group - 1) * stride + max(offsets) + taps
    blocks = math.ceil(out_len / (group * period))
    block = torch.zeros(group * period, rows_in, dtype=torch.float64)
    for g in range(group):
        for r in range(period):
            o = g * stride + offsets[r]
            block[g * period + r, o:o + taps] = weights[r]
    return (block.to(device=device, dtype=dtype), group * stride, rows_in, blocks,
            int(raw_first[0]))


def _pass(x: torch.Tensor, dim: int, in_len: int, out_len: int, scale: float,
          antialias: bool, buffers: dict | None = None) -> torch.Tensor:
    """One resize pass of a 2-D float plane along ``dim`` (0: rows, 1: columns).

    Returns (rows_out, other) for dim 0 and (blocks, other, outputs per block) for
    dim 1, with possibly a few extra outputs past ``out_len`` (see ``_store``). The
    result lives in ``buffers`` (keyed by shape) when given, so that later planes and
    strips reuse it."""
    if _polyphase(in_len, out_len, scale, antialias) is None:
        weights, _, mirrored = _contributions(in_len, out_len, scale, antialias)
        out = _pass_taps(x, dim, weights.to(x.dtype), mirrored)
        return out if dim == 0 else out[None]
    block, step, rows_in, blocks, first = _block_matrix(in_len, out_len, scale, antialias,
                                                        x.dtype, x.device)
    other = x.shape[1 - dim]
    # Blocks first in both directions, so every matmul writes a contiguous slice. For
    # rows that is already the (rows_out, other) plane; for columns the caller reads
    # (blocks, other, outputs) through a transposed view instead of copying it.
    per = block.shape[0]
    shape = (blocks, *((per, other) if dim == 0 else (other, per)))
    if buffers is None:
        out = x.new_empty(shape)
    else:
        # Large fresh allocations are page-faulted in on every call, which costs more
        # than the matmuls themselves: reuse one buffer per shape.
        out = buffers.get((dim, shape))
        if out is None:
            out = buffers[(dim, shape)] = x.new_empty(shape)

    def run(src: torch.Tensor, lo: int, count: int) -> None:
        """Blocks lo..lo+count, with src index 0 at the first input block lo reads."""
        if dim == 0:
            win = src.unfold(0, rows_in, step)[:count].transpose(1, 2)  # (n, L, R)
            torch.matmul(block, win, out=out[lo:lo + count])
        else:
            win = src.unfold(1, rows_in, step)[:, :count].transpose(0, 1)  # (n, R, L)
            torch.matmul(win, block.T, out=out[lo:lo + count])

    def padded(lo: int, count: int) -> torch.Tensor:
        idx = torch.arange(first + lo * step, first + (lo + count - 1) * step + rows_in)
        return x.index_select(dim, _mirror(idx, in_len).to(x.device))

    # Interior blocks read the input in place; only the few blocks that cross a border
    # get a gathered, symmetrically padded copy.
    lo = 0
    while lo < blocks and first + lo * step < 0:
        lo += 1
    hi = blocks
    while hi > lo and first + (hi - 1) * step + rows_in > in_len:
        hi -= 1
    if lo > 0:
        run(padded(0, lo), 0, lo)
    if hi > lo:
        run(x.narrow(dim, first + lo * step, (hi - lo - 1) * step + rows_in), lo, hi - lo)
    if blocks > hi:
        run(padded(hi, blocks - hi), hi, blocks - hi)
    return out.view(-1, other) if dim == 0 else out


def _store(buf: torch.Tensor, dim: int, out_len: int, dst: torch.Tensor) -> None:
    """Copy (and cast) a pass result into the plane ``dst``: ``buf`` is (rows, other)
    for dim 0 and (blocks, other, outputs per block) for dim 1."""
    if dim == 0:
        dst.copy_(buf[:out_len])
        return
    per = buf.shape[2]
    full, rest = divmod(out_len, per)
    if full:
        dst[:, :full * per].view(dst.shape[0], full, per).copy_(buf[:full].transpose(0, 1))
    if rest:
        dst[:, full * per:].copy_(buf[full, :, :rest])


def _plane_positions(buf: torch.Tensor, dim: int, idx: tuple[torch.Tensor, ...]):
    """(row, column) in the output plane of elements ``idx`` of a pass buffer."""
    if dim == 0:
        return idx
    blk, i, k = idx
    return i, blk * buf.shape[2] + k


@lru_cache(maxsize=64)
def _dense(in_len: int, out_len: int, scale: float, antialias: bool) -> torch.Tensor:
    """The whole pass as one (out_len, in_len) float64 matrix, mirrored taps folded in."""
    weights, _, mirrored = _contributions(in_len, out_len, scale, antialias)
    m = torch.zeros(out_len, in_len, dtype=torch.float64)
    return m.scatter_add_(1, mirrored, weights)


def _mirror(rows: torch.Tensor, in_len: int) -> torch.Tensor:
    """MATLAB's symmetric border: index -1 reads 0, index in_len reads in_len - 1."""
    aux = torch.cat([torch.arange(in_len), torch.arange(in_len - 1, -1, -1)])
    return aux[torch.remainder(rows, 2 * in_len)]


def _pass_taps(x: torch.Tensor, dim: int, weights: torch.Tensor,
               mirrored: torch.Tensor) -> torch.Tensor:
    """Generic pass for scales without a short period: one gather per tap."""
    weights = weights.to(x.device)
    mirrored = mirrored.to(x.device)
    out = None
    for k in range(weights.shape[1]):
        w = weights[:, k, None] if dim == 0 else weights[None, :, k]
        term = x.index_select(dim, mirrored[:, k]) * w
        out = term if out is None else out + term
    return out


def _round(y: torch.Tensor, plane: torch.Tensor, dim: int, in_len: int, out_len: int,
           scale: float, antialias: bool, positions, keep_float: bool) -> torch.Tensor:
    """Round a float32 pass result to MATLAB's uint8 values (as floats in [0, 255]), in
    place where possible, and return it.

    ``plane`` holds the pass input (integer-valued floats, (..., H, W)); ``positions``
    maps indices of ``y`` to (..., row, column) of the pass output. With ``keep_float`` False
    the floor is left to the truncating cast to uint8 that follows.
    """
    # Half away from zero: floor(y + 0.5) for y >= 0 (anything below clamps to 0).
    y.add_(0.5)
    if _float32_rounds_exactly(in_len, out_len, scale, antialias):
        return y.floor_().clamp_(0, 255) if keep_float else y.clamp_(0, 255)
    rounded = torch.floor(y)
    near = y.sub_(rounded).sub_(0.5).abs_() > 0.5 - _TIE_TOLERANCE
    if bool(near.any()):
        idx = near.nonzero(as_tuple=True)
        *lead, i, j = positions(idx)  # lead: the plane index of a batch, if any
        valid = (i if dim == 0 else j) < out_len  # blocks may run past the last output
        idx, lead = tuple(t[valid] for t in idx), [t[valid] for t in lead]
        i, j = i[valid], j[valid]
        weights, _, mirrored = _contributions(in_len, out_len, scale, antialias)
        weights = weights.to(plane.device)
        mirrored = mirrored.to(plane.device)
        pos = i if dim == 0 else j
        acc = torch.zeros(pos.shape[0], dtype=torch.float64, device=plane.device)
        for k in range(weights.shape[1]):  # MATLAB's order, in float64
            tap = mirrored[pos, k]
            vals = plane[(*lead, tap, j)] if dim == 0 else plane[(*lead, i, tap)]
            acc = acc + weights[pos, k] * vals.to(torch.float64)
        rounded[idx] = torch.floor(acc + 0.5).to(rounded.dtype)
    return rounded.clamp_(0, 255)


def _resize_planes(x: torch.Tensor, out: torch.Tensor, passes, work_dtype: torch.dtype,
                   antialias: bool) -> None:
    """Resize planes ``x`` (B, H, W) into ``out`` (B, H', W', any dtype), computing in
    ``work_dtype``; uint8 planes are carried as integer-valued floats between passes."""
    is_u8 = x.dtype == torch.uint8
    if max(p[1] for p in passes) <= _DENSE_MAX_LEN:
        # Small planes (training crops, tiles): one batched matmul per pass for all of
        # them; the zero taps cost less than a Python loop over the planes would.
        y = x.to(work_dtype)
        for n, (dim, in_len, out_len, s) in enumerate(passes):
            m = _dense(in_len, out_len, s, antialias).to(device=x.device, dtype=work_dtype)
            src, y = y, (torch.matmul(m, y) if dim == 0 else torch.matmul(y, m.T))
            if is_u8:
                y = _round(y, src, dim, in_len, out_len, s, antialias,
                           lambda idx: idx, keep_float=True)
        out.copy_(y)
        return
    buffers: dict = {}
    for b in range(x.shape[0]):
        if x.dtype == work_dtype:
            y = x[b]
        else:  # one plane at a time into a reused buffer: cheaper than all at once
            y = buffers.get("input")
            if y is None:
                y = buffers["input"] = torch.empty(x.shape[1:], dtype=work_dtype, device=x.device)
            y.copy_(x[b])
        for n, (dim, in_len, out_len, s) in enumerate(passes):
            last = n == len(passes) - 1
            # The column pass runs in strips of rows, so its float result stays in
            # cache until it is rounded and stored (rows are independent in it).
            strip = max(1, _STRIP_ELEMENTS // out_len) if dim == 1 else y.shape[0]
            for r0 in range(0, y.shape[0], strip):
                src = y[r0:r0 + strip]
                buf = _pass(src, dim, in_len, out_len, s, antialias, buffers)
                if is_u8:
                    buf = _round(buf, src, dim, in_len, out_len, s, antialias,
                                 lambda idx, buf=buf, dim=dim: _plane_positions(buf, dim, idx),
                                 keep_float=not last)
                if last:
                    _store(buf, dim, out_len, out[b, r0:r0 + strip])
                else:
                    y = buf[:out_len]  # rows first: the (rows, columns) plane itself


def imresize(x: torch.Tensor, scale: float | None = None,
             size: tuple[int, int] | None = None, antialias: bool = True) -> torch.Tensor:
    """MATLAB ``imresize(x, scale, 'bicubic')`` for (N, C, H, W) or (C, H, W) tensors.

    Give ``scale`` (e.g. 4 to enlarge, 1/4 to shrink) or an output ``size`` (H, W).
    uint8 in gives uint8 out with MATLAB's rounding, also between the two passes;
    float in gives float out (float16/bfloat16 are computed in float32).
    """
    if (scale is None) == (size is None):
        raise ValueError("imresize: give exactly one of scale or size")
    if x.dim() not in (3, 4):
        raise ValueError(f"imresize: expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    squeeze = x.dim() == 3
    if squeeze:
        x = x.unsqueeze(0)
    n, c, h, w = x.shape
    if size is not None:
        out_h, out_w = int(size[0]), int(size[1])
        scale_h, scale_w = out_h / h, out_w / w
    else:
        scale_h = scale_w = float(scale)
        out_h, out_w = _output_length(h, scale_h), _output_length(w, scale_w)
    if out_h < 1 or out_w < 1:
        raise ValueError(f"imresize: output size {out_h}x{out_w} is empty")

    is_u8 = x.dtype == torch.uint8
    if not (is_u8 or x.is_floating_point()):
        raise TypeError(f"imresize: unsupported dtype {x.dtype}; use uint8 or float")
    out_dtype = x.dtype
    work_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    passes = [(dim, in_len, out_len, s) for dim, in_len, out_len, s in
              ((0, h, out_h, scale_h), (1, w, out_w, scale_w)) if not (in_len == out_len and s == 1)]
    out = torch.empty(n * c, out_h, out_w, dtype=out_dtype, device=x.device)
    planes = x.reshape(n * c, h, w)
    if not passes:
        out.copy_(planes)
    else:
        # TF32 would cost ~1e-3 relative error: too much for MATLAB-exact rounding.
        with _no_tf32():
            _resize_planes(planes, out, passes, work_dtype, antialias)
    out = out.view(n, c, out_h, out_w)
    return out[0] if squeeze else out


class _no_tf32:
    """Temporarily disable TF32 matmuls on CUDA (thread-unsafe global flag)."""

    def __enter__(self):
        self.saved = torch.backends.cuda.matmul.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = False

    def __exit__(self, *exc):
        torch.backends.cuda.matmul.allow_tf32 = self.saved


def modcrop(x: torch.Tensor, scale: int) -> torch.Tensor:
    """Crop (..., H, W) from the top-left so H and W are multiples of ``scale``."""
    h, w = x.shape[-2:]
    return x[..., : h - h % scale, : w - w % scale]
