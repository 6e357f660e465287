"""Learning-rate schedule and the EMA of the weights."""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch
from torch import nn


def lr_factor(sched: dict, base_lr: float, total: int) -> Callable[[int], float]:
    """Multiplier of the base lr after ``step`` optimiser steps: linear warm-up, then
    step decay (``gamma`` at each milestone), cosine to ``min_lr``, or constant."""
    warm = int(sched["warmup_steps"])
    milestones = sorted(int(m) for m in sched["milestones"])
    floor = sched["min_lr"] / base_lr if base_lr else 0.0

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if sched["type"] == "step":
            return sched["gamma"] ** sum(step >= m for m in milestones)
        if sched["type"] == "cosine":
            t = min(1.0, (step - warm) / max(1, total - warm))
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        return 1.0

    return factor


class EMA:
    """Exponential moving average of a model's weights (buffers are copied as is).

    The decay ramps up as ``min(decay, (1 + n) / (10 + n))`` so the average does not
    drag the random initial weights along for thousands of steps.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_lerp_(list(self.module.parameters()), list(model.parameters()), 1.0 - d)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)
