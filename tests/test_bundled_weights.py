"""The shipped weights reproduce the committed tables, and the README shows those tables."""
import re
from pathlib import Path

import pandas as pd
import pytest

from eval import evaluate
from eval.readme_sync import sync
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


def test_readme_tables_are_the_committed_ones():
    """Every generated block of the README equals its table.md (`python -m eval.readme_sync`)."""
    text = (ROOT / "README.md").read_text()
    _, stale = sync(text)
    assert not stale, f"README out of date for {stale}: run python -m eval.readme_sync"
    for folder in TABLES:
        assert f"<!-- from results/{folder}/table.md (y);" in text, folder


_ROW_NAME = re.compile(r"^(\w+) x(\d)(?: / x(\d))?$")
_FIGURES = re.compile(r"^(?:Set5 x\d: )?\**(\d+\.\d\d)\**(?: / \**(\d+\.\d\d)\**)?(?=\W|$)")


def _prose_set5_figures(path: Path, column: str):
    """(model, scale, figure) from the hand-written training table whose header ends in ``column``."""
    lines = path.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| model |") and line.endswith(f"| {column} |"))
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        name, figures = _ROW_NAME.match(cells[0]), _FIGURES.match(cells[-1])
        if name and figures:
            for scale, value in zip(filter(None, name.groups()[1:]), filter(None, figures.groups())):
                yield name[1], int(scale), float(value)


@pytest.mark.parametrize("doc,column", [("README.md", "Set5 measured"), ("docs/MODEL_ZOO.md", "measured")])
def test_training_tables_quote_the_committed_set5_scores(doc, column):
    """The prose tables of training budgets quote Set5 by hand; they must match summary.csv."""
    scores = pd.concat([pd.read_csv(ROOT / "results" / f / "summary.csv") for f in TABLES])
    scores = scores[scores["dataset"] == "Set5"].set_index(["model", "scale"])["psnr_y"]
    checked = 0
    for model, scale, value in _prose_set5_figures(ROOT / doc, column):
        if (model, scale) in scores.index:  # rows of models that are not shipped quote their runs
            assert value == round(scores[(model, scale)], 2), (doc, model, scale)
            checked += 1
    assert checked >= 6, f"found only {checked} Set5 figures in {doc}"


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
