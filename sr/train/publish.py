"""Ship a trained checkpoint as bundled weights, with its benchmark scores in the metadata.

    python -m sr.train.publish runs/fsrcnn_x4_cpu/final.safetensors \
        [--datasets Set5,Set14] [--weights-dir weights] [--half] [--command "..."]

Evaluates the checkpoint with the paper protocol (``eval.evaluate``, exact fp32), then
writes ``<weights-dir>/<arch>_x<scale>.safetensors`` with the training provenance kept
and ``eval`` set to the measured means. ``--half`` stores fp16 and refuses to ship if
Set5 moves by 0.01 dB or more.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sr.checkpoints import load_model, read_metadata, save_checkpoint, weights_dir
from sr.errors import SRError

HALF_TOLERANCE_DB = 0.01


def _scores(model, datasets: list[str], data_root: str | None) -> dict:
    from eval import evaluate  # heavy import, only when publishing

    df = evaluate({model.arch: model}, datasets, [model.scale], data_root=data_root,
                  cache=False, progress=False)
    if df["psnr_y"].isna().any():
        raise SRError(f"evaluation failed on some images: {df['error'].dropna().iloc[0]}")
    means = df.groupby("dataset")[["psnr_y", "ssim_y"]].mean()
    return {name: {"scale": model.scale, "psnr": round(float(row.psnr_y), 4),
                   "ssim": round(float(row.ssim_y), 4)} for name, row in means.iterrows()}


def publish(checkpoint: str, datasets: list[str], out_dir=None, half: bool = False,
            command: str | None = None, data_root: str | None = None):
    model = load_model(checkpoint)
    meta = read_metadata(checkpoint)
    provenance = dict(meta.get("provenance") or {})
    if command:  # a hand-written record of the whole training replaces the recorded one
        provenance["command"] = command
        provenance.pop("resumed_with", None)
        provenance.pop("history", None)
    scores = _scores(model, datasets, data_root)
    target = (out_dir or weights_dir()) / f"{model.arch}_x{model.scale}.safetensors"
    save_checkpoint(model, target, {"provenance": provenance, "eval": scores}, half=half)
    if half and "Set5" in scores:
        shipped = _scores(load_model(target), ["Set5"], data_root)["Set5"]["psnr"]
        if abs(shipped - scores["Set5"]["psnr"]) >= HALF_TOLERANCE_DB:
            target.unlink()
            raise SRError(f"fp16 storage moves Set5 by {shipped - scores['Set5']['psnr']:+.4f} dB; "
                          "ship it without --half")
    return target, scores


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sr.train.publish", description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("--datasets", default="Set5,Set14")
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--half", action="store_true", help="store fp16 (checked on Set5)")
    ap.add_argument("--command", default=None,
                    help="the whole training record as text, replacing the command, resumes and history "
                         "the trainer recorded (for weights made before the trainer recorded them)")
    args = ap.parse_args(argv)
    try:
        target, scores = publish(args.checkpoint, args.datasets.split(","),
                                 Path(args.weights_dir) if args.weights_dir else None,
                                 args.half, args.command, args.data_root)
    except SRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, s in scores.items():
        print(f"{name} x{s['scale']}: {s['psnr']:.2f} / {s['ssim']:.4f} (Y)")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
