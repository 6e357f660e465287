"""Bicubic interpolation baseline (MATLAB ``imresize``), the row every SR table prints."""
from __future__ import annotations

import torch
from torch import nn

from sr.resize import imresize


class Bicubic(nn.Module):
    """No weights: MATLAB-compatible bicubic upscaling by ``scale``."""

    def __init__(self, scale: int):
        super().__init__()
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize(x, scale=self.scale)
