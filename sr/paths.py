"""Where the project finds its bundled files and the optional shared data folder."""
from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SHARED_ENV = "SR_SHARED_DIR"


def shared_root() -> Path | None:
    """The shared data folder: $SR_SHARED_DIR, else ../shared beside the project."""
    env = os.environ.get(SHARED_ENV)
    if env:
        return Path(env)
    candidate = PROJECT_ROOT.parent / "shared"
    return candidate if candidate.is_dir() else None


def benchmarks_root() -> Path | None:
    root = shared_root()
    return root / "datasets" / "benchmarks" if root else None


def train_root() -> Path | None:
    root = shared_root()
    return root / "datasets" / "train" if root else None
