import os
from pathlib import Path

# On a busy 2-core machine torch's spinning OpenMP workers make small ops 10-60x
# slower; passive waiting costs nothing measurable on an idle one. Must precede torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from eval.cache import CACHE_ENV
from sr.paths import SHARED_ENV, shared_root

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True, scope="session")
def _private_cache_dir(tmp_path_factory):
    """Point the eval cache at a temporary folder for the whole run: tests that re-evaluate
    with cache=False would otherwise overwrite the user's cached timings, which the README's
    s/MP columns are made from."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CACHE_ENV, str(tmp_path_factory.mktemp("sr-cache")))
        yield


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
