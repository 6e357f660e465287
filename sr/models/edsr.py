"""EDSR and EDSR-baseline (Lim et al., CVPRW 2017), in the EDSR-PyTorch state-dict layout."""
from __future__ import annotations

import torch
from torch import nn

from sr.models.common import GlobalResidualSR, conv


class ResBlock(nn.Module):
    """conv-ReLU-conv with scaled residual; no batch norm (the paper's key change)."""

    def __init__(self, n_feats: int, res_scale: float):
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats, 3), nn.ReLU(inplace=True), conv(n_feats, n_feats, 3))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        res = self.body(x)
        return x + (res if self.res_scale == 1 else res * self.res_scale)


class EDSR(GlobalResidualSR):
    """EDSR; baseline is 16 blocks x 64 ch, res_scale 1; the full model 32 x 256, 0.1.
    See :class:`GlobalResidualSR` for ``rgb_range``."""

    def __init__(self, scale: int, n_resblocks: int = 16, n_feats: int = 64,
                 res_scale: float = 1.0, rgb_range: float = 255):
        super().__init__(scale, n_feats, rgb_range,
                         [ResBlock(n_feats, res_scale) for _ in range(n_resblocks)])
