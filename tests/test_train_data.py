"""Training data: deterministic patches, exact on-the-fly LR, sharding, caching, degradations."""
import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr.errors import DatasetError
from sr.resize import imresize, modcrop
from sr.train.config import DEFAULTS
from sr.train.data import ImageBank, PatchDataset, StepBatchSampler, build_loader, find_images
from sr.train.degrade import LRMaker, context_margin


def write_images(folder: Path, sizes, seed: int = 0) -> list[Path]:
    """Smooth random RGB images (upsampled noise: textured like photos, unlike white noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i, (h, w) in enumerate(sizes):
        coarse = (rng.random((h // 6 + 2, w // 6 + 2, 3)) * 255).astype(np.uint8)
        img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
        paths.append(folder / f"img{i:02d}.png")
        img.save(paths[-1])
    return paths


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hr")
    write_images(folder, [(50, 61), (64, 64), (37, 90), (72, 45)])
    return ImageBank(find_images(folder), cache_mb=10, progress=False)


def _dataset(bank, scale=2, patch=8, seed=0, **kw):
    return PatchDataset(bank, scale, patch, seed, margin=kw.pop("margin", context_margin(scale, DEFAULTS["degrade"])), **kw)


def test_samples_are_a_function_of_seed_and_index(bank):
    a, b = _dataset(bank), _dataset(bank)
    for k in (0, 5, 17, 1000):
        assert torch.equal(a[k], b[k])
    assert not torch.equal(a[3], _dataset(bank, seed=1)[3])
    # every image appears once per epoch (4 usable images -> samples 0..3 cover all)
    assert sorted(int(i) for i in a.order(0)) == [0, 1, 2, 3]


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_patch_equals_the_whole_image_lr(bank, scale):
    """The on-the-fly LR (margin crop -> imresize -> centre) is the MATLAB LR of the whole
    image at that place, border patches included; checked through the sampler's draws."""
    patch = 6
    margin = context_margin(scale, DEFAULTS["degrade"])
    ds = _dataset(bank, scale, patch, augment=False, margin=margin)
    maker = LRMaker(scale, DEFAULTS["degrade"], "exact", margin, seed=0, batch=24)
    ks = list(range(24))
    lr, hr = maker(torch.stack([ds[k] for k in ks]), step=0)
    for row, k in enumerate(ks):
        epoch, pos = divmod(k, len(ds.usable))
        img = modcrop(torch.from_numpy(bank[int(ds.order(epoch)[pos])].copy()).permute(2, 0, 1), scale)
        full_lr = imresize(img, scale=1 / scale)
        hr8 = (hr[row] * 255).round().to(torch.uint8)
        # locate the HR patch in the image, then compare the LR at the same place
        hits = [(y, x) for y in range(0, img.shape[1] - patch * scale + 1, scale)
                for x in range(0, img.shape[2] - patch * scale + 1, scale)
                if torch.equal(img[:, y:y + patch * scale, x:x + patch * scale], hr8)]
        assert hits, "the HR patch is not an aligned crop of its image"
        y, x = hits[0]
        ref = full_lr[:, y // scale:y // scale + patch, x // scale:x // scale + patch]
        assert torch.equal((lr[row] * 255).round().to(torch.uint8), ref)


def test_batches_split_over_ranks_like_one_process():
    one = list(StepBatchSampler(8, start=3, stop=6))
    r0 = list(StepBatchSampler(8, 3, 6, rank=0, world=2))
    r1 = list(StepBatchSampler(8, 3, 6, rank=1, world=2))
    assert [a + b for a, b in zip(r0, r1)] == one
    assert one[0] == list(range(24, 32))
    with pytest.raises(DatasetError, match="not divisible"):
        StepBatchSampler(6, 0, 1, world=4)


def test_workers_do_not_change_the_data(bank):
    ds = _dataset(bank)
    plain = list(build_loader(ds, 4, start=2, stop=6, seed=0, workers=0))
    parallel = list(build_loader(ds, 4, start=2, stop=6, seed=0, workers=2))
    assert len(plain) == 4
    assert all(torch.equal(a, b) for a, b in zip(plain, parallel))


def test_cache_bound(bank):
    uncached = ImageBank(bank.paths, cache_mb=0, progress=False)
    partly = ImageBank(bank.paths, cache_mb=0.02, progress=False)  # ~20 KB: the first image only
    assert uncached.cache == {} and sorted(partly.cache) == [0]
    assert torch.equal(_dataset(uncached)[7], _dataset(bank)[7])


def test_small_images_are_skipped(tmp_path):
    small = ImageBank(write_images(tmp_path / "s", [(20, 20), (40, 40)]), 10, progress=False)
    assert _dataset(small, scale=4, patch=6).usable == [1]  # 24-px patch: only 40x40 fits
    with pytest.raises(DatasetError, match="smaller than the HR patch"):
        _dataset(small, scale=4, patch=12)


def test_paired_folders(tmp_path):
    hr_paths = write_images(tmp_path / "hr", [(48, 64), (40, 40)])
    (tmp_path / "lr").mkdir()
    for p in hr_paths:
        hr = torch.from_numpy(np.asarray(Image.open(p)).copy()).permute(2, 0, 1)
        lr = imresize(hr, scale=1 / 2)
        Image.fromarray(lr.permute(1, 2, 0).numpy()).save(tmp_path / "lr" / f"{p.stem}x2.png")
    hr_bank = ImageBank(hr_paths, 10, progress=False)
    lr_bank = ImageBank(find_images(tmp_path / "lr"), 10, progress=False)
    plain = PatchDataset(hr_bank, 2, 8, seed=0, lr_bank=lr_bank, augment=False)
    augmented = PatchDataset(hr_bank, 2, 8, seed=0, lr_bank=lr_bank)
    for k in range(6):
        lr, hr = plain[k]
        assert lr.shape == (3, 8, 8) and hr.shape == (3, 16, 16)
        # the pair is aligned: away from the patch border, the LR is the HR's MATLAB LR
        assert torch.equal(imresize(hr, scale=1 / 2)[:, 2:-2, 2:-2], lr[:, 2:-2, 2:-2])
        # flips/rotations move both alike (a transpose swaps MATLAB's pass order, so
        # its rounding between passes may differ by one level)
        lr, hr = augmented[k]
        diff = imresize(hr, scale=1 / 2)[:, 2:-2, 2:-2].int() - lr[:, 2:-2, 2:-2].int()
        assert diff.abs().max() <= 1
    (tmp_path / "lr" / "img01x2.png").unlink()
    with pytest.raises(DatasetError, match="1 LR images but 2 HR images"):
        PatchDataset(hr_bank, 2, 8, 0, lr_bank=ImageBank(find_images(tmp_path / "lr"), 10, progress=False))


def _degrade(**on):
    cfg = copy.deepcopy(DEFAULTS["degrade"])
    for name, opts in on.items():
        cfg[name].update(opts)
    return cfg


@pytest.mark.parametrize("name, opts", [
    ("blur", {"prob": 1.0, "sigma": [1.0, 2.0]}),
    ("noise", {"prob": 1.0, "sigma": [5.0, 10.0]}),
    ("jpeg", {"prob": 1.0, "quality": [20, 40]}),
    ("blur", {"prob": 1.0, "at": "after"}),
    ("noise", {"prob": 1.0, "at": "before"}),
])
def test_degradations_are_seeded_by_step_and_shard_like_one_process(bank, name, opts):
    cfg = _degrade(**{name: opts})
    margin = context_margin(2, cfg)
    ds = _dataset(bank, margin=margin)
    hr = torch.stack([ds[k] for k in range(4)])
    clean, _ = LRMaker(2, DEFAULTS["degrade"], "float", margin, 0, 4)(hr, step=5)
    maker = LRMaker(2, cfg, "float", margin, 0, 4)
    lr, _ = maker(hr, step=5)
    assert (lr - clean).abs().mean() > 1e-3, "the degradation changed nothing"
    assert torch.equal(lr, maker(hr, step=5)[0])
    assert not torch.equal(lr, maker(hr, step=6)[0])
    # rank 1 of 2 degrades its half of the batch exactly as one process does
    half, _ = LRMaker(2, cfg, "float", margin, 0, 4, offset=2)(hr[2:], step=5)
    assert torch.equal(half, lr[2:])
    assert torch.equal(lr, (lr * 255).round() / 255)  # an 8-bit LR image


def test_float_resize_is_within_one_grey_level_of_exact(bank):
    margin = context_margin(4, DEFAULTS["degrade"])
    ds = _dataset(bank, scale=4, patch=6, margin=margin)
    hr = torch.stack([ds[k] for k in range(4)])
    exact, _ = LRMaker(4, DEFAULTS["degrade"], "exact", margin, 0, 4)(hr, 0)
    fast, _ = LRMaker(4, DEFAULTS["degrade"], "float", margin, 0, 4)(hr, 0)
    assert (exact - fast).abs().max() <= 1 / 255 + 1e-6
