"""Benchmarks tab: the shipped evaluation results, plots of them, and evaluating on demand."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from sr.errors import DatasetError

TABLE_COLUMNS = ("model", "scale", "dataset", "psnr_y", "ssim_y", "params", "gmacs", "seconds")


def load_results(results_dir: Path) -> pd.DataFrame:
    """Every `summary.csv` under `results_dir`, stacked, with a `source` column (empty if none)."""
    frames = []
    for path in sorted(Path(results_dir).glob("**/summary.csv")):
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError, pd.errors.ParserError):
            continue  # a half-written or foreign CSV must not take the tab down
        if {"model", "scale", "dataset", "psnr_y"} <= set(frame.columns):
            frames.append(frame.assign(source=str(path.parent.relative_to(results_dir))))
    if not frames:
        return pd.DataFrame(columns=[*TABLE_COLUMNS, "source"])
    return pd.concat(frames, ignore_index=True)


def results_table(results: pd.DataFrame) -> pd.DataFrame:
    """The columns people compare, rounded as papers print them, best first per set."""
    cols = [c for c in (*TABLE_COLUMNS, "source") if c in results.columns]
    table = results[cols].copy()
    for col, digits in (("psnr_y", 2), ("ssim_y", 4), ("gmacs", 1), ("seconds", 3)):
        if col in table:
            table[col] = pd.to_numeric(table[col], errors="coerce").round(digits)
    from eval.datasets import DATASETS

    order = {name: i for i, name in enumerate(DATASETS)}  # Set5, Set14, B100, ... as papers do
    table["_set"] = table["dataset"].map(lambda d: order.get(d, len(order)))
    table = table.sort_values(["_set", "dataset", "scale", "psnr_y"],
                              ascending=[True, True, True, False], ignore_index=True)
    return table.drop(columns="_set")


def results_note(results: pd.DataFrame, results_dir: Path) -> str:
    if results.empty:
        return (f"**No evaluation results shipped yet** (no `summary.csv` under `{results_dir}`). "
                "Produce them with `python -m eval --models bicubic,<arch> --datasets Set5,Set14 "
                "--out results/<run>`, or evaluate a model below.")
    return (f"{len(results)} results from {results['source'].nunique()} evaluation run(s) under "
            f"`{results_dir}`. PSNR/SSIM on the Y channel with the papers' protocol.")


def plot_frame(results: pd.DataFrame, dataset: str | None, scale) -> pd.DataFrame:
    """Rows of one dataset and scale with numeric psnr_y / params / seconds, for the plots."""
    if results.empty:
        return pd.DataFrame(columns=["model", "psnr_y", "params", "seconds"])
    rows = results
    if dataset:
        rows = rows[rows["dataset"] == dataset]
    if scale:
        rows = rows[pd.to_numeric(rows["scale"], errors="coerce") == int(scale)]
    out = pd.DataFrame({"model": rows["model"].astype(str)})
    for col in ("psnr_y", "params", "seconds"):
        out[col] = pd.to_numeric(rows[col], errors="coerce") if col in rows else float("nan")
    return out.reset_index(drop=True)


def local_benchmarks() -> tuple[Path | None, list[str]]:
    """The benchmark data folder and the sets in it (folders with an HR subfolder)."""
    from eval.datasets import find_data_root

    try:
        root = find_data_root()
    except DatasetError:
        return None, []
    if not root.is_dir():
        return root, []
    return root, sorted(p.parent.name for p in root.glob("*/HR") if p.is_dir())


def evaluate_model(label: str, model, dataset: str, scale: int, data_root: Path,
                   progress: Callable[[int, int, str], Any] | None = None) -> tuple[str, pd.DataFrame]:
    """Protocol metrics of a loaded `model` on one local benchmark set (via eval.evaluate).

    Returns a one-line summary (Markdown) and the per-image table.
    """
    from eval import evaluate, summarize

    if not dataset:
        raise DatasetError("no benchmark set chosen; pick one from the list")
    per_image = evaluate({label: model}, [dataset], [scale], data_root=data_root,
                         progress=progress or False)
    row = summarize(per_image).iloc[0]
    if row["failed"]:
        text = (f"**{label}** x{scale} on {dataset}: {row['failed']} of {row['images']} "
                f"images failed: {row['error']}")
    else:
        text = (f"**{label}** x{scale} on {dataset} ({row['images']} images): "
                f"PSNR-Y **{row['psnr_y']:.2f} dB**, SSIM-Y **{row['ssim_y']:.4f}**, "
                f"{row['seconds']:.3f} s per image")
    cols = [c for c in ("image", "psnr_y", "ssim_y", "seconds", "lr_source", "error") if c in per_image]
    table = per_image[cols].copy()
    for col, digits in (("psnr_y", 2), ("ssim_y", 4), ("seconds", 3)):
        table[col] = pd.to_numeric(table[col], errors="coerce").round(digits)
    return text, table
