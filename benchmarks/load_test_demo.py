"""Load test of the web demo: N requests from K concurrent clients on loopback.

Starts `python app.py` on a free port (or uses --url), sends `/upscale` requests
through gradio_client from K threads, and reports how many were answered, cleanly
rejected ("queue full" / busy) or failed otherwise, the latencies, and the server's
resident memory (RSS) before, during (peak) and after. Not part of the test suite.

    python benchmarks/load_test_demo.py                      # 20 requests, 4 clients
    python benchmarks/load_test_demo.py --queue-size 2       # small queue: some rejected
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (Linux /proc), in MiB."""
    total = 0
    for p in [pid, *_children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def _children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    out = [int(k) for k in kids]
    for k in list(out):
        out += _children(k)
    return out


class PeakSampler(threading.Thread):
    def __init__(self, pid: int, every: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.every, self.peak, self.stop = pid, every, 0.0, threading.Event()

    def run(self):
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb(self.pid))
            time.sleep(self.every)


def start_server(args, tmp: Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, GRADIO_SERVER_NAME="127.0.0.1", GRADIO_SERVER_PORT=str(port),
               GRADIO_ANALYTICS_ENABLED="False", SR_DEMO_WORK_DIR=str(tmp / "work"),
               GRADIO_TEMP_DIR=str(tmp / "gradio"))
    if args.queue_size:
        env["SR_DEMO_QUEUE_SIZE"] = str(args.queue_size)
    log = open(tmp / "app.log", "w")
    proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit(f"app.py exited early; see {tmp / 'app.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.5)
    proc.kill()
    sys.exit("app.py did not start within 180 s")


def make_image(tmp: Path, size: int) -> Path:
    import skimage.data

    pixels = skimage.data.astronaut()[:size, :size]
    path = tmp / f"astronaut_{size}.png"
    Image.fromarray(np.ascontiguousarray(pixels)).save(path)
    return path


def one_request(url: str, image: Path, model: str, scale: int) -> tuple[str, float, str]:
    from gradio_client import Client, handle_file

    start = time.perf_counter()
    try:
        client = Client(url, verbose=False)
        sr_file, *_ = client.predict(handle_file(str(image)), model, scale, api_name="/upscale")
        with Image.open(image) as src, Image.open(sr_file) as out:
            ok = out.size == (src.width * scale, src.height * scale)
        return ("answered" if ok else "wrong size"), time.perf_counter() - start, ""
    except Exception as e:  # classify: a full queue is a clean rejection, anything else is not
        text = " ".join(str(e).split())
        busy = "queue is full" in text.lower() or "busy" in text.lower()
        kind = "rejected" if busy else "failed"
        return kind, time.perf_counter() - start, f"{type(e).__name__}: {text[:160]}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="test a running demo instead of starting app.py")
    ap.add_argument("--requests", type=int, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--size", type=int, default=256, help="input side in pixels")
    ap.add_argument("--model", default="bicubic")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the requests; RSS after each round shows whether memory levels off")
    ap.add_argument("--queue-size", type=int, help="SR_DEMO_QUEUE_SIZE for the started server")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="sr-load-"))
    proc = None
    if args.url:
        url = args.url
    else:
        proc, url = start_server(args, tmp)
    image = make_image(tmp, args.size)
    try:
        one_request(url, image, args.model, args.scale)  # warm-up: model load, first allocations
        before = rss_mb(proc.pid) if proc else float("nan")
        sampler = PeakSampler(proc.pid) if proc else None
        if sampler:
            sampler.start()
        start = time.perf_counter()
        results, after_round = [], []
        with ThreadPoolExecutor(args.clients) as pool:
            for _ in range(args.rounds):
                results += pool.map(lambda _: one_request(url, image, args.model, args.scale),
                                    range(args.requests))
                after_round.append(rss_mb(proc.pid) if proc else float("nan"))
        wall = time.perf_counter() - start
        if sampler:
            sampler.stop.set()
            sampler.join()
        time.sleep(1.0)
        after = rss_mb(proc.pid) if proc else float("nan")
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=30)

    counts = {k: sum(r[0] == k for r in results)
              for k in ("answered", "rejected", "failed", "wrong size")}
    answered = [t for kind, t, _ in results if kind == "answered"]
    print(f"{args.rounds} x {args.requests} requests, {args.clients} concurrent clients, "
          f"{args.size}x{args.size} "
          f"input, {args.model} x{args.scale}, queue size {args.queue_size or 'default'}")
    print(f"answered {counts['answered']}, rejected cleanly {counts['rejected']}, "
          f"failed {counts['failed']}, wrong size {counts['wrong size']}; wall {wall:.1f} s")
    if answered:
        print(f"latency (client, incl. upload/download): median {statistics.median(answered):.2f} s, "
              f"max {max(answered):.2f} s")
    if proc:
        print(f"server RSS: after warm-up {before:.0f} MiB, peak {sampler.peak:.0f} MiB, "
              f"after {after:.0f} MiB; after each round: "
              + ", ".join(f"{r:.0f}" for r in after_round) + " MiB")
    for kind, _, msg in results:
        if kind in ("failed", "wrong size"):
            print("  ", kind, msg)
    return 0 if counts["failed"] == 0 and counts["wrong size"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
