"""Which models the demo offers, and a bounded cache of the loaded ones."""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from torch import nn

from sr.checkpoints import bundled_weights, load_model
from sr.errors import CheckpointError, ScaleError
from sr.models import MODELS

BICUBIC = "bicubic"


def catalogue() -> dict[str, dict[int, Path | None]]:
    """Model name -> {scale: weights file}: bicubic (no file) plus every bundled file.

    Read from the weights folder on every call, so weights added while the demo runs
    show up on the next page load.
    """
    models: dict[str, dict[int, Path | None]] = {BICUBIC: dict.fromkeys(MODELS[BICUBIC].scales)}
    for arch, scale, path in bundled_weights():
        models.setdefault(arch, {})[scale] = path
    return models


def resolve(name: str, scale: int) -> Path | None:
    """The weights file for `name` at `scale` (None for bicubic); SRError if not offered."""
    models = catalogue()
    if name not in models:
        raise CheckpointError(f"unknown model {name!r}; choose one of: {', '.join(models)}")
    scales = models[name]
    if scale not in scales:
        offered = ", ".join(f"x{s}" for s in sorted(scales))
        raise ScaleError(f"{name} is available at {offered} here, not x{scale}; pick one of those")
    return scales[scale]


class ModelCache:
    """Least-recently-used cache of ready models, shared by all requests.

    Loading runs under the lock, so two requests for the same model load it once.
    Keys include the file's modification time: replaced weights are reloaded.
    """

    def __init__(self, maxsize: int = 4, device: str | None = None):
        self.maxsize = maxsize
        self.device = device
        self._models: OrderedDict[tuple, nn.Module] = OrderedDict()
        self._lock = threading.Lock()
        self.loads = 0  # how many times a model was actually read (tests check the caching)

    def get(self, name: str, scale: int) -> nn.Module:
        """A bundled model (or bicubic) by name and scale."""
        path = resolve(name, scale)
        return self._get(name, scale, path)

    def get_file(self, path: str | Path, scale: int | None = None) -> nn.Module:
        """A model from a user's checkpoint file (safetensors or a plain state dict)."""
        return self._get(None, scale, Path(path))

    def _get(self, name: str | None, scale: int | None, path: Path | None) -> nn.Module:
        key = (name, scale, str(path), _stamp(path))
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                return model
            target = name if path is None else path
            model = load_model(target, scale=scale, device=self.device or "cpu")
            self.loads += 1
            self._models[key] = model
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()


def _stamp(path: Path | None) -> tuple[int, int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None  # load_model reports the missing file
    return st.st_mtime_ns, st.st_size
