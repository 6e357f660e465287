"""The training benchmark runs end to end on the CPU (tiny batch and patch, one step)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

import bench_train  # noqa: E402


def test_bench_train_prints_both_steps_and_what_bounds_them(tmp_path, capsys):
    assert bench_train.main(["--models", "edsr_baseline", "--batch", "1", "--patch", "8", "--steps", "1",
                             "--warmup", "1", "--workers", "0", "--threads", "1",
                             "--data-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out  # no training images under --data-root
    rows = [line.split() for line in out.splitlines() if line.startswith("edsr_baseline x4")]
    assert [r[2] for r in rows] == ["default", "plain"]
    ops = [int(r[-3]) for r in rows]
    # Fused Adam: the optimiser is one operator, not ten per parameter tensor (~740 here).
    assert all(100 < n < 500 for n in ops), ops
    assert all(r[-1] == "-" for r in rows)  # no GPU kernel time on the CPU
    assert "speed-up of the default step over plain fp32 NCHW" in out
