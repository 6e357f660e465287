import os
from pathlib import Path

# On a busy 2-core machine torch's spinning OpenMP workers make small ops 10-60x
# slower; passive waiting costs nothing measurable on an idle one. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from sr.paths import SHARED_ENV, shared_root

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require(path: Path | None, what: str) -> Path:
    if path is not None and path.exists():
        return path
    msg = (f"{what} not found (looked at {path or '../shared'}); "
           f"set {SHARED_ENV} to the shared data folder")
    if IN_CI:
        pytest.fail(msg + " -- required in CI")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    return _require(shared_root(), "shared data folder")


@pytest.fixture(scope="session")
def benchmarks_dir(shared_dir) -> Path:
    return _require(shared_dir / "datasets" / "benchmarks", "benchmark datasets")


@pytest.fixture(scope="session")
def train_dir(shared_dir) -> Path:
    return _require(shared_dir / "datasets" / "train", "training images")


@pytest.fixture(scope="session")
def pan_dir(shared_dir) -> Path:
    return _require(shared_dir / "reference-weights" / "PAN", "PAN reference weights")
