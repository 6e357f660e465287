"""Summaries of per-image results and paper-style tables (Markdown, LaTeX, HTML).

A summary cell is the mean over the images of a set. When any image of a set failed,
the cell is NaN (shown as "–"): a mean over a subset is not comparable with papers.
"""
from __future__ import annotations

import html
import math
from pathlib import Path

import pandas as pd

from eval.cache import atomic_write_text
from eval.metrics import METRIC_COLUMNS, PROTOCOL_VERSION
from eval.runner import FLOPS_OUTPUT_SIZE

MISSING = "–"
KEYS = ["model", "scale", "dataset"]


def _present_metrics(df: pd.DataFrame) -> list[str]:
    return [c for c in (*METRIC_COLUMNS, "lpips") if c in df.columns]


def _first(values) -> float:
    values = [v for v in values if not pd.isna(v)]
    return values[0] if values else math.nan


def _joined(values) -> str:
    return ", ".join(sorted({str(v) for v in values if isinstance(v, str) and v}))


def summarize(per_image: pd.DataFrame) -> pd.DataFrame:
    """Mean per (model, scale, dataset), same metric column names, plus images, failed,
    seconds (mean per image), s_per_mp (seconds per output megapixel), params, gmacs,
    lr_source, tiles (max), device and error."""
    rows = []
    errors = per_image["error"].fillna("").astype(str)
    for (model, scale, dataset), g in per_image.groupby(KEYS, sort=False):
        err = errors.loc[g.index]
        failed = int((err != "").sum())
        row = {"model": model, "scale": scale, "dataset": dataset}
        for c in _present_metrics(per_image):
            row[c] = g[c].mean() if failed == 0 else math.nan
        messages = list(dict.fromkeys(e for e in err if e))
        row.update(
            seconds=g["seconds"].mean(), images=len(g), failed=failed,
            # seconds per output megapixel: the speed figure that does not depend on the set
            s_per_mp=(g["seconds"].sum() / g["megapixels"].sum()
                      if "megapixels" in g and failed == 0 and g["megapixels"].notna().all()
                      else math.nan),
            params=_first(g["params"]), gmacs=_first(g["gmacs"]),
            lr_source=_joined(g["lr_source"]), tiles=g["tiles"].max(), device=_joined(g["device"]),
            error="; ".join(messages[:1]) + (f" (and {len(messages) - 1} other errors)"
                                               if len(messages) > 1 else ""))
        rows.append(row)
    return pd.DataFrame(rows)


def _format_speed(sub: pd.DataFrame) -> str:
    """Seconds per output megapixel over all sets of a row, with the device."""
    if "s_per_mp" not in sub or sub["s_per_mp"].isna().all():
        return MISSING
    return f"{sub['s_per_mp'].mean():.3g} ({_joined(sub['device'])})"


def _format_params(n: float) -> str:
    if pd.isna(n):
        return MISSING
    if n >= 1e6:
        return f"{n / 1e6:.2f}M"
    if n >= 1e3:
        return f"{n / 1e3:.0f}K"
    return f"{int(n)}"


def _format_gmacs(g: float) -> str:
    if pd.isna(g):
        return MISSING
    return f"{g:.0f}" if g >= 100 else f"{g:.1f}" if g >= 1 else f"{g:.2f}"


def _cell(row: pd.Series | None, psnr: str, ssim: str) -> str:
    if row is None or pd.isna(row[psnr]) or pd.isna(row[ssim]):
        return MISSING
    return f"{row[psnr]:.2f} / {row[ssim]:.4f}"


