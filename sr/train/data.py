"""Training data: HR folders (or paired LR/HR folders) -> deterministic random patches.

Sample ``k`` of a run (``k = step * batch + i``) is a pure function of (seed, k): the
image comes from a per-epoch permutation, the crop and the flip/rotation from a
generator seeded with (seed, k). So the data order does not depend on workers, ranks
or restarts, and a resumed run reads exactly the samples an uninterrupted run reads.

For on-the-fly LR the loader yields uint8 HR crops only (the trainer downsamples them
on its device, see ``sr.train.degrade``). The crop carries ``margin`` extra LR pixels of
real image context on each side (mirrored at the image border, as MATLAB pads), so the
LR patch cut from its centre equals the same pixels of the whole image's LR.
"""
from __future__ import annotations

import os
import random
import signal
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from sr.errors import DatasetError

IMAGE_SUFFIXES = (".png", ".bmp", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".ppm")


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DatasetError(f"training folder not found: {folder}; check data.root and data.hr_dirs")
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not paths:
        raise DatasetError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return paths


def resolve_dirs(dirs: Sequence[str], root: str | os.PathLike | None) -> list[Path]:
    """Folders as given when absolute, else under ``root`` (default: the shared train folder)."""
    if root is None:
        from sr.paths import train_root
        root = train_root()
    out = []
    for d in dirs:
        p = Path(d).expanduser()
        if not p.is_absolute():
            if root is None:
                raise DatasetError(f"relative training folder {d!r} but no data.root and no shared "
                                   "data folder; set data.root or give absolute paths")
            p = Path(root) / p
        out.append(p)
    return out


def read_rgb(path: Path) -> np.ndarray:
    """uint8 (H, W, 3) RGB array of an image file (grayscale becomes R = G = B)."""
    from sr.io import read_image

    # Training data is the user's own: no pixel limit (DIV2K-size and larger images are normal).
    return np.ascontiguousarray(np.asarray(read_image(path, max_pixels=None).convert("RGB")))


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return im.size[1], im.size[0]
    except OSError as e:
        raise DatasetError(f"cannot read training image {path}: {e}") from None


class ImageBank:
    """Training images as uint8 (H, W, 3) arrays.

    Decoded once into memory while the total stays under ``cache_mb``; the rest is
    decoded from disk at each use (so a large set works, only slower).
    """

    def __init__(self, paths: Sequence[Path], cache_mb: float, progress: bool = True):
        self.paths = list(paths)
        self.sizes = [image_size(p) for p in self.paths]
        self.cache: dict[int, np.ndarray] = {}
        running_bytes = np.cumsum([h * w * 3 for h, w in self.sizes])
        todo = [i for i in range(len(self.paths)) if running_bytes[i] <= cache_mb * 2**20]
        for i in tqdm(todo, desc="decoding training images", unit="img", disable=not progress,
                      leave=False):
            self.cache[i] = read_rgb(self.paths[i])
        self.cached_mb = sum(a.nbytes for a in self.cache.values()) / 2**20

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        img = self.cache.get(i)
        return img if img is not None else read_rgb(self.paths[i])


def _mirror(start: int, length: int, n: int) -> np.ndarray:
    """Indices start..start+length-1 folded into [0, n) by symmetric (edge-repeating)
    reflection, MATLAB's 'symmetric' padding."""
    idx = np.arange(start, start + length) % (2 * n)
    return np.where(idx < n, idx, 2 * n - 1 - idx)


def _augment(arrays: list[np.ndarray], code: int) -> list[np.ndarray]:
    """One of the 8 flips/rotations (bit 0: h-flip, bit 1: v-flip, bit 2: transpose)."""
    out = []
    for a in arrays:
        if code & 4:
            a = a.transpose(1, 0, 2)
        if code & 1:
            a = a[:, ::-1]
        if code & 2:
            a = a[::-1]
        out.append(a)
    return out


def _to_tensor(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))


