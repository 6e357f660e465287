"""``python -m eval``: evaluate models on benchmark sets and write paper-style tables."""
from __future__ import annotations

import argparse
import sys

from sr.errors import SRError


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _scales(text: str) -> list[int]:
    try:
        return [int(t) for t in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"scales must be integers like 2,3,4, not {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m eval",
        description="PSNR/SSIM (Y channel, paper protocol) of SR models on benchmark sets.",
        epilog="Models: registry names (bundled weights at each scale, or 'bicubic') or "
               "checkpoint files (.safetensors, or third-party .pth). Datasets: Set5, Set14, "
               "B100 (BSD100), Urban100, Manga109, DIV2K_valid (DIV2K), or any folder <root>/<name>/HR.")
    p.add_argument("--models", type=_csv, default=[], help="comma-separated names or checkpoint paths")
    p.add_argument("--datasets", type=_csv, default=["Set5", "Set14"], help="comma-separated (default Set5,Set14)")
    p.add_argument("--scales", type=_scales, default=[4], help="comma-separated (default 4)")
    p.add_argument("--data-root", help="folder holding <Set>/HR (default: $SR_DATA_ROOT, then the shared data)")
    p.add_argument("--out", default="eval-results", help="output folder (default ./eval-results)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when available)")
    p.add_argument("--ensemble", action="store_true", help="self-ensemble (8 flips/rotations), the '+' rows")
    p.add_argument("--no-cache", action="store_true", help="recompute everything (and refresh the cache)")
    p.add_argument("--cache-dir", help="result cache folder (default ~/.cache/sr-workbench/eval)")
    p.add_argument("--lpips", action="store_true",
                   help="add an LPIPS column (AlexNet weights: run `python -m eval.lpips_weights` once)")
    p.add_argument("--published-bicubic", action="store_true",
                   help="add the bicubic row as papers print it (SRCNN-era Y-only pipeline; "
                        "see eval/published_bicubic.py) next to the protocol rows")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.models and not args.published_bicubic:
        parser.error("give --models (and/or --published-bicubic)")
    import pandas as pd

    from eval.published_bicubic import published_bicubic_row
    from eval.runner import evaluate
    from eval.tables import summarize, to_markdown, write_outputs

    try:
        df = evaluate(args.models, args.datasets, args.scales, data_root=args.data_root,
                      device=args.device, ensemble=args.ensemble, cache=not args.no_cache,
                      cache_dir=args.cache_dir, progress=not args.quiet, lpips=args.lpips)
        if args.published_bicubic:
            notes = df.attrs.get("notes", [])
            extra = published_bicubic_row(args.datasets, args.scales, args.data_root)
            df = pd.concat([extra, df] if args.models else [extra], ignore_index=True)
            df.attrs["notes"] = notes + ["bicubic (published pipeline): the SRCNN-era Y-only "
                                         "pipeline of the published bicubic row; its SSIM is over "
                                         "the whole image (eval/published_bicubic.py)"]
    except SRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    paths = write_outputs(df, args.out)
    print(to_markdown(summarize(df), df.attrs.get("notes", [])))
    print("wrote " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    failed = int((df["error"].fillna("") != "").sum())
    if failed:
        print(f"{failed} of {len(df)} image evaluations failed; see the error column of "
              f"{paths['per_image.csv']}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
