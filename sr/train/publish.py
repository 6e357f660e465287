"""Ship a trained checkpoint as bundled weights, with its benchmark scores in the metadata.

    python -m sr.train.publish runs/fsrcnn_x4_cpu/final.safetensors \
        [--datasets Set5,Set14] [--weights-dir weights] [--half] [--command "..."]

Evaluates the checkpoint with the paper protocol (``eval.evaluate``, exact fp32), then
writes ``<weights-dir>/<arch>_x<scale>.safetensors`` with the training provenance kept
and ``eval`` set to the measured means. ``--half`` stores fp16, records the scores of the
fp16 file (the fp32 ones and the Set5 change stay in the provenance), and refuses to ship,
writing nothing, if Set5 moves by 0.01 dB or more.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import torch

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
    return {name: {"scale": model.scale, "psnr": float(row.psnr_y), "ssim": float(row.ssim_y)}
            for name, row in means.iterrows()}


def _rounded(scores: dict) -> dict:
    return {name: {**s, "psnr": round(s["psnr"], 4), "ssim": round(s["ssim"], 4)} for name, s in scores.items()}


def _through_fp16(model):
    """The model as loading its fp16 file gives it back (fp16 values, fp32 tensors), without a file."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        for t in model.state_dict().values():  # shares storage with the parameters and buffers
            if t.is_floating_point():
                t.copy_(t.half().float())
    return model


def publish(checkpoint: str, datasets: list[str], out_dir=None, half: bool = False,
            command: str | None = None, data_root: str | None = None):
    """Write the bundled file; returns (path, scores of the file as shipped, Set5 change from
    fp16 storage in dB or None). With ``half``, nothing is written when fp16 moves Set5 by
    ``HALF_TOLERANCE_DB`` or more, so a shipped file is never lost to a refused one."""
    model = load_model(checkpoint)
    meta = read_metadata(checkpoint)
    provenance = dict(meta.get("provenance") or {})
    if command:  # a hand-written record of the whole training replaces the recorded one
        provenance["command"] = command
        provenance.pop("resumed_with", None)
        provenance.pop("history", None)
    provenance.pop("fp16_storage", None)  # a record of an earlier publication, not of this one
    scores = _scores(model, datasets, data_root)
    change = None
    if half:
        scores_fp32, scores = scores, _scores(_through_fp16(model), datasets, data_root)
        if "Set5" in scores:
            change = scores["Set5"]["psnr"] - scores_fp32["Set5"]["psnr"]
            if abs(change) >= HALF_TOLERANCE_DB:
                raise SRError(f"fp16 storage moves Set5 by {change:+.4f} dB; ship it without --half")
        # the file's eval holds what it scores; the run file's fp32 scores stay on record
        provenance["fp16_storage"] = {"fp32_eval": _rounded(scores_fp32),
                                      "set5_psnr_change_db": None if change is None else round(change, 5)}
    target = (out_dir or weights_dir()) / f"{model.arch}_x{model.scale}.safetensors"
    scores = _rounded(scores)
    save_checkpoint(model, target, {"provenance": provenance, "eval": scores}, half=half)
    return target, scores, change


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
        target, scores, change = publish(args.checkpoint, args.datasets.split(","),
                                 Path(args.weights_dir) if args.weights_dir else None,
                                 args.half, args.command, args.data_root)
    except SRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    for name, s in scores.items():
        print(f"{name} x{s['scale']}: {s['psnr']:.2f} / {s['ssim']:.4f} (Y)")
    if change is not None:
        print(f"fp16 storage moves Set5 by {change:+.5f} dB (the scores above are the fp16 file's)")
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
