"""Standard SR benchmark sets in the conventional folder layout.

``<root>/<Set>/HR/<name>.png`` holds the ground truth; ``<root>/<Set>/LR_bicubic/X<s>/
<name>x<s>.png``, when present, the MATLAB-made LR images. Missing (or inconsistent)
LR images are generated with the MATLAB-exact ``sr.resize.imresize`` (protocol step 2),
and every image records which was used (``lr_source``: "provided" or "generated").

Data root: the ``data_root`` argument (CLI ``--data-root``), else ``$SR_DATA_ROOT``,
else the shared benchmarks folder (``sr.paths.benchmarks_root()``), else the folder
``python -m eval.download`` extracts to.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from eval.cache import cache_home
from sr.errors import DatasetError
from sr.paths import benchmarks_root
from sr.resize import imresize, modcrop

DATA_ROOT_ENV = "SR_DATA_ROOT"
IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".ppm")


@dataclass(frozen=True)
class DatasetSpec:
    name: str            # folder name under the data root
    n_images: int        # size of the published set (a different count is warned about)
    description: str
    aliases: tuple[str, ...] = ()


DATASETS: dict[str, DatasetSpec] = {s.name: s for s in (
    DatasetSpec("Set5", 5, "Bevilacqua et al. 2012"),
    DatasetSpec("Set14", 14, "Zeyde et al. 2010 (bridge is grayscale)"),
    DatasetSpec("B100", 100, "Berkeley segmentation test images (Martin et al. 2001)",
                ("BSD100", "BSDS100")),
    DatasetSpec("Urban100", 100, "Huang et al. 2015, buildings"),
    DatasetSpec("Manga109", 109, "Matsui et al. 2017, comic pages"),
    DatasetSpec("DIV2K_valid", 100, "DIV2K validation images 0801-0900 (Agustsson & Timofte 2017)",
                ("DIV2K", "DIV2K_val", "DIV2K-valid", "DIV2K100")),
)}

_ALIASES = {k.lower(): spec.name for spec in DATASETS.values() for k in (spec.name, *spec.aliases)}


def resolve_name(name: str, root: Path | None = None) -> str:
    """Canonical set name for ``name`` (case-insensitive, aliases allowed).

    A name outside the registry is accepted as a custom set when ``<root>/<name>/HR``
    exists; otherwise DatasetError lists the known names.
    """
    canonical = _ALIASES.get(name.lower())
    if canonical is not None:
        return canonical
    if root is not None and (Path(root) / name / "HR").is_dir():
        return name
    known = ", ".join(f"{s.name}" + (f" (alias {', '.join(s.aliases)})" if s.aliases else "")
                      for s in DATASETS.values())
    where = f", and no folder {Path(root) / name / 'HR'}" if root is not None else ""
    raise DatasetError(f"unknown dataset {name!r}{where}; known sets: {known}")


def find_data_root(data_root: str | os.PathLike | None = None) -> Path:
    """The benchmark data folder (see the module docstring for the order)."""
    if data_root is not None:
        return Path(data_root).expanduser()
    env = os.environ.get(DATA_ROOT_ENV)
    if env:
        return Path(env).expanduser()
    candidates = [p for p in (benchmarks_root(), download_root()) if p is not None]
    for path in candidates:
        if path.is_dir():
            return path
    raise DatasetError("no benchmark data folder found (looked at "
                       + ", ".join(str(p) for p in candidates)
                       + f"); pass --data-root DIR, set {DATA_ROOT_ENV}, or run `python -m eval.download`")


def download_root() -> Path:
    """Where `python -m eval.download` extracts benchmark sets."""
    return cache_home() / "benchmarks"


@dataclass
class BenchmarkImage:
    name: str                 # file stem, e.g. "baby"
    hr: torch.Tensor          # uint8 (3, H, W), modcropped; grayscale expanded to R = G = B
    lr: torch.Tensor          # uint8 (3, H/s, W/s)
    lr_source: str            # "provided" or "generated"
    grayscale: bool


def _read_uint8(path: Path) -> tuple[torch.Tensor, bool]:
    """(uint8 (3, H, W) tensor, was grayscale) for an 8-bit image file; alpha is dropped."""
    from sr.io import bit_depth, read_image, to_numpy

    img = read_image(path)
    if bit_depth(img) != 8:
        raise DatasetError(f"{path} has {bit_depth(img)}-bit samples; the evaluation protocol "
                           "is defined on 8-bit images")
    arr = to_numpy(img)
    gray = arr.ndim == 2 or arr.shape[-1] == 2
    arr = arr if arr.ndim == 3 else arr[..., None]
    planes = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)))
    # A grayscale image is R = G = B (protocol step 5).
    rgb = planes[:1].expand(3, -1, -1) if gray else planes[:3]
    return rgb.contiguous(), gray


class Benchmark:
    """One benchmark set at one scale: a sized iterable of BenchmarkImage, loaded lazily."""

    def __init__(self, name: str, scale: int, root: str | os.PathLike | None = None):
        self.root = find_data_root(root)
        self.name = resolve_name(name, self.root)
        self.scale = int(scale)
        self.hr_dir = self.root / self.name / "HR"
        self.lr_dir = self.root / self.name / "LR_bicubic" / f"X{self.scale}"
        if not self.hr_dir.is_dir():
            raise DatasetError(f"dataset {self.name} not found: looked for the folder {self.hr_dir}; "
                               f"pass --data-root DIR or set {DATA_ROOT_ENV} to the folder that "
                               f"holds {self.name}/HR, or run `python -m eval.download`")
        self.hr_paths = sorted(p for p in self.hr_dir.iterdir()
                               if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if not self.hr_paths:
            raise DatasetError(f"dataset {self.name}: no images in {self.hr_dir}")
        spec = DATASETS.get(self.name)
        if spec is not None and len(self.hr_paths) != spec.n_images:
            warnings.warn(f"{self.name}: {len(self.hr_paths)} images in {self.hr_dir}, the published "
                          f"set has {spec.n_images}; means are not comparable with papers", stacklevel=2)

    def __len__(self) -> int:
        return len(self.hr_paths)

    def __iter__(self) -> Iterator[BenchmarkImage]:
        for path in self.hr_paths:
            yield self.load(path)

    def lr_path(self, hr_path: Path) -> Path:
        return self.lr_dir / f"{hr_path.stem}x{self.scale}.png"

    def fingerprint(self) -> str:
        """Changes when any HR or LR file of this set and scale is added, removed or resized."""
        h = hashlib.sha256()
        for path in self.hr_paths:
            lr = self.lr_path(path)
            lr_size = lr.stat().st_size if lr.is_file() else -1
            h.update(f"{path.name}:{path.stat().st_size}:{lr_size}\n".encode())
        return h.hexdigest()[:16]

    def load(self, hr_path: Path) -> BenchmarkImage:
        s = self.scale
        hr, gray = _read_uint8(hr_path)
        hr = modcrop(hr, s)
        h, w = hr.shape[-2:]
        if h < s or w < s:
            raise DatasetError(f"{hr_path}: {w}x{h} is too small for x{s}")
        lr_file = self.lr_path(hr_path)
        if lr_file.is_file():
            lr, _ = _read_uint8(lr_file)
            if tuple(lr.shape[-2:]) == (h // s, w // s):
                return BenchmarkImage(hr_path.stem, hr, lr, "provided", gray)
            warnings.warn(f"{lr_file} is {lr.shape[-1]}x{lr.shape[-2]}, expected "
                          f"{w // s}x{h // s} (modcropped HR / {s}); generating the LR image "
                          "with MATLAB-exact bicubic instead", stacklevel=2)
        lr = imresize(hr, scale=1 / s)
        return BenchmarkImage(hr_path.stem, hr, lr, "generated", gray)


def load_benchmark(name: str, scale: int, root: str | os.PathLike | None = None) -> Benchmark:
    """The set ``name`` at ``scale`` (raises DatasetError when missing or unknown)."""
    return Benchmark(name, scale, root)
