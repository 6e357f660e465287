"""The model zoo: one registry of SR architectures.

``create_model(name, scale, **hparams)`` builds a model that follows the project
contract (RGB in [0, 1] (N,3,H,W) -> (N,3,sH,sW), not clamped) and carries
``.scale``, ``.arch`` and ``.hparams`` (every hyper-parameter used, JSON-safe), so
``create_model(m.arch, m.scale, **m.hparams)`` rebuilds it.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from sr.errors import ScaleError
from sr.models.bicubic import Bicubic
from sr.models.common import ModelConfigError, YChannelSR
from sr.models.edsr import EDSR
from sr.models.espcn import build_espcn
from sr.models.fsrcnn import build_fsrcnn
from sr.models.rcan import RCAN
from sr.models.srcnn import build_srcnn
from sr.models.srresnet import Discriminator, SRResNet

__all__ = ["MODELS", "ModelSpec", "ModelInfo", "ModelConfigError", "create_model", "get_spec",
           "list_models", "count_parameters", "Discriminator", "YChannelSR"]


@dataclass(frozen=True)
class ModelSpec:
    """One registry entry. ``constructor(scale, **hparams)`` builds the network."""

    constructor: Callable[..., nn.Module]
    scales: tuple[int, ...]
    y_channel: bool
    paper: str
    description: str
    overrides: dict[str, Any] = field(default_factory=dict)

    @property
    def defaults(self) -> dict[str, Any]:
        """Every hyper-parameter with its default: the constructor's, then ``overrides``."""
        params = list(inspect.signature(self.constructor).parameters.values())[1:]  # skip scale
        return {p.name: p.default for p in params} | self.overrides


_SCALES = (2, 3, 4)

MODELS: dict[str, ModelSpec] = {
    "bicubic": ModelSpec(Bicubic, _SCALES, False, "MATLAB imresize (Keys, 1981)",
                         "bicubic interpolation baseline, no weights"),
    "srcnn": ModelSpec(build_srcnn, _SCALES, True, "Dong et al., ECCV 2014",
                       "3-layer CNN (9-5-5) on bicubic-upscaled luma"),
    "fsrcnn": ModelSpec(build_fsrcnn, _SCALES, True, "Dong et al., ECCV 2016",
                        "hourglass CNN on LR luma with deconvolution tail"),
    "espcn": ModelSpec(build_espcn, _SCALES, True, "Shi et al., CVPR 2016",
                       "CNN on LR luma with sub-pixel convolution tail"),
    "srresnet": ModelSpec(SRResNet, _SCALES, False, "Ledig et al., CVPR 2017",
                          "16 residual blocks with BN, trained for PSNR (MSE)"),
    "srgan": ModelSpec(SRResNet, _SCALES, False, "Ledig et al., CVPR 2017",
                       "SRResNet generator trained adversarially (perceptual)"),
    "edsr_baseline": ModelSpec(EDSR, _SCALES, False, "Lim et al., CVPRW 2017",
                               "EDSR baseline: 16 residual blocks, 64 channels"),
    "edsr": ModelSpec(EDSR, _SCALES, False, "Lim et al., CVPRW 2017",
                      "EDSR: 32 residual blocks, 256 channels, residual scaling 0.1",
                      {"n_resblocks": 32, "n_feats": 256, "res_scale": 0.1}),
    "rcan": ModelSpec(RCAN, _SCALES, False, "Zhang et al., ECCV 2018",
                      "10 residual groups x 20 channel-attention blocks"),
}


def get_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ModelConfigError(f"unknown model {name!r}; choose one of: {', '.join(MODELS)}") from None


def create_model(name: str, scale: int, **hparams: Any) -> nn.Module:
    """Build registry model ``name`` for ``scale`` with random weights.

    Raises ``ModelConfigError`` (an ``SRError`` and ``ValueError``) for an unknown name
    or hyper-parameter and ``sr.errors.ScaleError`` for an unsupported scale.
    """
    spec = get_spec(name)
    if isinstance(scale, bool) or scale not in spec.scales:
        raise ScaleError(f"{name} supports scales {', '.join(f'x{s}' for s in spec.scales)}, "
                         f"not x{scale}")
    defaults = spec.defaults
    unknown = sorted(set(hparams) - set(defaults))
    if unknown:
        raise ModelConfigError(f"unknown hyper-parameter(s) {', '.join(unknown)} for {name}; "
                               f"valid: {', '.join(defaults) or 'none'}")
    used = defaults | hparams
    model = spec.constructor(int(scale), **used)
    model.scale = int(scale)
    model.arch = name
    model.hparams = used
    return model


def count_parameters(model: nn.Module) -> int:
    """Learnable parameters. The fixed MeanShift of EDSR/RCAN is stored as buffers, so
    it is not counted (the papers' convention)."""
    return sum(p.numel() for p in model.parameters())


@dataclass(frozen=True)
class ModelInfo:
    """One row of ``list_models()`` (and of ``python -m sr models``)."""

    name: str
    scales: tuple[int, ...]
    params_x4: int
    y_channel: bool
    paper: str
    description: str


@functools.lru_cache(maxsize=None)
def _params_x4(name: str) -> int:
    # Built on the CPU (about 1 s for all): on the meta device, the normal_() of the
    # papers' inits lazily imports sympy, which costs several seconds.
    with torch.no_grad():
        return count_parameters(create_model(name, 4))


def list_models() -> list[ModelInfo]:
    """Every registry model with its scales and parameter count at x4."""
    return [ModelInfo(name, spec.scales, _params_x4(name), spec.y_channel, spec.paper, spec.description)
            for name, spec in MODELS.items()]