def paper_table(summary: pd.DataFrame, channel: str = "y") -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the paper-style table: one row per model and scale, one
    "PSNR / SSIM" column per dataset. ``channel``: "y" (the papers' numbers) or "rgb"."""
    psnr, ssim = f"psnr_{channel}", f"ssim_{channel}"
    datasets = list(dict.fromkeys(summary["dataset"]))
    header = ["Method", "Scale", "Params", "GMACs", *datasets, "s/MP"]
    body = []
    order = summary[["model", "scale"]].drop_duplicates()
    order = order.assign(_s=order["scale"]).sort_values("_s", kind="stable")
    for model, scale in zip(order["model"], order["scale"]):
        sub = summary[(summary["model"] == model) & (summary["scale"] == scale)]
        by_set = {r["dataset"]: r for _, r in sub.iterrows()}
        gmacs = _first(sub["gmacs"])
        body.append([str(model), f"x{scale}", _format_params(_first(sub["params"])),
                     _format_gmacs(gmacs),
                     *[_cell(by_set.get(d), psnr, ssim) for d in datasets],
                     _format_speed(sub)])
    return header, body


def notes(summary: pd.DataFrame, extra: list[str] | tuple = ()) -> list[str]:
    """Footnotes: protocol, FLOPs size, generated LR, failures, unavailable metrics."""
    h, w = FLOPS_OUTPUT_SIZE
    out = [f"PSNR (dB) / SSIM on the Y channel (BT.601), border of `scale` pixels cropped, "
           f"SR output quantised to uint8 (evaluation protocol v{PROTOCOL_VERSION}).",
           f"GMACs: multiply-accumulates for one {w}x{h} output image."]
    generated = sorted({f"{r.dataset} x{r.scale}" for r in summary.itertuples()
                        if "generated" in str(r.lr_source)})
    if generated:
        out.append("LR images generated with MATLAB-exact bicubic (no consistent LR files): "
                   + ", ".join(generated) + ".")
    tiled = sorted({f"{r.model} x{r.scale} on {r.dataset}" for r in summary.itertuples()
                    if not pd.isna(r.tiles) and r.tiles > 1})
    if tiled:
        out.append("Tiled inference (memory) for: " + ", ".join(tiled) + "; see the tiles column.")
    for r in summary.itertuples():
        if r.failed:
            out.append(f"{MISSING} {r.model} x{r.scale} on {r.dataset}: {r.failed} of {r.images} "
                       f"images failed: {r.error}")
    out += list(extra)
    return out


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def _md_table(header: list[str], body: list[list[str]], left: int, right: int = 0) -> str:
    """Markdown table: ``left`` left-aligned columns, then ``right`` right-aligned, the rest centred."""
    align = ["---"] * left + ["---:"] * right + [":---:"] * (len(header) - left - right)
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in body]
    return "\n".join(lines)


# Headings of table.md's second and third tables; eval/readme_sync.py splits the file on them.
RGB_HEADING = "RGB PSNR / SSIM (all three channels; not comparable with published Y-channel numbers):"
LPIPS_HEADING = "LPIPS (v0.1, AlexNet; RGB, border of `scale` pixels cropped; lower is closer):"


def to_markdown(summary: pd.DataFrame, extra_notes=()) -> str:
    def table(channel):
        return _md_table(*paper_table(summary, channel), left=2, right=2)

    parts = [table("y"), "", *[f"- {n}" for n in notes(summary, extra_notes)], "",
             RGB_HEADING,
             "", table("rgb")]
    if "lpips" in summary and summary["lpips"].notna().any():
        parts += ["", LPIPS_HEADING, "",
                  _md_table(*lpips_table(summary), left=2)]
    return "\n".join(parts) + "\n"


def lpips_table(summary: pd.DataFrame) -> tuple[list[str], list[list[str]]]:
    """(header, rows): one row per model and scale, the mean LPIPS of each dataset."""
    datasets = list(dict.fromkeys(summary["dataset"]))
    body = []
    for (model, scale), sub in summary.groupby(["model", "scale"], sort=False):
        by_set = {r["dataset"]: r["lpips"] for _, r in sub.iterrows()}
        body.append([str(model), f"x{scale}", *[MISSING if pd.isna(by_set.get(d, math.nan))
                                                  else f"{by_set[d]:.4f}" for d in datasets]])
    return ["Method", "Scale", *datasets], body


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#",
                  "_": r"\_", "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                  MISSING: "--"}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(summary: pd.DataFrame) -> str:
    header, body = paper_table(summary, "y")
    cols = "ll" + "rr" + "c" * (len(header) - 4)
    lines = [r"\begin{tabular}{" + cols + "}", r"\hline",
             " & ".join(_latex_escape(h) for h in header) + r" \\", r"\hline"]
    lines += [" & ".join(_latex_escape(c) for c in row) + r" \\" for row in body]
    lines += [r"\hline", r"\end{tabular}"]
    caption = _latex_escape(notes(summary)[0])
    return "% " + caption + "\n" + "\n".join(lines) + "\n"


def to_html(summary: pd.DataFrame, extra_notes=()) -> str:
    header, body = paper_table(summary, "y")
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>\n"
                   for row in body)
    foot = "".join(f"<li>{html.escape(n)}</li>" for n in notes(summary, extra_notes))
    return (f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{rows}</tbody>\n</table>\n"
            f"<ul>{foot}</ul>\n")


def write_outputs(per_image: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """Write per_image.csv, summary.csv, table.md, table.tex and table.html (atomically)."""
    out_dir = Path(out_dir)
    summary = summarize(per_image)
    extra = per_image.attrs.get("notes", [])
    texts = {
        "per_image.csv": per_image.to_csv(index=False),
        "summary.csv": summary.to_csv(index=False),
        "table.md": to_markdown(summary, extra),
        "table.tex": to_latex(summary),
        "table.html": to_html(summary, extra),
    }
    return {name: atomic_write_text(out_dir / name, text) for name, text in texts.items()}
