"""``python -m sr.train --config configs/<recipe>.yaml [key=value ...] [--run-dir DIR] [--resume]``

Multi-GPU: ``torchrun --nproc_per_node N -m sr.train --config ...`` (data.batch is the
global batch, split over the processes).
"""
from __future__ import annotations

import argparse
import os
import shlex
import signal
import sys
from pathlib import Path

from sr.errors import SRError


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sr.train",
                                description="Train an SR model from a recipe (configs/*.yaml).",
                                epilog="Any recipe value can be overridden with dotted keys, values read as "
                                       "YAML: optim.lr=1e-4 train.steps=100 data.hr_dirs=[DIV2K_train_HR]. "
                                       "Several GPUs: torchrun --nproc_per_node N -m sr.train --config ...")
    p.add_argument("--config", required=True, help="recipe file (configs/*.yaml)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="recipe overrides")
    p.add_argument("--run-dir", help="run folder (default: runs/<recipe name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue from <run-dir>/last.pt (a run folder with a checkpoint also "
                        "resumes without this flag)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    from sr.train.config import load_config
    from sr.train.trainer import train

    recipe = Path(args.config).stem
    run_dir = Path(args.run_dir) if args.run_dir else Path("runs") / recipe
    try:
        cfg = load_config(args.config, args.overrides)
        command = shlex.join(["python", "-m", "sr.train", *(sys.argv[1:] if argv is None else argv)])
        summary = train(cfg, run_dir, resume=True if args.resume else None,
                        progress=not args.no_progress, recipe=recipe, command=command)
    except SRError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    if summary["stopped"] == "signal":
        return 128 + summary["signal"]
    return 0


def _leave(code: int) -> None:
    """Exit with ``code``. Under torchrun (WORLD_SIZE > 1) skip interpreter finalisation:
    after the process group is destroyed and every file is written (logs are closed per
    row, checkpoints renamed into place), gloo's threads can still abort the shutdown
    ("terminate called without an active exception", SIGABRT), roughly one run in ten on
    a loaded 2-core machine, and torchrun then reports a finished run as failed."""
    from sr.train.distributed import launched_world_size

    if launched_world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    _leave(main())
