"""Training losses: pixel (L1, MSE, Charbonnier), VGG19 perceptual, adversarial."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from sr.errors import SRError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class LossConfigError(SRError, ValueError):
    """A loss option cannot be honoured (unknown layer, VGG weights unavailable)."""


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Mean of sqrt((pred - target)^2 + eps^2): a smooth L1."""
    return torch.sqrt((pred - target).pow(2) + eps * eps).mean()


def pixel_loss(kind: str, eps: float = 1e-3):
    if kind == "l1":
        return F.l1_loss
    if kind == "mse":
        return F.mse_loss
    if kind == "charbonnier":
        return lambda pred, target: charbonnier(pred, target, eps)
    raise LossConfigError(f"unknown pixel loss {kind!r}; use l1, mse or charbonnier")


def _vgg19_layer_index(layer: str, before_activation: bool) -> int:
    """Number of ``vgg19().features`` modules to keep to end at ``layer`` ("conv5_4"),
    before or after its ReLU."""
    from torchvision.models.vgg import cfgs

    block, conv, i = 1, 0, 0
    for v in cfgs["E"]:
        if v == "M":
            block, conv = block + 1, 0
            i += 1
            continue
        conv += 1
        if f"conv{block}_{conv}" == layer:
            return i + (1 if before_activation else 2)
        i += 2
    raise LossConfigError(f"VGG19 has no layer {layer!r}; use a name like conv5_4 or conv2_2")


def vgg19_features(weights: str) -> nn.Sequential:
    """VGG19's convolutional part with ``weights`` "imagenet" (torchvision's file,
    downloaded once into the torch hub cache), "random" (smoke tests only), or a path
    to a VGG19 state dict (.pth, read with weights_only=True)."""
    from torchvision.models.vgg import cfgs, make_layers

    features = make_layers(cfgs["E"])
    if weights == "random":
        return features
    if weights == "imagenet":
        from torchvision.models import VGG19_Weights

        try:
            sd = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        except Exception as e:  # offline, proxy, corrupt download
            raise LossConfigError(
                f"cannot load torchvision's VGG19 ImageNet weights ({type(e).__name__}: "
                f"{str(e).splitlines()[0] if str(e) else 'no detail'}); the perceptual loss needs them: "
                f"run once with internet access (they are cached in {torch.hub.get_dir()}/checkpoints), "
                "or set loss.perceptual.weights=/path/to/vgg19-dcbb9e9d.pth") from None
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise LossConfigError(f"loss.perceptual.weights: no file {path}; give imagenet, random "
                                  "or the path of a VGG19 state dict")
        try:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise LossConfigError(f"cannot read VGG19 weights {path}: {str(e).splitlines()[0]}") from None
    sd = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    try:
        features.load_state_dict(sd)
    except RuntimeError as e:
        raise LossConfigError(f"VGG19 weights do not fit VGG19 features: {str(e).splitlines()[0]}") from None
    return features


class PerceptualLoss(nn.Module):
    """Distance of VGG19 features (ImageNet-normalised input in [0, 1]).

    ``feature_scale`` multiplies both feature maps before the distance: SRGAN rescales
    VGG features by 1/12.75 so the loss is of the same order as the pixel MSE.
    """

    def __init__(self, layer: str = "conv5_4", before_activation: bool = True,
                 weights: str = "imagenet", feature_scale: float = 1.0, criterion: str = "mse"):
        super().__init__()
        n = _vgg19_layer_index(layer, before_activation)
        self.features = vgg19_features(weights)[:n].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.feature_scale = feature_scale
        self.criterion = F.mse_loss if criterion == "mse" else F.l1_loss

    def train(self, mode: bool = True) -> "PerceptualLoss":
        return super().train(False)  # the VGG is a fixed feature extractor

    def _feats(self, x: torch.Tensor) -> torch.Tensor:
        return self.features((x - self.mean) / self.std) * self.feature_scale

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_feats = self._feats(target)
        pred_feats = self._feats(pred)
        return self.criterion(pred_feats.float(), target_feats.float())


class AdversarialLoss:
    """Standard GAN loss (SRGAN, BCE with logits) or relativistic average GAN (ESRGAN)."""

    def __init__(self, kind: str = "gan"):
        if kind not in ("gan", "ragan"):
            raise LossConfigError(f"unknown adversarial loss {kind!r}; use gan or ragan")
        self.kind = kind

    @staticmethod
    def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
        logits = logits.float()
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))

    def generator(self, real: torch.Tensor | None, fake: torch.Tensor) -> torch.Tensor:
        """Generator loss from D's logits on SR (``fake``) and on HR (``real``, detached; used by ragan)."""
        if self.kind == "gan":
            return self._bce(fake, 1.0)
        return 0.5 * (self._bce(real - fake.mean(), 0.0) + self._bce(fake - real.mean(), 1.0))

    def discriminator(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        if self.kind == "gan":
            return self._bce(real, 1.0) + self._bce(fake, 0.0)
        return 0.5 * (self._bce(real - fake.mean(), 1.0) + self._bce(fake - real.mean(), 0.0))

