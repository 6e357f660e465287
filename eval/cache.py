"""Per-image results cached on disk, one JSON file per (model weights, dataset, scale, protocol, ensemble).

A key is the sha256 of a JSON description of everything that determines the numbers, so
a re-run only computes what is new and a changed checkpoint or dataset is recomputed.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import pandas as pd
import torch

CACHE_ENV = "SR_CACHE_DIR"


def cache_home() -> Path:
    """$SR_CACHE_DIR, else $XDG_CACHE_HOME/sr-workbench, else ~/.cache/sr-workbench."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "sr-workbench"


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def state_dict_sha256(module: torch.nn.Module) -> str:
    """Hash of every parameter and buffer (names, dtypes, shapes, values)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def make_key(**fields) -> str:
    """A stable key for JSON-serialisable fields."""
    blob = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class ResultCache:
    """JSON files (row lists) named by key in ``directory``.

    JSON rather than CSV keeps types exact: an image called "101085" stays a string.
    """

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.json"

    def get(self, key: str) -> pd.DataFrame | None:
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            return pd.DataFrame(json.loads(path.read_text(encoding="utf-8"))["rows"])
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged entry is recomputed

    def put(self, key: str, rows: pd.DataFrame) -> None:
        # NaN is written as the (Python-readable) JSON extension NaN.
        atomic_write_text(self._path(key), json.dumps({"rows": rows.to_dict("records")}))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file, so no half-written file is ever seen."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
