"""RCAN (Zhang et al., ECCV 2018): residual-in-residual with channel attention.

State-dict layout follows the official RCAN code (and spandrel's port of it).
"""
from __future__ import annotations

import torch
from torch import nn

from sr.models.common import GlobalResidualSR, conv


class CALayer(nn.Module):
    """Channel attention: global average pool -> 1x1 squeeze/excite -> sigmoid gate."""

    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_du = nn.Sequential(
            nn.Conv2d(n_feats, n_feats // reduction, 1), nn.ReLU(inplace=True),
            nn.Conv2d(n_feats // reduction, n_feats, 1), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.conv_du(self.avg_pool(x))


class RCAB(nn.Module):
    """Residual channel attention block (unscaled residual, as the official code runs)."""

    def __init__(self, n_feats: int, reduction: int):
        super().__init__()
        self.body = nn.Sequential(conv(n_feats, n_feats, 3), nn.ReLU(inplace=True),
                                  conv(n_feats, n_feats, 3), CALayer(n_feats, reduction))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualGroup(nn.Module):
    def __init__(self, n_feats: int, reduction: int, n_resblocks: int):
        super().__init__()
        self.body = nn.Sequential(*[RCAB(n_feats, reduction) for _ in range(n_resblocks)],
                                  conv(n_feats, n_feats, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class RCAN(GlobalResidualSR):
    """RCAN: n_resgroups groups of n_resblocks RCABs. See :class:`GlobalResidualSR`
    for ``rgb_range`` (255 is also what spandrel assumes for an RCAN state dict)."""

    float32_stream = True  # 200 residual blocks: keep their sum in float32 under autocast

    def __init__(self, scale: int, n_resgroups: int = 10, n_resblocks: int = 20,
                 n_feats: int = 64, reduction: int = 16, rgb_range: float = 255):
        super().__init__(scale, n_feats, rgb_range,
                         [ResidualGroup(n_feats, reduction, n_resblocks) for _ in range(n_resgroups)])
