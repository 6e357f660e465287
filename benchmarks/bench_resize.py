"""Speed of sr.resize.imresize against Pillow's Image.resize(BICUBIC), side by side.

    python benchmarks/bench_resize.py [--size 2048] [--repeat 5]

Both resize the same 2048x2048 RGB uint8 image; ours also in float32. The ratio is
Pillow time / our time (> 1 means we are faster). Run on an otherwise idle machine:
torch's thread pool suffers far more than Pillow's single thread from contention.
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sr.resize import imresize  # noqa: E402


def best_of(fn, repeat):
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: torch's default); Pillow uses one")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    pil = Image.fromarray(arr)
    u8 = torch.from_numpy(arr).permute(2, 0, 1).contiguous()
    f32 = u8.float() / 255
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"input {args.size}x{args.size} RGB")
    print("| scale | Pillow ms | ours uint8 ms | ours float32 ms | ratio uint8 | ratio float32 |")
    print("|---|---|---|---|---|---|")
    for scale in (1 / 4, 1 / 3, 1 / 2, 2, 3, 4):
        out = (int(np.ceil(args.size * scale)),) * 2
        t_pil = best_of(lambda: pil.resize(out, Image.BICUBIC), args.repeat)
        t_u8 = best_of(lambda: imresize(u8, scale), args.repeat)
        t_f32 = best_of(lambda: imresize(f32, scale), args.repeat)
        label = f"1/{round(1 / scale)}" if scale < 1 else f"{scale:g}"
        print(f"| {label} | {t_pil * 1e3:.1f} | {t_u8 * 1e3:.1f} | {t_f32 * 1e3:.1f} "
              f"| {t_pil / t_u8:.2f} | {t_pil / t_f32:.2f} |")


if __name__ == "__main__":
    main()
