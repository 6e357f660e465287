"""Benchmark the inference engine: speed, memory and accuracy of the fast path.

Prints markdown tables:

1. per model: seconds per output megapixel of the plain path (fp32, NCHW, `model(x)` on
   the whole image, as spandrel / BasicSR / Real-ESRGAN run it) and of `sr.inference.upscale`
   with precision="auto", the speed-up, the max |fast - fp32| of the clamped outputs in
   1/255 units, peak RSS and CUDA max allocated;
2. the ceiling: a chain of 64->64 3x3 convolutions alone, fp32 NCHW against the fast layout and
   precision (on a CPU with AVX512-BF16 but no AMX, bf16 has twice fp32's peak FLOPs, so
   a model made mostly of such convolutions cannot gain much more than this ratio);
3. tiled inference of a large input with RCAN: peak resident memory (target < 2 GB at
   1024x1024 x4);
4. tiling overhead against one whole-image pass (target <= 20% at 1 MP output).

Every measurement runs in its own subprocess so its peak RSS is clean. Random weights
and a noise input unless --bundled (trained weights) and --image (a real picture) are given.
Targets: fast >= 2.5x plain for edsr_baseline and rcan on a bf16-capable CPU, output
within 2/255 of fp32.

    python benchmarks/bench_inference.py --size 128 --models edsr_baseline,rcan
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from sr.checkpoints import load_model  # noqa: E402
from sr.inference import cpu_supports_bf16, pick_device, upscale_with_info  # noqa: E402
from sr.io import pil_to_tensor, read_image  # noqa: E402
from sr.models import MODELS, count_parameters, create_model  # noqa: E402


# ------------------------------------------------------------------- worker side

def _peaks(device: torch.device) -> dict:
    out = {"rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if device.type == "cuda":
        out["cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device(job: dict) -> torch.device:
    if job.get("threads"):
        torch.set_num_threads(job["threads"])
    return pick_device(job.get("device"))


def _setup(job: dict):
    device = _device(job)
    torch.manual_seed(0)
    if job.get("bundled"):
        model = load_model(job["model"], job["scale"]).eval()
    else:
        model = create_model(job["model"], job["scale"]).eval()
    size = job["size"]
    if job.get("image"):
        img = pil_to_tensor(read_image(job["image"]).convert("RGB"))
        h, w = img.shape[-2:]
        if min(h, w) < size:
            raise SystemExit(f"--image is {w}x{h}, smaller than --size {size}")
        top, left = (h - size) // 2, (w - size) // 2
        x = img[:, :, top:top + size, left:left + size].float().contiguous()
    else:
        x = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    return device, model, x


def _clock(job: dict):
    # CPU time (all threads of this process) is steadier than wall time on a shared machine.
    return time.process_time if job.get("clock") == "cpu" else time.perf_counter


def _timed(fn, device, job):
    clock, best, result = _clock(job), float("inf"), None
    for _ in range(job["repeat"]):
        _sync(device)
        start = clock()
        result = fn()
        _sync(device)
        best = min(best, clock() - start)
    return best, result


def _worker_speed(job: dict) -> dict:
    device, model, x = _setup(job)
    small = x[..., :32, :32]
    if job["path"] == "plain":
        model.to(device)

        def run(inp):
            with torch.inference_mode():
                return model(inp.to(device)).float().cpu()
    else:
        def run(inp):
            return upscale_with_info(model, inp, device=device, precision="auto")[0].cpu()
    run(small)  # the engine's one-off model probe
    run(x)  # untimed: oneDNN / cuDNN set up kernels for each new input shape
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    seconds, y = _timed(lambda: run(x), device, job)
    np.save(job["out"], y[0].clamp(0, 1).numpy())
    res = {"seconds": seconds}
    if job["path"] == "fast":
        res["info"] = {k: v for k, v in
                       upscale_with_info(model, small, device=device)[1].items()
                       if k in ("precision", "channels_last")}
    return res | _peaks(device)


def _worker_memory(job: dict) -> dict:
    device, model, x = _setup(job)
    clock = _clock(job)
    start = clock()
    y, info = upscale_with_info(model, x, device=device, precision="auto")
    seconds = clock() - start
    return {"seconds": seconds, "tile": info["tile"], "overlap": info["overlap"],
            "tiles": info["tiles"], "precision": info["precision"],
            "output": list(y.shape[-2:])} | _peaks(device)


def _worker_overhead(job: dict) -> dict:
    device, model, x = _setup(job)
    size = job["size"]
    variants = {"whole image (1 tile)": {"tile": size},
                "auto tile (default budget)": {},
                f"tile {size // 2}, default overlap": {"tile": size // 2},
                f"tile {size // 2}, overlap 16": {"tile": size // 2, "tile_overlap": 16},
                f"tile {size // 4}, default overlap": {"tile": size // 4}}
    upscale_with_info(model, x[..., :32, :32], device=device)  # start-up and probe
    best = {name: float("inf") for name in variants}
    clock = _clock(job)
    tiles = {}
    # Round 0 is untimed (kernel set-up per shape); rounds are interleaved so drifting
    # machine load hits all variants alike.
    for round_ in range(job["repeat"] + 1):
        for name, kw in variants.items():
            _sync(device)
            start = clock()
            _, info = upscale_with_info(model, x, device=device, **kw)
            _sync(device)
            if round_:
                best[name] = min(best[name], clock() - start)
            tiles[name] = (info["tiles"], info["tile"], info["overlap"], info["precision"])
    return {"seconds": best, "tiles": tiles}


def _worker_ceiling(job: dict) -> dict:
    """Eight 64 -> 64 3x3 conv + ReLU layers (what EDSR and RCAN are made of), alone."""
    device = _device(job)
    torch.manual_seed(0)
    size = job["size"]
    net = torch.nn.Sequential(*[layer for _ in range(8) for layer in
                                (torch.nn.Conv2d(64, 64, 3, padding=1), torch.nn.ReLU(inplace=True))])
    net = net.to(device).eval()
    x = torch.randn(1, 64, size, size, generator=torch.Generator().manual_seed(0)).to(device)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fast_dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
    variants = {"fp32 NCHW (plain)": (x, None), "fp32 channels_last": (x_cl, None),
                f"{str(fast_dtype)[6:]} channels_last (fast)": (x_cl, fast_dtype)}

    def run(inp, dtype):
        with torch.inference_mode(), torch.autocast(device.type, dtype=dtype or torch.float32,
                                                    enabled=dtype is not None):
            return net(inp)
    # A model keeps many large tensors alive, so glibc serves its buffers from a grown
    # heap; a short chain on a fresh heap would instead pay mmap and page faults for
    # every buffer (fp32 NCHW measured 1.7x slower that way). One larger pass first
    # puts the chain in the same state as a model.
    run(torch.randn(1, 64, 2 * size, 2 * size).to(device), None)
    out = {}
    for name, (inp, dtype) in variants.items():
        run(inp, dtype)
        out[name] = _timed(lambda: run(inp, dtype), device, job | {"repeat": max(job["repeat"], 3)})[0]
    return {"seconds": out, "gflop": 8 * 2 * 64 * 64 * 9 * size * size / 1e9}


WORKERS = {"speed": _worker_speed, "memory": _worker_memory, "overhead": _worker_overhead,
           "ceiling": _worker_ceiling}


# ------------------------------------------------------------------- parent side

def _spawn(job: dict, timeout: float | None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["?"]
        return {"error": tail[0][:120]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fmt(v, spec=".2f"):
    return "n/a" if v is None else format(v, spec)


def bench_speed(models, args, tmp: Path) -> None:
    out_mp = (args.size * args.scale) ** 2 / 1e6
    print(f"\n## Speed: {args.size}x{args.size} input at x{args.scale} "
          f"({out_mp:.2f} MP output), best of {args.repeat} alternating runs per path\n")
    print("| model | params | plain s/MP | fast s/MP | fast path | speed-up | "
          "max / mean abs diff (/255) | peak RSS plain / fast (MB) | CUDA max alloc plain / fast (MB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in models:
        runs: dict[str, list[dict]] = {"plain": [], "fast": []}
        # One timed run per process, the paths alternating: a load that comes and goes on
        # a shared machine then hits both paths alike. Best time, highest peak RSS.
        for _ in range(args.repeat):
            for path in runs:
                job = {"kind": "speed", "model": name, "scale": args.scale, "size": args.size,
                       "device": args.device, "path": path, "repeat": 1,
                       "threads": args.threads, "clock": args.clock,
                       "bundled": args.bundled, "image": args.image,
                       "out": str(tmp / f"{name}_{path}.npy")}
                runs[path].append(_spawn(job, args.timeout))
        res = {}
        for path, got in runs.items():
            failed = [r for r in got if "error" in r]
            res[path] = failed[0] if failed else min(got, key=lambda r: r["seconds"]) | {
                "rss_mb": max(r["rss_mb"] for r in got)}
        errors = [f"{p}: {r['error']}" for p, r in res.items() if "error" in r]
        params = count_parameters(create_model(name, args.scale))
        if errors:
            print(f"| {name} | {params:,} | " + "; ".join(errors) + " |||||||")
            continue
        plain, fast = res["plain"], res["fast"]
        diff = np.abs(np.load(tmp / f"{name}_fast.npy") - np.load(tmp / f"{name}_plain.npy"))
        mode = fast["info"]["precision"] + (" + channels_last" if fast["info"]["channels_last"]
                                            else "")
        cuda = (f"{plain['cuda_mb']:.0f} / {fast['cuda_mb']:.0f}" if "cuda_mb" in plain else "n/a")
        print(f"| {name} | {params:,} | {plain['seconds'] / out_mp:.3f} | "
              f"{fast['seconds'] / out_mp:.3f} | {mode} | "
              f"{plain['seconds'] / fast['seconds']:.2f}x | "
              f"{diff.max() * 255:.2f} / {diff.mean() * 255:.3f} | "
              f"{plain['rss_mb']:.0f} / {fast['rss_mb']:.0f} | {cuda} |", flush=True)


def bench_memory(args) -> None:
    job = {"kind": "memory", "model": args.memory_model, "scale": args.scale,
           "size": args.memory_size, "device": args.device, "threads": args.threads,
           "clock": args.clock}
    print(f"\n## Tiled memory: {args.memory_model} {args.memory_size}x{args.memory_size} "
          f"at x{args.scale}, precision auto, default memory budget\n")
    r = _spawn(job, args.timeout)
    if "error" in r:
        print(f"failed: {r['error']}")
        return
    print("| output | precision | tile / overlap | tiles | seconds | peak RSS (MB) | "
          "CUDA max alloc (MB) | target |")
    print("|---|---|---|---|---|---|---|---|")
    verdict = "met" if r["rss_mb"] < 2048 else "MISSED"
    print(f"| {r['output'][1]}x{r['output'][0]} | {r['precision']} | {r['tile']} / "
          f"{r['overlap']} | {r['tiles']} | {r['seconds']:.1f} | {r['rss_mb']:.0f} | "
          f"{_fmt(r.get('cuda_mb'), '.0f')} | < 2048 MB: {verdict} |", flush=True)


def bench_overhead(args) -> None:
    job = {"kind": "overhead", "model": args.overhead_model, "scale": args.scale,
           "size": args.overhead_size, "device": args.device, "repeat": args.repeat,
           "threads": args.threads, "clock": args.clock}
    out_mp = (args.overhead_size * args.scale) ** 2 / 1e6
    print(f"\n## Tiling overhead: {args.overhead_model} {args.overhead_size}x"
          f"{args.overhead_size} at x{args.scale} ({out_mp:.2f} MP output), "
          f"best of {args.repeat}, interleaved\n")
    r = _spawn(job, args.timeout)
    if "error" in r:
        print(f"failed: {r['error']}")
        return
    base = r["seconds"]["whole image (1 tile)"]
    print("| variant | tiles | tile / overlap | precision | seconds | overhead vs whole |")
    print("|---|---|---|---|---|---|")
    for name, sec in r["seconds"].items():
        n, tile, overlap, precision = r["tiles"][name]
        print(f"| {name} | {n} | {tile} / {overlap} | {precision} | {sec:.2f} | "
              f"{(sec / base - 1) * 100:+.0f}% |", flush=True)


def bench_ceiling(args) -> None:
    """What the hardware allows: the fast/plain ratio of the convolution alone bounds the
    speed-up of any model whose time is mostly such convolutions."""
    job = {"kind": "ceiling", "size": args.size, "repeat": args.repeat, "device": args.device,
           "threads": args.threads, "clock": args.clock}
    res = _spawn(job, args.timeout)
    print(f"\n## Ceiling: 8 x (64->64 3x3 conv + ReLU) on {args.size}x{args.size}, alone\n")
    if "error" in res:
        print(f"failed: {res['error']}")
        return
    print("| layout / precision | ms | GFLOP/s | speed-up over fp32 NCHW |")
    print("|---|---:|---:|---:|")
    base = res["seconds"]["fp32 NCHW (plain)"]
    for name, sec in res["seconds"].items():
        print(f"| {name} | {sec * 1e3:.2f} | {res['gflop'] / sec:.0f} | {base / sec:.2f}x |")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        return "unknown"
    found = [f for f in ("avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return ", ".join(found) or "none of avx512f/avx512_bf16/amx_bf16"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS),
                        help="comma-separated registry names (default: all)")
    parser.add_argument("--size", type=int, default=512, help="input side for the speed table")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=1,
                        help="timed runs (speed table: one per process, alternating plain and "
                             "fast, each after an untimed warm-up); the best is kept")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: CUDA if present)")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in the measuring processes (default: torch's)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall time, or CPU time of the measuring process (steadier "
                             "on a loaded machine; use with --threads 1)")
    parser.add_argument("--bundled", action="store_true",
                        help="speed table: the bundled trained weights instead of random ones")
    parser.add_argument("--image", default=None,
                        help="speed table: a centre crop of this image instead of noise")
    parser.add_argument("--memory-model", default="rcan")
    parser.add_argument("--memory-size", type=int, default=1024)
    parser.add_argument("--overhead-model", default="edsr_baseline")
    parser.add_argument("--overhead-size", type=int, default=256)
    parser.add_argument("--skip", default="", help="comma-separated: speed, ceiling, memory, overhead")
    parser.add_argument("--timeout", type=float, default=None,
                        help="seconds allowed per measurement subprocess")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        job = json.loads(args.worker)
        print(json.dumps(WORKERS[job["kind"]](job)))
        return

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in MODELS]
    if unknown:
        parser.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    device = pick_device(args.device)
    print("# Inference benchmark\n")
    threads = args.threads or torch.get_num_threads()
    print(f"- torch {torch.__version__}, {platform.machine()}, {threads} threads, "
          f"device {device}, {args.clock} clock")
    if device.type == "cuda":
        print(f"- GPU: {torch.cuda.get_device_name(device)}")
    print(f"- CPU flags: {_cpu_flags()}; native bf16 detected: {cpu_supports_bf16()}")
    print(f"- speed table: {'bundled' if args.bundled else 'random'} weights, input "
          f"{args.image or 'uniform noise'}")
    print(f"- load average at start: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    with tempfile.TemporaryDirectory() as tmp:
        if "speed" not in skip:
            bench_speed(models, args, Path(tmp))
    if "ceiling" not in skip:
        bench_ceiling(args)
    if "memory" not in skip:
        bench_memory(args)
    if "overhead" not in skip:
        bench_overhead(args)


if __name__ == "__main__":
    main()
