"""SRCNN (Dong et al., ECCV 2014 / TPAMI 2016): three convolutions on bicubic-upscaled luma."""
from __future__ import annotations

import torch
from torch import nn

from sr.models.common import YChannelSR


class SRCNN(nn.Module):
    """f1-f2-f3 = 9-5-5 with n1/n2 = 64/32 filters, 1 channel in and out.

    Zero 'same' padding keeps the output the size of the (already upscaled) input;
    the paper used valid convolutions and a smaller output instead.
    """

    def __init__(self, n1: int = 64, n2: int = 32, f1: int = 9, f2: int = 5, f3: int = 5):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, n1, f1, padding=f1 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(n1, n2, f2, padding=f2 // 2), nn.ReLU(inplace=True),
            nn.Conv2d(n2, 1, f3, padding=f3 // 2),
        )
        # Paper init: weights ~ N(0, 0.001), zero biases. (The paper also used a 10x
        # smaller learning rate for the last layer; that is the trainer's business.)
        for m in self.body:
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=1e-3)
                nn.init.zeros_(m.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.body(y)


def build_srcnn(scale: int, n1: int = 64, n2: int = 32, f1: int = 9, f2: int = 5, f3: int = 5) -> YChannelSR:
    return YChannelSR(SRCNN(n1, n2, f1, f2, f3), scale, upsample_first=True)
