"""BT.601 colour conversion as MATLAB's rgb2ycbcr/ycbcr2rgb, on float tensors in [0, 1].

SR papers (SRCNN, FSRCNN, ESPCN, and every Y-PSNR table) use MATLAB's studio-swing
definition: Y in [16, 235] / 255, Cb and Cr in [16, 240] / 255.
"""
from __future__ import annotations

import torch

# Rows: Y, Cb, Cr; columns: R, G, B (inputs in [0, 1], outputs in [0, 255]).
_RGB_TO_YCBCR = (
    (65.481, 128.553, 24.966),
    (-37.797, -74.203, 112.0),
    (112.0, -93.786, -18.214),
)
_OFFSET = (16.0, 128.0, 128.0)
# Y = 16 + (Y_ROW . RGB) / 255 for RGB in [0, 255] (the metrics work on that range).
Y_ROW = _RGB_TO_YCBCR[0]


_M64 = torch.tensor(_RGB_TO_YCBCR, dtype=torch.float64) / 255.0
_INV64 = torch.linalg.inv(_M64)
_OFF64 = torch.tensor(_OFFSET, dtype=torch.float64) / 255.0


def _work(x: torch.Tensor) -> torch.Tensor:
    # Half precision tints greys by ~4e-3 here, so convert in float32 (or float64)
    # with autocast off, and hand back the caller's dtype.
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def _apply(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    with torch.autocast(x.device.type, enabled=False):
        w = _work(x)
        m = matrix.to(device=x.device, dtype=w.dtype)
        return torch.einsum("ij,...jhw->...ihw", m, w)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> YCbCr in [0, 1] (channel dim -3)."""
    off = _OFF64.to(device=x.device, dtype=_work(x).dtype)[:, None, None]
    return (_apply(_M64, x) + off).to(x.dtype if x.is_floating_point() else torch.float32)


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_ycbcr (not clamped)."""
    off = _OFF64.to(device=x.device, dtype=_work(x).dtype)[:, None, None]
    return _apply(_INV64, _work(x) - off).to(x.dtype)


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 1, H, W) Y in [16/255, 235/255]."""
    # Only the first row of the matrix: a third of the work of the full conversion.
    off = float(_OFF64[0])
    return (_apply(_M64[:1], x) + off).to(x.dtype if x.is_floating_point() else torch.float32)
