"""LR training inputs, made on the training device from uint8 HR crops.

Downscaling is ``sr.resize.imresize``, the MATLAB-exact bicubic the evaluation uses.
``resize="exact"`` runs its uint8 path (every LR pixel equals MATLAB's); ``"float"``
runs its float path and rounds the result to 8 bits once at the end: it skips MATLAB's
rounding between the two passes (LR values differ by at most one grey level) and
avoids the host syncs of the exact path's tie check, so it is the GPU default.

Optional degradations (off unless their ``prob`` > 0): Gaussian blur, Gaussian noise
and JPEG, each applied before or after the downscale (``at``), in that order within a
stage. Their random parameters come from a generator seeded with (seed, step), so a
resumed run degrades its batches exactly as an uninterrupted one.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from eval.metrics import quantize
from sr.resize import imresize

# MATLAB's bicubic reads 2 LR pixels of context on each side (kernel radius 2 in LR units).
RESIZE_CONTEXT = 2


def context_margin(scale: int, degrade: dict) -> int:
    """LR pixels of context the HR crop needs around the patch: the bicubic kernel's,
    plus the blur kernel's when blurring before the downscale."""
    blur = degrade["blur"]
    extra = 0
    if blur["prob"] > 0 and blur["at"] == "before":
        extra = math.ceil(_blur_radius(blur["sigma"][1]) / scale)
    return RESIZE_CONTEXT + extra


def _blur_radius(sigma: float) -> int:
    return max(1, math.ceil(3 * sigma))


def _uniform(gen: torch.Generator, n: int, lo: float, hi: float) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen, dtype=torch.float64)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Separable Gaussian blur with one sigma per image (sigma 0 = unchanged), edge-replicated borders."""
    n, c, h, w = x.shape
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    s = sigma.double().clamp_min(1e-6)[:, None]
    k = torch.exp(-(t[None] ** 2) / (2 * s * s))
    k = k / k.sum(dim=1, keepdim=True)
    k = k.to(x.dtype).to(x.device).repeat_interleave(c, dim=0)  # (n*c, taps)
    y = F.pad(x.reshape(1, n * c, h, w), (radius,) * 4, mode="replicate")
    y = F.conv2d(y, k[:, None, None, :], groups=n * c)
    y = F.conv2d(y, k[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def jpeg(x: torch.Tensor, quality: list[int]) -> torch.Tensor:
    """JPEG round trip of each image at its own quality (None = unchanged), on the CPU."""
    from torchvision.io import decode_jpeg, encode_jpeg

    out = x.clone()
    u8 = quantize(x).cpu()
    for i, q in enumerate(quality):
        if q is not None:
            out[i] = decode_jpeg(encode_jpeg(u8[i], quality=int(q))).to(x.device, x.dtype) / 255.0
    return out


class LRMaker:
    """``maker(hr_u8, step) -> (lr, hr)``: float tensors in [0, 1] on ``hr_u8``'s device,
    the context margin cut; the LR is quantised to 8 bits like a real LR image."""

    def __init__(self, scale: int, degrade: dict, resize: str, margin: int, seed: int,
                 batch: int, offset: int = 0):
        if margin < RESIZE_CONTEXT:
            raise ValueError(f"LRMaker needs a margin of at least {RESIZE_CONTEXT} LR pixels (context_margin())")
        self.scale, self.margin, self.seed, self.resize = scale, margin, seed, resize
        # Random draws are made for the global batch and this rank's share is taken
        # (rows offset..offset+n), so any number of ranks degrades the same samples alike.
        self.batch, self.offset = batch, offset
        self.active = {k: v for k, v in degrade.items() if v["prob"] > 0}

    def _generator(self, step: int) -> torch.Generator:
        state = np.random.SeedSequence([self.seed, step, 0xDE6]).generate_state(2, dtype=np.uint32)
        return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))

    def _apply(self, x: torch.Tensor, stage: str, gen: torch.Generator) -> torch.Tensor:
        n, mine = self.batch, slice(self.offset, self.offset + x.shape[0])
        for name in ("blur", "noise", "jpeg"):
            opt = self.active.get(name)
            if opt is None or opt["at"] != stage:
                continue
            on = torch.rand(n, generator=gen) < opt["prob"]
            if name == "blur":
                sigma = _uniform(gen, n, *opt["sigma"]) * on
                x = gaussian_blur(x, sigma[mine], _blur_radius(opt["sigma"][1]))
            elif name == "noise":
                sigma = (_uniform(gen, n, *opt["sigma"]) * on / 255.0).float()
                gray = torch.rand(n, generator=gen) < opt["gray_prob"]
                noise = torch.randn((n, *x.shape[1:]), generator=gen)
                noise = torch.where(gray[:, None, None, None], noise[:, :1].expand_as(noise), noise)
                noise = noise[mine] * sigma[mine, None, None, None]
                x = (x + noise.to(x.device)).clamp(0, 1)
            else:
                lo, hi = opt["quality"]
                q = torch.randint(int(lo), int(hi) + 1, (n,), generator=gen)
                x = jpeg(x, [int(qi) if o else None for qi, o in zip(q[mine], on[mine])])
        return x

    def _downscale(self, x: torch.Tensor) -> torch.Tensor:
        """imresize by 1/scale of every crop and channel as one wide plane (one large
        pass instead of one per plane). The column pass mixes neighbouring crops only
        within RESIZE_CONTEXT LR pixels of a seam, inside the margin that is cut."""
        n, c, h, w = x.shape
        strip = x.permute(2, 0, 1, 3).reshape(1, 1, h, n * c * w)
        lr = imresize(strip, scale=1 / self.scale)
        return lr.reshape(lr.shape[-2], n, c, w // self.scale).permute(1, 2, 0, 3)

    @torch.no_grad()
    def __call__(self, hr_u8: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        s, m = self.scale, self.margin
        gen = self._generator(step)
        hr = hr_u8.float() / 255.0
        before = any(v["at"] == "before" for v in self.active.values())
        if before:
            lr = self._downscale(self._apply(hr, "before", gen))
        elif self.resize == "exact":
            lr = self._downscale(hr_u8).float() / 255.0
        else:
            lr = self._downscale(hr)
        # Cut the margin first: its outer pixels mix neighbouring crops (see _downscale).
        lr = lr[..., m:-m, m:-m]
        hr = hr[..., m * s:-m * s, m * s:-m * s]
        lr = quantize(self._apply(lr, "after", gen)).float() / 255.0
        return lr.contiguous(), hr.contiguous()