class PatchDataset(Dataset):
    """Sample ``k`` -> uint8 HR crop (3, (patch + 2 margin) s, ...), or with ``lr_bank``
    an (LR, HR) pair of patches (no margin: the LR is given)."""

    def __init__(self, hr_bank: ImageBank, scale: int, patch: int, seed: int,
                 augment: bool = True, margin: int = 0, lr_bank: ImageBank | None = None):
        self.hr, self.lr = hr_bank, lr_bank
        self.scale, self.patch, self.seed = scale, patch, seed
        self.augment, self.margin = augment, 0 if lr_bank is not None else margin
        # Images too small for one patch are left out (T91 has 78x78 images).
        self.usable = [i for i, (h, w) in enumerate(hr_bank.sizes) if min(h, w) >= patch * scale]
        if not self.usable:
            raise DatasetError(f"every training image is smaller than the HR patch "
                               f"({patch * scale} px = data.patch {patch} x scale {scale}); "
                               "lower data.patch")
        if lr_bank is not None:
            self._check_pairs()
        self._epoch, self._order = -1, np.empty(0, dtype=np.int64)

    def _check_pairs(self) -> None:
        s = self.scale
        if len(self.lr) != len(self.hr):
            raise DatasetError(f"{len(self.lr)} LR images but {len(self.hr)} HR images; "
                               "data.lr_dirs must pair one LR image with each HR image")
        for i, ((h, w), (lh, lw)) in enumerate(zip(self.hr.sizes, self.lr.sizes)):
            if (lh, lw) != (h // s, w // s):
                raise DatasetError(f"{self.lr.paths[i]} is {lw}x{lh} but its HR image "
                                   f"{self.hr.paths[i]} is {w}x{h}; expected {w // s}x{h // s} at x{s}")

    def order(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            rng = np.random.default_rng([self.seed, epoch, 0x5EED])
            self._epoch, self._order = epoch, rng.permutation(self.usable)
        return self._order

    def __getitem__(self, k: int):
        epoch, pos = divmod(int(k), len(self.usable))
        i = int(self.order(epoch)[pos])
        rng = np.random.default_rng([self.seed, int(k)])
        s, p, m = self.scale, self.patch, self.margin
        img = self.hr[i]
        h, w = img.shape[:2]  # as decoded (EXIF rotation may swap the header's sides)
        h, w = h - h % s, w - w % s  # the LR grid of the modcropped image
        ly = int(rng.integers(0, h // s - p + 1))
        lx = int(rng.integers(0, w // s - p + 1))
        code = int(rng.integers(0, 8)) if self.augment else 0
        if self.lr is not None:
            hr = img[ly * s:(ly + p) * s, lx * s:(lx + p) * s]
            lr = self.lr[i][ly:ly + p, lx:lx + p]
            lr, hr = _augment([lr, hr], code)
            return _to_tensor(lr), _to_tensor(hr)
        y0, x0, side = (ly - m) * s, (lx - m) * s, (p + 2 * m) * s
        if 0 <= y0 and y0 + side <= h and 0 <= x0 and x0 + side <= w:
            hr = img[y0:y0 + side, x0:x0 + side]
        else:  # at the border: mirror, as MATLAB pads the whole image
            hr = img[np.ix_(_mirror(y0, side, h), _mirror(x0, side, w))]
        return _to_tensor(_augment([hr], code)[0])


class StepBatchSampler(Sampler[list[int]]):
    """The sample indices of this rank for steps ``start .. stop-1``.

    Step t holds samples ``t * batch .. (t + 1) * batch - 1``; rank r of ``world`` takes
    the r-th contiguous share, so any number of ranks reads the same global batch.
    """

    def __init__(self, batch: int, start: int, stop: int, rank: int = 0, world: int = 1):
        if batch % world:
            raise DatasetError(f"data.batch {batch} is not divisible by the {world} processes")
        self.batch, self.start, self.stop = batch, start, stop
        self.local = batch // world
        self.offset = rank * self.local

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start, self.stop):
            base = step * self.batch + self.offset
            yield list(range(base, base + self.local))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def _seed_worker(worker_id: int) -> None:
    # Ctrl-C is the main process's to handle (it checkpoints, then ends the workers).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Samples use their own generators; this only makes stray numpy/random use reproducible.
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def build_loader(dataset: PatchDataset, batch: int, start: int, stop: int, seed: int,
                 workers: int, rank: int = 0, world: int = 1, pin_memory: bool = False) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=StepBatchSampler(batch, start, stop, rank, world),
        num_workers=workers,
        pin_memory=pin_memory,
        worker_init_fn=_seed_worker if workers else None,
        # Its own generator, so the workers' base seed never touches the global torch RNG.
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )


def build_dataset(cfg: dict, scale: int, margin: int, progress: bool = True) -> PatchDataset:
    """The PatchDataset a recipe's ``data`` section describes."""
    d = cfg["data"]
    hr_paths = [p for folder in resolve_dirs(d["hr_dirs"], d["root"]) for p in find_images(folder)]
    hr_bank = ImageBank(hr_paths, d["cache_mb"], progress)
    lr_bank = None
    if d["lr_dirs"]:
        lr_paths = [p for folder in resolve_dirs(d["lr_dirs"], d["root"]) for p in find_images(folder)]
        lr_bank = ImageBank(lr_paths, max(0.0, d["cache_mb"] - hr_bank.cached_mb), progress)
    return PatchDataset(hr_bank, scale, d["patch"], cfg["train"]["seed"], d["augment"], margin, lr_bank)
