"""Training throughput of the real training step (data loader, LR synthesis on the device,
forward, backward, optimiser) for EDSR-baseline x4 and RCAN x4.

For each model it runs the loop twice in one process: as the trainer runs it by default
(AMP bf16/fp16 and channels_last on a GPU; torch.compile with --compile [MODE]) and as plain
fp32 NCHW without AMP (PyTorch's defaults otherwise), and prints iterations/s,
images/s, the share of the wall time spent waiting for the data loader, achieved
model TFLOP/s and, on a known GPU, the model FLOP utilisation (MFU: forward FLOPs x 3
per step over the GPU's dense bf16 peak), the operators the host dispatches per step
with the step time per operator, and on a GPU the share of the step time its kernels run
("GPU busy"; the last two from one profiled step, not timed).

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


def profile_step(trainer: Trainer, batch, step: int) -> tuple[int, float | None]:
    """One profiled training step: the PyTorch operators the host dispatches, backward
    included (outermost aten calls only), and on a GPU the seconds its kernels ran.

    The two tell what bounds the step. Kernel time near the step time: the GPU is busy,
    and only cheaper maths (AMP) or fewer, larger kernels help. Kernel time well below it:
    the GPU waits for the host, and the step time per operator is the eager dispatch
    cost (~10 us); fusing (torch.compile) or CUDA graphs (compile mode reduce-overhead)
    help, AMP cannot."""
    from torch.profiler import ProfilerActivity, profile

    cuda = trainer.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=activities) as prof:
        trainer.train_step(batch, step)
        sync(trainer.device)

    def is_aten(event) -> bool:
        return event is not None and event.name.startswith("aten::")
    ops = sum(1 for e in prof.events() if is_aten(e) and not is_aten(e.cpu_parent))
    if not cuda:
        return ops, None
    # Each kernel's time is "self" device time of exactly one entry, so the sum counts it once.
    kernel_us = sum(avg.self_device_time_total for avg in prof.key_averages())
    return ops, kernel_us / 1e6


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
        ops, kernel_s = profile_step(trainer, next(loader), warmup)
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
                "gpu_busy": None if kernel_s is None else kernel_s * steps / wall,
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
    p.add_argument("--compile", nargs="?", const="default", default=None, metavar="MODE",
                   help="torch.compile the optimised configuration (MODE: default, reduce-overhead "
                        "for CUDA graphs too, max-autotune, ...)")
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
        fast = "compiled" if args.compile else "default"
        modes = {fast: [f"train.amp={args.amp}", f"train.channels_last={args.channels_last}",
                             f"train.compile={args.compile or 'false'}"],
                 "plain fp32": ["train.amp=off", "train.channels_last=false", "train.compile=false"]}
        print(f"{'model':<18} {'mode':<11} {'amp':<9} {'NHWC':<5} {'it/s':>8} {'img/s':>9} "
              f"{'data wait':>9} {'TFLOP/s':>8} {'MFU':>6} {'ops/step':>8} {'us/op':>6} {'GPU busy':>8}")
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
                      f"{r['ops']:8d} {r['us_per_op']:6.1f} "
                      + (f"{100 * r['gpu_busy']:7.1f}%" if r["gpu_busy"] is not None else f"{'-':>8}"))
            speedup = results[fast]["it_s"] / results["plain fp32"]["it_s"]
            print(f"{'':<18} speed-up of the {fast} step over plain fp32 NCHW: {speedup:.2f}x")
        dev = results[fast]["device"]
        if dev.type == "cuda":
            # "Plain fp32" is PyTorch's default: on a GPU, cuDNN already runs convolutions in TF32.
            where = (f"{torch.cuda.get_device_name(dev)} (cuDNN TF32 convolutions "
                     f"{'on' if torch.backends.cudnn.allow_tf32 else 'off'} in plain fp32)"
                     + (f"; compile mode {args.compile}" if args.compile else ""))
        else:
            where = f"CPU, {args.threads or torch.get_num_threads()} threads"
            if args.amp in ("auto", "off") and args.channels_last in ("auto", "false"):
                where += (" (AMP and channels_last are off on the CPU by default, so both rows run the same "
                          "step; --amp bf16 --channels-last true measures the bf16 path)")
        print(f"device: {where}; batch {args.batch}, LR patch {args.patch}, {args.steps} timed steps "
              f"after {args.warmup} warm-up steps, {args.workers} loader workers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
