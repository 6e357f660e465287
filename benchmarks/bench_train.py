"""Training throughput of the real training step (data loader, LR synthesis on the device,
forward, backward, optimiser) for EDSR-baseline x4 and RCAN x4.

For each model it runs the loop twice in one process: as the trainer runs it by default
(AMP bf16/fp16 and channels_last on a GPU; torch.compile with --compile) and as plain
fp32 NCHW without AMP (PyTorch's defaults otherwise), and prints iterations/s,
images/s, the share of the wall time spent waiting for the data loader, achieved
model TFLOP/s and, on a known GPU, the model FLOP utilisation (MFU: forward FLOPs x 3
per step over the GPU's dense bf16 peak), and the operators the host dispatches per step
with the step time per operator (one profiled step, not timed).

    python benchmarks/bench_train.py                      # GPU: batch 16, LR patch 48
    python benchmarks/bench_train.py --steps 6 --warmup 2 --batch 4 --patch 24   # quick CPU run
    python benchmarks/bench_train.py --amp bf16 --channels-last true ...          # CPU bf16 step

Training images: --data-root/--hr-dirs, else the shared T91+BSD200, else synthetic images
written to a temporary folder.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sr.paths import PROJECT_ROOT, train_root  # noqa: E402
from sr.train.config import load_config  # noqa: E402
from sr.train.trainer import Trainer  # noqa: E402

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100 SXM": 989.0, "H100 NVL": 835.0, "H100 PCIe": 756.0, "H100": 756.0,
                    "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0,
                    "RTX 3090": 71.0, "V100": 125.0, "T4": 65.0}


def peak_tflops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for key, value in PEAK_BF16_TFLOPS.items():  # most specific names first
        if key in name:
            return value
    return None


def synthetic_images(folder: Path, n: int = 32, side: int = 480) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        coarse = (rng.random((side // 8, side // 8, 3)) * 255).astype(np.uint8)
        Image.fromarray(coarse).resize((side, side), Image.BICUBIC).save(folder / f"{i:03d}.png")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_flops_per_step(trainer: Trainer, batch) -> float:
    """Forward FLOPs of the model on one batch, x3 for forward + backward."""
    from torch.utils.flop_counter import FlopCounterMode

    lr, _ = trainer.inputs(batch, 0)
    counter = FlopCounterMode(display=False)
    with counter, trainer.autocast():
        trainer.forward(lr)
    return 3.0 * counter.get_total_flops()


def host_ops_per_step(trainer: Trainer, batch, step: int) -> int:
    """PyTorch operators the host dispatches for one training step, backward included
    (outermost aten calls only). When the step time divided by this count is near the
    ~10 us an eager op costs on the host, the GPU waits for Python and dispatch, not for
    maths: AMP cannot speed such a step up, fusing (torch.compile) can."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        trainer.train_step(batch, step)
    sync(trainer.device)

    def is_aten(event) -> bool:
        return event is not None and event.name.startswith("aten::")
    return sum(1 for e in prof.events() if is_aten(e) and not is_aten(e.cpu_parent))


