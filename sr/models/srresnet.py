"""SRResNet / SRGAN generator and the SRGAN discriminator (Ledig et al., CVPR 2017)."""
from __future__ import annotations

import torch
from torch import nn

from sr.models.common import Upsampler, conv


class ResidualBlock(nn.Module):
    """conv-BN-PReLU-conv-BN with identity skip (convs have no bias: BN follows)."""

    def __init__(self, n_feats: int):
        super().__init__()
        self.body = nn.Sequential(
            conv(n_feats, n_feats, 3, bias=False), nn.BatchNorm2d(n_feats), nn.PReLU(),
            conv(n_feats, n_feats, 3, bias=False), nn.BatchNorm2d(n_feats),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SRResNet(nn.Module):
    """SRResNet, also the SRGAN generator: 9x9 head + PReLU, residual blocks, conv+BN
    with a global skip, sub-pixel stages (x2 each; one x3 stage for x3) with PReLU,
    9x9 tail. Linear output in [0, 1] space (no tanh), as the project contract wants."""

    def __init__(self, scale: int, n_resblocks: int = 16, n_feats: int = 64):
        super().__init__()
        self.head = nn.Sequential(conv(3, n_feats, 9), nn.PReLU())
        self.body = nn.Sequential(*[ResidualBlock(n_feats) for _ in range(n_resblocks)])
        self.body_tail = nn.Sequential(conv(n_feats, n_feats, 3, bias=False), nn.BatchNorm2d(n_feats))
        self.upsample = Upsampler(scale, n_feats, act=nn.PReLU)
        self.tail = conv(n_feats, 3, 9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x)
        x = self.body_tail(self.body(x)) + x
        return self.tail(self.upsample(x))


class Discriminator(nn.Module):
    """SRGAN discriminator; takes RGB in [0, 1] (N,3,H,W), returns one logit per image (N,1).

    Eight 3x3 conv blocks (64,64,128,128,256,256,512,512 channels, strides 1,2,1,2,...;
    BN on all but the first; LeakyReLU 0.2), then adaptive average pooling to
    ``pool_size`` x ``pool_size`` so any crop size works (96x96 crops reach 6x6
    unchanged, as in the paper), dense 1024, LeakyReLU, dense 1. No sigmoid: the loss
    applies it (``BCEWithLogitsLoss``), which is numerically safer.
    """

    def __init__(self, n_feats: int = 64, pool_size: int = 6):
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i in range(8):
            out_ch = n_feats * 2 ** (i // 2)
            layers.append(nn.Conv2d(in_ch, out_ch, 3, stride=1 + i % 2, padding=1, bias=i == 0))
            if i > 0:
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(pool_size)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(in_ch * pool_size * pool_size, 1024),
            nn.LeakyReLU(0.2, inplace=True), nn.Linear(1024, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))
