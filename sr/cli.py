"""``python -m sr``: upscale images, list models and bundled weights, export models."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sr.errors import SRError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except SRError as e:
        _error(str(e))
        return 1
    except KeyboardInterrupt:
        _error("interrupted; no partial output was written")
        return 130


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    from sr.export import FORMATS
    from sr.inference import ALPHA_MODES, PRECISIONS
    from sr.io import DEFAULT_MAX_PIXELS

    parser = argparse.ArgumentParser(prog="python -m sr", description="Image super-resolution workbench.")
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upscale", help="upscale images or folders of images")
    up.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    up.add_argument("-o", "--output", required=True, type=Path,
                    help="output folder (files named <stem>_x<S>.png), or an image path for a single input")
    up.add_argument("--model", required=True,
                    help="architecture (e.g. bicubic, edsr_baseline), bundled name (edsr_baseline_x4) or weights file")
    up.add_argument("--scale", type=int, help="upscaling factor (default: the checkpoint's)")
    up.add_argument("--tile", type=_positive_int, help="tile size in input pixels (default: from free memory)")
    up.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    up.add_argument("--precision", choices=PRECISIONS, default="auto")
    up.add_argument("--ensemble", action="store_true", help="average the 8 flips/rotations (8x slower)")
    up.add_argument("--alpha", choices=ALPHA_MODES, default="bicubic",
                    help="how to upscale transparency (default: bicubic)")
    up.add_argument("--max-pixels", type=_positive_int, default=DEFAULT_MAX_PIXELS,
                    help=f"refuse larger inputs (default: {DEFAULT_MAX_PIXELS})")
    up.set_defaults(run=_upscale)

    models = sub.add_parser("models", help="list architectures and bundled weights")
    models.set_defaults(run=_models)

    ex = sub.add_parser("export", help="export a model to TorchScript or ONNX (dynamic height/width)")
    ex.add_argument("checkpoint", help="weights file or model name, as for upscale --model")
    ex.add_argument("--format", required=True, choices=FORMATS)
    ex.add_argument("--scale", type=int, help="scale, for names that need one (e.g. bicubic)")
    ex.add_argument("-o", "--output", type=Path,
                    help="output file (default: <name>.torchscript.pt or <name>.onnx here)")
    ex.set_defaults(run=_export)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


# ---------------------------------------------------------------- upscale

def _collect_inputs(args: list[str]) -> tuple[list[Path], list[str]]:
    """Image files to process (folders expanded, sorted) and error messages for bad arguments."""
    images, errors = [], []
    for arg in args:
        path = Path(arg)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                errors.append(f"{path} contains no images ({', '.join(IMAGE_SUFFIXES)})")
            images += found
        elif path.exists():
            images.append(path)
        else:
            errors.append(f"{path} does not exist")
    return images, errors


def _plan_outputs(args_inputs: list[str], images: list[Path], output: Path, scale: int) -> list[Path]:
    single_file = len(args_inputs) == 1 and len(images) == 1 and not Path(args_inputs[0]).is_dir()
    if single_file and output.suffix.lower() in IMAGE_SUFFIXES and not output.is_dir():
        return [output]
    if output.exists() and not output.is_dir():
        raise SRError(f"output {output} is a file, but several images need an output folder")
    targets = [output / f"{img.stem}_x{scale}.png" for img in images]
    seen: dict[Path, Path] = {}
    for img, target in zip(images, targets):
        if target in seen:
            raise SRError(f"{seen[target]} and {img} would both be written to {target}; "
                          "upscale them in separate runs")
        seen[target] = img
    return targets


def _upscale(args) -> int:
    import torch
    from tqdm import tqdm

    from sr.checkpoints import load_model
    from sr.inference import upscale
    from sr.io import read_image, save_image

    images, failures = _collect_inputs(args.inputs)
    for message in failures:
        _error(message)
    if not images:
        return 1
    model = load_model(args.model, scale=args.scale, device=args.device)  # None: CUDA when available
    targets = _plan_outputs(args.inputs, images, args.output, model.scale)

    failed = len(failures)
    with tqdm(total=len(images), unit="image", desc="upscale", disable=None) as bar:
        for src, dst in zip(images, targets):
            tiles = None

            def progress(done, total):
                nonlocal tiles
                if tiles is None and total > 1:
                    tiles = tqdm(total=total, unit="tile", desc=src.name, leave=False, disable=None)
                if tiles is not None:
                    tiles.update(done - tiles.n)

            try:
                image = read_image(src, max_pixels=args.max_pixels)
                result = upscale(model, image, tile=args.tile, device=args.device, precision=args.precision,
                                 ensemble=args.ensemble, alpha=args.alpha, progress=progress)
                save_image(result, dst)
                tqdm.write(f"wrote {dst}")
            except SRError as e:
                failed += 1
                tqdm.write(f"error: {e}", file=sys.stderr)
            except torch.OutOfMemoryError:
                failed += 1
                tqdm.write(f"error: {src}: out of memory; use a smaller --tile or --device cpu", file=sys.stderr)
            finally:
                if tiles is not None:
                    tiles.close()
            bar.update(1)
    if failed:
        _error(f"{failed} of {len(images) + len(failures)} inputs failed")
        return 1
    return 0


# ---------------------------------------------------------------- models

def _models(args) -> int:
    from sr.checkpoints import bundled_weights, read_metadata, weights_dir
    from sr.models import list_models

    rows = [(m.name, ",".join(f"x{s}" for s in m.scales), f"{m.params_x4:,}",
             "Y" if m.y_channel else "RGB", m.description) for m in list_models()]
    print("Architectures:")
    _table(("name", "scales", "params@x4", "channels", "description"), rows)

    print(f"\nBundled weights ({weights_dir()}):")
    rows = []
    for arch, scale, path in bundled_weights():
        try:
            meta = read_metadata(path)
        except SRError as e:
            rows.append((path.name, f"x{scale}", "-", f"unreadable: {e}"))
            continue
        steps = (meta.get("provenance") or {}).get("steps", "-")
        rows.append((path.stem, f"x{meta.get('scale', scale)}", str(steps), _set5_text(meta.get("eval"))))
    if rows:
        _table(("name", "scale", "steps", "Set5 PSNR/SSIM (Y)"), rows)
    else:
        print("  none")
    return 0


def _set5_text(summary) -> str:
    """Set5 score from a checkpoint's ``eval`` field: ``{"Set5": {"psnr": .., "ssim": ..}}``."""
    score = (summary or {}).get("Set5") if isinstance(summary, dict) else None
    if isinstance(score, dict) and "psnr" in score:
        ssim = score.get("ssim")
        return f"{score['psnr']:.2f}" + (f" / {ssim:.4f}" if ssim is not None else "")
    if isinstance(score, (int, float)):
        return f"{score:.2f}"
    return "-"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths)).rstrip())


# ---------------------------------------------------------------- export

def _export(args) -> int:
    from sr.checkpoints import load_model
    from sr.export import SUFFIXES, export_model

    model = load_model(args.checkpoint, scale=args.scale)
    out = args.output
    if out is None:
        given = Path(args.checkpoint)
        stem = given.stem if given.is_file() else f"{model.arch}_x{model.scale}"
        out = Path(stem + (".torchscript" if args.format == "torchscript" else "") + SUFFIXES[args.format])
    if out.exists() and out.resolve() == Path(args.checkpoint).resolve():
        raise SRError(f"output {out} is the checkpoint itself; choose another -o")
    export_model(model, out, args.format)
    print(f"wrote {out} ({model.arch} x{model.scale}, {args.format}, dynamic height/width)")
    return 0
