"""The shipped weights reproduce the committed tables, and the README shows those tables."""
from pathlib import Path

import pandas as pd
import pytest

from eval import evaluate
from sr.checkpoints import bundled_weights, read_metadata

ROOT = Path(__file__).resolve().parent.parent
# The models each committed table must list (bicubic is the baseline row).
TABLES = {
    "zoo_x4": {"bicubic", "espcn", "fsrcnn", "srcnn", "srresnet", "srgan", "edsr_baseline"},
    "zoo_x3": {"bicubic", "espcn", "fsrcnn", "srcnn", "edsr_baseline"},
    "zoo_x2": {"bicubic", "espcn", "fsrcnn", "srcnn", "edsr_baseline"},
}


def test_every_bundled_file_has_provenance_and_scores():
    files = bundled_weights()
    assert files, "no bundled weights in weights/"
    for arch, scale, path in files:
        meta = read_metadata(path)
        assert meta["arch"] == arch and meta["scale"] == scale
        assert meta["provenance"].get("steps") and meta["provenance"].get("command")
        assert meta["eval"]["Set5"]["scale"] == scale
    assert sum(p.stat().st_size for _, _, p in files) < 60e6


@pytest.mark.parametrize("folder", sorted(TABLES))
def test_shipped_models_reproduce_summary_on_set5(folder, benchmarks_dir):
    summary = pd.read_csv(ROOT / "results" / folder / "summary.csv")
    scale = int(folder[-1])
    rows = summary[(summary["dataset"] == "Set5") & (summary["scale"] == scale)]
    assert TABLES[folder] <= set(rows["model"])
    df = evaluate(list(rows["model"]), ["Set5"], [scale], data_root=benchmarks_dir, cache=False,
                  progress=False)
    got = df.groupby("model")[["psnr_y", "ssim_y"]].mean()
    for r in rows.itertuples():
        assert got.loc[r.model, "psnr_y"] == pytest.approx(r.psnr_y, abs=0.01), r.model
        assert got.loc[r.model, "ssim_y"] == pytest.approx(r.ssim_y, abs=5e-4), r.model


@pytest.mark.parametrize("folder", sorted(TABLES))
def test_readme_shows_the_committed_tables(folder):
    readme = (ROOT / "README.md").read_text()
    summary = pd.read_csv(ROOT / "results" / folder / "summary.csv")
    for r in summary.itertuples():
        assert f"{r.psnr_y:.2f} / {r.ssim_y:.4f}" in readme, (r.model, r.scale, r.dataset)


def test_demo_offers_and_runs_every_shipped_file():
    """`python app.py` serves all shipped weights from the repository, no download."""
    import torch

    from demo.model_cache import ModelCache, catalogue

    offered = catalogue()
    cache = ModelCache(maxsize=1, device="cpu")
    for arch, scale, path in bundled_weights():
        assert offered[arch][scale] == path
        model = cache.get(arch, scale)
        with torch.inference_mode():
            out = model(torch.rand(1, 3, 12, 10))
        assert out.shape == (1, 3, 12 * scale, 10 * scale), (arch, scale)
