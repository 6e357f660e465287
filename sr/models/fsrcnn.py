"""FSRCNN (Dong et al., ECCV 2016): hourglass CNN on LR luma with a deconvolution tail."""
from __future__ import annotations

import torch
from torch import nn

from sr.models.common import YChannelSR


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m): 5x5 feature extraction (d), 1x1 shrink (s), m 3x3 maps, 1x1
    expand, all with per-channel PReLU, then a 9x9 transposed conv with stride=scale."""

    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, d, 5, padding=2), nn.PReLU(d),
                                   nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, padding=1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        # padding 4 and output_padding scale-1 make the output exactly (scale*h, scale*w):
        # (h-1)*scale - 8 + 9 + scale-1 = scale*h.
        self.tail = nn.ConvTranspose2d(d, 1, 9, stride=scale, padding=4, output_padding=scale - 1)
        # Paper init: He (MSRA) for the convolutions, N(0, 0.001) for the deconvolution.
        for mod in self.body:
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, nonlinearity="relu")
                nn.init.zeros_(mod.bias)
        nn.init.normal_(self.tail.weight, std=1e-3)
        nn.init.zeros_(self.tail.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.tail(self.body(y))


def build_fsrcnn(scale: int, d: int = 56, s: int = 12, m: int = 4) -> YChannelSR:
    return YChannelSR(FSRCNN(scale, d, s, m), scale, upsample_first=False)
