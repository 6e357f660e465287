"""Building blocks shared by several architectures."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from sr.color import rgb_to_ycbcr, ycbcr_to_rgb
from sr.errors import ScaleError
from sr.errors import UnknownModelError as ModelConfigError  # noqa: F401 (re-exported)
from sr.resize import imresize



# Mean RGB of DIV2K's training images, as used by EDSR and RCAN.
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)


def conv(in_channels: int, out_channels: int, kernel_size: int, bias: bool = True) -> nn.Conv2d:
    """'Same' convolution (odd kernel, stride 1): EDSR-PyTorch's ``default_conv``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=bias)


class MeanShift(nn.Module):
    """Fixed 1x1 conv that adds (sign=+1) or subtracts (sign=-1) ``rgb_range * mean``.

    Weight and bias are buffers, not parameters: they never train and stay out of
    ``count_parameters``, yet keep the state-dict keys ``weight``/``bias`` that the
    official EDSR/RCAN files carry, so those files load unchanged.
    """

    def __init__(self, rgb_range: float, sign: int, mean=DIV2K_RGB_MEAN, std=(1.0, 1.0, 1.0)):
        super().__init__()
        std_t = torch.tensor(std, dtype=torch.float32)
        self.register_buffer("weight", torch.eye(3).view(3, 3, 1, 1) / std_t.view(3, 1, 1, 1))
        self.register_buffer("bias", sign * rgb_range * torch.tensor(mean, dtype=torch.float32) / std_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias)


class Upsampler(nn.Sequential):
    """Sub-pixel upsampling: one conv + PixelShuffle(2) per factor 2, or one x3 stage.

    Layout (``0`` conv, ``1`` shuffle, ``2`` conv, ...) matches EDSR-PyTorch when
    ``act`` is None; ``act`` (a module factory, e.g. ``nn.PReLU``) follows each shuffle.
    """

    def __init__(self, scale: int, n_feats: int, act: Callable[[], nn.Module] | None = None):
        if scale == 3:
            factors = [3]
        elif scale >= 2 and scale & (scale - 1) == 0:
            factors = [2] * (scale.bit_length() - 1)
        else:
            raise ScaleError(f"sub-pixel upsampling supports x3 and powers of two, not x{scale}")
        layers: list[nn.Module] = []
        for f in factors:
            layers += [conv(n_feats, f * f * n_feats, 3), nn.PixelShuffle(f)]
            if act is not None:
                layers.append(act())
        super().__init__(*layers)


class YChannelSR(nn.Module):
    """Runs a 1-channel network on luma; chroma is upscaled with MATLAB bicubic.

    ``forward(rgb)`` converts RGB -> YCbCr (BT.601), gets SR luma from ``forward_y``,
    upscales Cb/Cr with ``sr.resize.imresize`` and converts back to RGB.

    Training on Y directly (what the papers did): given LR luma
    ``y_lr = sr.color.rgb_to_y(lr)`` of shape (N,1,h,w) (values in [16/255, 235/255]),
    ``model.forward_y(y_lr)`` returns SR luma (N,1,sh,sw); compare it with
    ``rgb_to_y(hr)``. It is the same call for SRCNN, FSRCNN and ESPCN: for
    pre-upsampling networks (SRCNN, ``upsample_first=True``) it first applies the
    bicubic x``scale`` (``prepare_y``), which has no parameters, so gradients only
    reach ``model.net``.
    """

    def __init__(self, net: nn.Module, scale: int, upsample_first: bool):
        super().__init__()
        self.net = net
        self.scale = scale
        self.upsample_first = upsample_first

    def prepare_y(self, y_lr: torch.Tensor) -> torch.Tensor:
        """The input ``net`` expects for LR luma: bicubic-upscaled for SRCNN, else as is."""
        return imresize(y_lr, scale=self.scale) if self.upsample_first else y_lr

    def forward_y(self, y_lr: torch.Tensor) -> torch.Tensor:
        return self.net(self.prepare_y(y_lr))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Colour conversion and chroma upscaling are cheap, so they run in float32 even
        # under autocast or in a half-precision model: low precision there tints the image.
        with torch.autocast(x.device.type, enabled=False):
            ycbcr = rgb_to_ycbcr(x.float())
        y = self.forward_y(ycbcr[:, :1].to(x.dtype))
        with torch.autocast(x.device.type, enabled=False):
            cbcr = imresize(ycbcr[:, 1:], scale=self.scale)
            return ycbcr_to_rgb(torch.cat([y.float(), cbcr], dim=1)).to(x.dtype)


class GlobalResidualSR(nn.Module):
    """The frame EDSR and RCAN share, in their official state-dict layout:
    ``sub_mean`` -> ``head.0`` -> ``body`` (its last entry a conv) + global skip ->
    ``tail.0`` (Upsampler), ``tail.1`` -> ``add_mean``.

    Input/output follow the project contract (RGB in [0, 1]). ``rgb_range`` is the
    pixel range the *weights* work in: the official models were trained on [0, 255],
    so the default 255 multiplies the input by 255 before ``sub_mean`` and divides by
    255 after ``add_mean``; official files then load unchanged and give correct [0, 1]
    output (spandrel's RCAN does the same). A model trained on [0, 1] data uses
    ``rgb_range=1``; checkpoints record it in ``model.hparams``.
    """

    float32_stream = False  # under autocast; see forward

    def __init__(self, scale: int, n_feats: int, rgb_range: float, body: list[nn.Module]):
        super().__init__()
        self.rgb_range = rgb_range
        self.sub_mean = MeanShift(rgb_range, sign=-1)
        self.head = nn.Sequential(conv(3, n_feats, 3))
        self.body = nn.Sequential(*body, conv(n_feats, n_feats, 3))
        self.tail = nn.Sequential(Upsampler(scale, n_feats), conv(n_feats, 3, 3))
        self.add_mean = MeanShift(rgb_range, sign=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        device = x.device.type
        if not torch.is_autocast_enabled(device):
            x = self.head(self.sub_mean(x * self.rgb_range))
            return self.add_mean(self.tail(self.body(x) + x)) / self.rgb_range
        # Mixed precision: the body and the upsampler run in bf16/fp16; the mean shifts
        # and the head run in float32, since a bf16 input in [0, 255] is already off by up
        # to half a grey level and the global skip carries that to the output (the EDSR-
        # baseline x4 shipped at the time, on a Set14 crop: max error 1.7 -> 0.9 /255). EDSR's last conv
        # runs in bf16 too (EDSR-baseline x4 fast path here: 0.87 -> 0.73 s/MP). Deep
        # stacks (float32_stream) keep the residual stream in float32 (each block's bf16
        # output is added to a float32 sum), so rounding does not pile up over RCAN's 200
        # blocks, and their last conv, whose output is in [0, 255] where bf16 steps are
        # 0.5-1 grey levels.
        with torch.autocast(device, enabled=False):
            x = self.head(self.sub_mean(x.float() * self.rgb_range))
        if not self.float32_stream:
            x = x.to(torch.get_autocast_dtype(device))
        x = self.tail[0](self.body(x) + x)
        if not self.float32_stream:
            x = self.tail[1](x)
        with torch.autocast(device, enabled=False):
            x = x.float()
            if self.float32_stream:
                x = self.tail[1](x)
            return self.add_mean(x) / self.rgb_range
