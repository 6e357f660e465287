"""ESPCN (Shi et al., CVPR 2016): convolutions on LR luma, sub-pixel (PixelShuffle) tail."""
from __future__ import annotations

import torch
from torch import nn

from sr.models.common import ModelConfigError, YChannelSR

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU}


class ESPCN(nn.Module):
    """5-3-3 convolutions with n1/n2 = 64/32 filters, then PixelShuffle(scale).

    ``act="tanh"`` (default) is the paper's choice, which it found better than ReLU
    for SR; ``"relu"`` is available for experiments.
    """

    def __init__(self, scale: int, n1: int = 64, n2: int = 32, act: str = "tanh"):
        super().__init__()
        if act not in _ACTIVATIONS:
            raise ModelConfigError(f"ESPCN act must be one of {sorted(_ACTIVATIONS)}, not {act!r}")
        activation = _ACTIVATIONS[act]
        self.body = nn.Sequential(
            nn.Conv2d(1, n1, 5, padding=2), activation(),
            nn.Conv2d(n1, n2, 3, padding=1), activation(),
            nn.Conv2d(n2, scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        # The paper gives no init; Glorot suits tanh, and a tiny last layer starts
        # training from a near-constant output.
        convs = [m for m in self.body if isinstance(m, nn.Conv2d)]
        for c in convs[:-1]:
            nn.init.xavier_normal_(c.weight, gain=nn.init.calculate_gain(act))
            nn.init.zeros_(c.bias)
        nn.init.normal_(convs[-1].weight, std=1e-3)
        nn.init.zeros_(convs[-1].bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return self.body(y)


def build_espcn(scale: int, n1: int = 64, n2: int = 32, act: str = "tanh") -> YChannelSR:
    return YChannelSR(ESPCN(scale, n1, n2, act), scale, upsample_first=False)
