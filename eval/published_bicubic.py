"""The bicubic row as the SR literature prints it (VDSR's tables onwards).

That row predates the protocol in ``eval.metrics`` and was made by SRCNN-era MATLAB
code, which differs from the protocol in four ways:

* it works on the Y channel only, rounded to uint8 (a grayscale image such as Set14's
  ``bridge`` is its own Y, full range, where the protocol uses Y of R = G = B);
* LR and bicubic upsampling are float resizes of that Y plane (no rounding between
  passes or of the LR image); the upsampled plane is rounded to uint8;
* PSNR crops ``scale`` border pixels, SSIM is over the whole (modcropped) image.

Built from this project's own MATLAB-exact resize and metric, it reproduces every
published Set5/Set14 x2/x3/x4 bicubic value (12 numbers) within 0.01 dB and 0.0005
(``tests/test_eval.py``). The protocol row differs from it by +0.01 dB on Set5 and
+0.09 dB on Set14 (mostly ``bridge``); both rows are correct for what they measure,
and model numbers in this workbench always use the protocol.
"""
from __future__ import annotations

import pandas as pd
import torch

from eval.datasets import Benchmark, find_data_root
from eval.metrics import _one_cpu_thread, psnr, ssim, y_channel
from sr.resize import imresize

LABEL = "bicubic (published pipeline)"


def bicubic_metrics(hr: torch.Tensor, scale: int, gray: bool = False) -> tuple[float, float]:
    """(PSNR, SSIM) of the published bicubic pipeline for one modcropped uint8 HR
    image (3, H, W); ``gray`` marks a grayscale file (R = G = B)."""
    with _one_cpu_thread(hr):
        y8 = hr[:1].double() if gray else torch.floor(y_channel(hr[None])[0] + 0.5)
        y = y8[None] / 255.0
        up = imresize(imresize(y, scale=1 / scale), scale=scale)
        up8 = torch.floor(up.clamp(0, 1) * 255.0 + 0.5)
        ref = y8[None]
        c = scale
        p = psnr(up8[..., c:-c, c:-c], ref[..., c:-c, c:-c])
        return float(p[0]), float(ssim(up8, ref)[0])


def published_bicubic_row(datasets, scales, data_root=None) -> pd.DataFrame:
    """Per-image rows (the runner's columns; RGB columns NaN) of the published bicubic
    pipeline, labelled ``LABEL``: put them next to a protocol table to compare with
    the bicubic row printed in papers."""
    from eval.runner import COLUMNS, _row

    root = find_data_root(data_root)
    rows = []
    for scale in ([scales] if isinstance(scales, int) else scales):
        for name in ([datasets] if isinstance(datasets, str) else datasets):
            bench = Benchmark(name, int(scale), root)
            for item in bench:
                p, s = bicubic_metrics(item.hr, bench.scale, item.grayscale)
                # No timing: this row is a reference, not a method to time.
                rows.append(_row(LABEL, bench.scale, bench.name, item.name, psnr_y=p, ssim_y=s,
                                 lr_source="Y plane, float resize", params=0.0, tiles=1))
    return pd.DataFrame(rows, columns=COLUMNS)
