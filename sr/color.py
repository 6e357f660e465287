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


def _matrix(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = x.dtype if x.is_floating_point() else torch.float32
    m = torch.tensor(_RGB_TO_YCBCR, dtype=dtype, device=x.device) / 255.0
    off = torch.tensor(_OFFSET, dtype=dtype, device=x.device) / 255.0
    return m, off


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> YCbCr in [0, 1] (channel dim -3)."""
    m, off = _matrix(x)
    return torch.einsum("ij,...jhw->...ihw", m, x) + off[:, None, None]


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of rgb_to_ycbcr (not clamped)."""
    m, off = _matrix(x)
    return torch.einsum("ij,...jhw->...ihw", torch.linalg.inv(m), x - off[:, None, None])


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """(..., 3, H, W) RGB in [0, 1] -> (..., 1, H, W) Y in [16/255, 235/255]."""
    m, off = _matrix(x)
    return torch.einsum("j,...jhw->...hw", m[0], x).unsqueeze(-3) + off[0]