def measure(recipe: Path, overrides: list[str], steps: int, warmup: int, run_dir: Path) -> dict:
    cfg = load_config(recipe, overrides + [f"train.steps={warmup + 1 + steps}"])
    trainer = Trainer(cfg, run_dir, resume=False, progress=False)
    try:
        dev = trainer.device
        loader = iter(trainer.make_loader(0))
        first = next(loader)
        flops = model_flops_per_step(trainer, first)
        trainer.train_step(first, 0)
        for i in range(1, warmup):
            trainer.train_step(next(loader), i)
        ops = host_ops_per_step(trainer, next(loader), warmup)
        sync(dev)
        wait = 0.0
        start = time.perf_counter()
        for i in range(warmup + 1, warmup + 1 + steps):
            t0 = time.perf_counter()
            batch = next(loader)
            wait += time.perf_counter() - t0
            trainer.train_step(batch, i)
        sync(dev)
        wall = time.perf_counter() - start
        batch_size = int(cfg["data"]["batch"])
        return {"it_s": steps / wall, "img_s": steps * batch_size / wall, "wait": wait / wall,
                "tflops": flops * steps / wall / 1e12, "device": dev,
                "ops": ops, "us_per_op": 1e6 * wall / steps / ops,
                "amp": str(trainer.amp_dtype).removeprefix("torch.") if trainer.amp_dtype else "off",
                "channels_last": trainer.channels_last}
    finally:
        trainer.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="edsr_baseline,rcan", help="recipes in configs/ (comma-separated)")
    p.add_argument("--scale", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--patch", type=int, default=48, help="LR patch side")
    p.add_argument("--steps", type=int, default=50, help="timed steps per configuration")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--workers", type=int, default=8, help="data loader workers")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    p.add_argument("--data-root", help="folder holding --hr-dirs")
    p.add_argument("--hr-dirs", default="T91,BSD200", help="comma-separated HR folders under --data-root")
    p.add_argument("--compile", action="store_true", help="torch.compile the optimised configuration")
    p.add_argument("--amp", default="auto", choices=["auto", "bf16", "fp16", "off"],
                   help="AMP of the optimised configuration (auto: the trainer's default; "
                        "bf16 measures the CPU's bf16 path)")
    p.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"],
                   help="memory format of the optimised configuration")
    p.add_argument("--peak-tflops", type=float, help="the device's peak TFLOP/s for MFU (default: known GPUs)")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.data_root) if args.data_root else train_root()
        dirs = args.hr_dirs.split(",")
        if root is None or not all((root / d).is_dir() for d in dirs):
            root, dirs = Path(tmp) / "data", ["synthetic"]
            synthetic_images(root / "synthetic")
            print(f"no training images found; using {root / 'synthetic'} (32 synthetic 480x480 images)")
        common = [f"model.scale={args.scale}", f"data.batch={args.batch}", f"data.patch={args.patch}",
                  f"data.root={root}", f"data.hr_dirs=[{','.join(dirs)}]", f"data.workers={args.workers}",
                  "init.from=null", "val.dataset=null", "train.ckpt_every=0", "train.ema=0",
                  f"train.threads={args.threads or 'null'}"]
        modes = {"default": [f"train.amp={args.amp}", f"train.channels_last={args.channels_last}",
                             f"train.compile={str(args.compile).lower()}"],
                 "plain fp32": ["train.amp=off", "train.channels_last=false", "train.compile=false"]}
        print(f"{'model':<18} {'mode':<11} {'amp':<9} {'NHWC':<5} {'it/s':>8} {'img/s':>9} "
              f"{'data wait':>9} {'TFLOP/s':>8} {'MFU':>6} {'ops/step':>8} {'us/op':>6}")
        for name in args.models.split(","):
            recipe = PROJECT_ROOT / "configs" / f"{name}.yaml"
            results = {}
            for mode, extra in modes.items():
                r = measure(recipe, common + extra, args.steps, args.warmup, Path(tmp) / f"{name}-{len(results)}")
                results[mode] = r
                peak = args.peak_tflops or peak_tflops(r["device"])
                mfu = f"{100 * r['tflops'] / peak:5.1f}%" if peak else "    -"
                print(f"{name + f' x{args.scale}':<18} {mode:<11} {r['amp']:<9} {str(r['channels_last']):<5} "
                      f"{r['it_s']:8.2f} {r['img_s']:9.1f} {100 * r['wait']:8.1f}% {r['tflops']:8.3f} {mfu:>6} "
                      f"{r['ops']:8d} {r['us_per_op']:6.1f}")
            speedup = results["default"]["it_s"] / results["plain fp32"]["it_s"]
            print(f"{'':<18} speed-up of the default step over plain fp32 NCHW: {speedup:.2f}x")
        dev = results["default"]["device"]
        same = dev.type != "cuda" and args.amp in ("auto", "off") and args.channels_last in ("auto", "false")
        where = (torch.cuda.get_device_name(dev) if dev.type == "cuda" else
                 f"CPU, {args.threads or torch.get_num_threads()} threads" +
                 (" (AMP and channels_last are off on the CPU by default, so both rows run the same step; "
                  "--amp bf16 --channels-last true measures the bf16 path)" if same else ""))
        print(f"device: {where}; batch {args.batch}, LR patch {args.patch}, {args.steps} timed steps "
              f"after {args.warmup} warm-up steps, {args.workers} loader workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
