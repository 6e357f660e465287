"""Run logs: CSV files in the run folder, and TensorBoard when it is installed."""
from __future__ import annotations

import csv
from pathlib import Path


class CsvLog:
    """Append-only CSV; on resume, rows past the resumed step (written by the run that
    was killed after its last checkpoint) are dropped first."""

    def __init__(self, path: Path, fields: list[str], keep_until: int | None):
        self.path, self.fields = path, fields
        rows = []
        if keep_until is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["step"]) <= keep_until]
        with path.open("w", newline="") as f:
            w = csv.DictWriter(f, fields, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)

    def write(self, row: dict) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, self.fields, extrasaction="ignore").writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(run_dir / "tb"))
