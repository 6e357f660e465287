"""Example images for the Upscale tab, made from scikit-image's bundled photos at startup.

Nothing is committed: the images are written once into the demo's work folder.
Each is shrunk with the MATLAB-exact bicubic (the degradation the models are trained
for), so they are realistic low-resolution inputs and quick to upscale.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from sr.io import save_image
from sr.resize import imresize

# (label, file name, skimage.data function, shrink factor, treat as high-resolution original)
EXAMPLES = (
    ("astronaut (as HR original)", "astronaut.png", "astronaut", 2, True),
    ("coffee", "coffee.png", "coffee", 3, False),
    ("chelsea", "chelsea.png", "chelsea", 2, False),
    ("logo with alpha", "logo_rgba.png", "logo", 3, False),
)


def example_rows(folder: Path) -> tuple[list[list], list[str]]:
    """([[path, ground_truth], ...], labels) for gr.Examples; images are made when missing."""
    import skimage.data

    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for _, name, source, shrink, ground_truth in EXAMPLES:
        path = folder / name
        if not path.is_file():
            pixels = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, source)()))
            small = imresize(pixels.permute(2, 0, 1), scale=1 / shrink).permute(1, 2, 0)
            save_image(Image.fromarray(small.numpy()), path)
        rows.append([str(path), ground_truth])
    return rows, [label for label, *_ in EXAMPLES]
