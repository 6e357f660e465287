"""Start an RCAN from a trained EDSR-baseline of the same scale (``init.from`` for sr.train).

    python -m sr.train.rcan_from_edsr weights/edsr_baseline_x4.safetensors runs/rcan_x4_init.safetensors

Why: RCAN has 15.6M parameters and needs ~1M steps from scratch; on a CPU budget it
ends far below the 1.5M-parameter EDSR-baseline. Both share the frame (mean shifts,
head conv, global skip, upsampler, last conv) and an RCAB without its attention is an
EDSR block, so RCAN can start where EDSR-baseline stands (a Net2Net-style widening of
depth) and spend its training on what the extra blocks add.

The mapping (exact except for the last body conv):
- head, upsampler, last conv: copied;
- group 1: its first 16 RCABs carry EDSR's 16 blocks; channel attention starts as a
  constant gate of 0.5 (its last 1x1 conv zeroed: sigmoid(0) = 0.5), compensated by
  doubling the block's second conv; its last 4 RCABs start as identities (second conv
  zeroed); its tail conv is EDSR's body conv, so group 1 outputs EDSR's feature map F;
- groups 2-10: tail conv zeroed, so each starts as an identity, its RCABs keep their
  random initialisation (gradients reach them once the tail conv moves off zero);
- the body's last conv: RCAN adds its global skip (the head output h) to it, EDSR has
  already added h inside F, so it must map F to F - h. No conv does that exactly; it is
  fitted by ridge least squares on EDSR features of training images (the fitting error
  is ~0.5% of the target's energy; Set5 x4 moves by about -0.02 dB).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from sr.checkpoints import load_model, save_checkpoint
from sr.errors import SRError
from sr.models import create_model
from sr.resize import imresize
from sr.train.data import find_images, read_rgb, resolve_dirs
from sr.train.trainer import _history_of

GATE_AT_ZERO = 0.5  # sigmoid(0): the attention gate once its last conv is zeroed


@torch.no_grad()
def embed(edsr: torch.nn.Module, **rcan_hparams):
    """An RCAN (default size unless ``rcan_hparams`` say otherwise) whose blocks reproduce
    ``edsr``; the body's last conv is left for :func:`fit_last_conv`."""
    n_blocks = len(edsr.body) - 1
    rcan = create_model("rcan", edsr.scale, n_feats=edsr.head[0].out_channels, **rcan_hparams)
    if rcan.rgb_range != edsr.rgb_range:
        raise ValueError(f"rgb_range differs: EDSR {edsr.rgb_range}, RCAN {rcan.rgb_range}")
    group1 = rcan.body[0].body
    if n_blocks > len(group1) - 1:
        raise ValueError(f"EDSR has {n_blocks} blocks; RCAN's first group holds {len(group1) - 1}")
    if any(getattr(b, "res_scale", 1) != 1 for b in edsr.body[:-1]):
        raise ValueError("only EDSR-baseline (residual scale 1) maps onto RCAB blocks")
    rcan.head.load_state_dict(edsr.head.state_dict())
    rcan.tail.load_state_dict(edsr.tail.state_dict())
    for k, rcab in enumerate(group1[:-1]):
        body = rcab.body  # conv, relu, conv, channel attention
        if k < n_blocks:
            src = edsr.body[k].body
            body[0].load_state_dict(src[0].state_dict())
            body[2].weight.copy_(src[2].weight / GATE_AT_ZERO)
            body[2].bias.copy_(src[2].bias / GATE_AT_ZERO)
            body[3].conv_du[2].weight.zero_()
            body[3].conv_du[2].bias.zero_()
        else:
            body[2].weight.zero_()
            body[2].bias.zero_()
    group1[-1].load_state_dict(edsr.body[-1].state_dict())
    for group in rcan.body[1:-1]:
        group.body[-1].weight.zero_()
        group.body[-1].bias.zero_()
    return rcan


def _lr_images(paths: list[Path], scale: int, n: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for i in torch.randperm(len(paths), generator=g)[:n].tolist():
        hr = torch.from_numpy(read_rgb(paths[i]).copy()).permute(2, 0, 1).float().div(255).unsqueeze(0)
        h, w = hr.shape[-2:]
        hr = hr[..., : h - h % scale, : w - w % scale]
        yield imresize(hr, scale=1 / scale).clamp(0, 1)


@torch.no_grad()
def fit_last_conv(rcan, edsr, lr_images, samples_per_image: int, seed: int, ridge: float = 1e-3):
    """Least-squares 3x3 conv from EDSR's F to F - h, written into RCAN's last body conv."""
    g = torch.Generator().manual_seed(seed)
    xs, ts = [], []
    for lr in lr_images:
        h = edsr.head(edsr.sub_mean(lr * edsr.rgb_range))
        target = edsr.body(h)
        cols = F.unfold(h + target, 3, padding=1)[0].T  # (pixels, 64*3*3), the conv weight's order
        pick = torch.randperm(cols.shape[0], generator=g)[:samples_per_image]
        xs.append(cols[pick])
        ts.append(target[0].flatten(1).T[pick])
    x = torch.cat(xs).double()
    x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    t = torch.cat(ts).double()
    gram = x.T @ x
    gram += ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=x.dtype)
    sol = torch.linalg.solve(gram, x.T @ t)
    residual = float((t - x @ sol).pow(2).mean() / t.pow(2).mean())
    last = rcan.body[-1]
    last.weight.copy_(sol[:-1].T.reshape(last.weight.shape).float())
    last.bias.copy_(sol[-1].float())
    return residual


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sr.train.rcan_from_edsr", description=__doc__.split("\n")[0])
    p.add_argument("edsr", help="trained EDSR-baseline checkpoint (.safetensors)")
    p.add_argument("out", help="RCAN checkpoint to write, for sr.train's init.from")
    p.add_argument("--data", default="T91,BSD200", help="training folders for the fit (comma-separated)")
    p.add_argument("--data-root", default=None, help="folder the --data names are under (default: the shared train folder)")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--samples", type=int, default=8000, help="feature vectors per image")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    torch.manual_seed(a.seed)  # the random RCABs of groups 2-10
    t0 = time.perf_counter()
    try:
        edsr = load_model(a.edsr).float().eval()
        if getattr(edsr, "arch", "") != "edsr_baseline":
            raise SRError(f"{a.edsr} is {getattr(edsr, 'arch', 'not an own checkpoint')}, not edsr_baseline")
        rcan = embed(edsr).eval()
        paths = [q for d in resolve_dirs(a.data.split(","), a.data_root) for q in find_images(d)]
        residual = fit_last_conv(rcan, edsr, _lr_images(paths, edsr.scale, a.images, a.seed), a.samples,
                                 a.seed)
    except (SRError, ValueError) as e:  # a wrong file or folder: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    command = "python -m sr.train.rcan_from_edsr " + " ".join(argv if argv is not None else sys.argv[1:])
    save_checkpoint(rcan, a.out, {"provenance": {
        "init": "rcan_from_edsr", "edsr": str(a.edsr), "command": command,
        "fit_relative_residual": residual, "wall_time_s": round(time.perf_counter() - t0, 1),
        "history": _history_of(a.edsr)}})
    print(f"wrote {a.out} (last conv fit: relative residual {residual:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
