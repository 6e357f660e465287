"""PAN (Zhao et al., ECCV-W 2020, "Efficient Image Super-Resolution Using Pixel Attention").

Used only by the tests, to check that evaluating the authors' published checkpoint gives
their published numbers. Parameter names follow the official checkpoint so that its
state dict loads strictly; defaults are the published model (nf=40, unf=24, nb=16).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _lrelu(x: torch.Tensor) -> torch.Tensor:
    return F.leaky_relu(x, 0.2)


class PA(nn.Module):
    """Pixel attention: the input times a sigmoid map from a 1x1 convolution."""

    def __init__(self, nf: int):
        super().__init__()
        self.conv = nn.Conv2d(nf, nf, 1)

    def forward(self, x):
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """3x3 convolution gated by pixel attention, then another 3x3 convolution."""

    def __init__(self, nf: int):
        super().__init__()
        self.k2 = nn.Conv2d(nf, nf, 1)
        self.k3 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)
        self.k4 = nn.Conv2d(nf, nf, 3, padding=1, bias=False)

    def forward(self, x):
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention: two half-width branches, one plain
    3x3 and one PAConv, fused by a 1x1 convolution, with a residual connection."""

    def __init__(self, nf: int):
        super().__init__()
        half = nf // 2
        self.conv1_a = nn.Conv2d(nf, half, 1, bias=False)
        self.conv1_b = nn.Conv2d(nf, half, 1, bias=False)
        self.k1 = nn.Sequential(nn.Conv2d(half, half, 3, padding=1, bias=False))
        self.PAConv = PAConv(half)
        self.conv3 = nn.Conv2d(nf, nf, 1, bias=False)

    def forward(self, x):
        a = _lrelu(self.k1(_lrelu(self.conv1_a(x))))
        b = _lrelu(self.PAConv(_lrelu(self.conv1_b(x))))
        return x + self.conv3(torch.cat([a, b], dim=1))


class PAN(nn.Module):
    """RGB in [0, 1] -> RGB, x2/x3/x4; upsampling by nearest interpolation + U-PA blocks,
    plus a global bilinear skip of the input."""

    def __init__(self, scale: int = 4, nf: int = 40, unf: int = 24, nb: int = 16):
        super().__init__()
        if scale not in (2, 3, 4):
            raise ValueError(f"PAN supports x2, x3 and x4, not x{scale}")
        self.scale = scale
        self.arch = "pan"
        self.conv_first = nn.Conv2d(3, nf, 3, padding=1)
        self.SCPA_trunk = nn.Sequential(*[SCPA(nf) for _ in range(nb)])
        self.trunk_conv = nn.Conv2d(nf, nf, 3, padding=1)
        # One U-PA stage for x2/x3, two x2 stages for x4.
        self.upconv1 = nn.Conv2d(nf, unf, 3, padding=1)
        self.att1 = PA(unf)
        self.HRconv1 = nn.Conv2d(unf, unf, 3, padding=1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(unf, unf, 3, padding=1)
            self.att2 = PA(unf)
            self.HRconv2 = nn.Conv2d(unf, unf, 3, padding=1)
        self.conv_last = nn.Conv2d(unf, 3, 3, padding=1)

    def _upa(self, x, factor, upconv, att, hrconv):
        x = upconv(F.interpolate(x, scale_factor=factor, mode="nearest"))
        return _lrelu(hrconv(_lrelu(att(x))))

    def forward(self, x):
        fea = self.conv_first(x)
        fea = fea + self.trunk_conv(self.SCPA_trunk(fea))
        if self.scale == 4:
            fea = self._upa(fea, 2, self.upconv1, self.att1, self.HRconv1)
            fea = self._upa(fea, 2, self.upconv2, self.att2, self.HRconv2)
        else:
            fea = self._upa(fea, self.scale, self.upconv1, self.att1, self.HRconv1)
        skip = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.conv_last(fea) + skip
