"""Demo limits and paths, read once from environment variables (all optional)."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from sr.errors import SRError
from sr.paths import PROJECT_ROOT

# Inputs above max_megapixels may still be decoded (to downscale them on request) up to
# this multiple of the limit; anything bigger is refused before decoding.
DECODE_FACTOR = 16


@dataclass(frozen=True)
class Settings:
    max_megapixels: float = 4.0      # SR_DEMO_MAX_MP: largest input accepted as is
    queue_size: int = 16             # SR_DEMO_QUEUE_SIZE: waiting requests before "busy"
    max_file_mb: int = 200           # SR_DEMO_MAX_FILE_MB: upload limit (images, checkpoints)
    memory_mb: int = 1024            # SR_DEMO_MEMORY_MB: activation budget that sets the tile size
    model_cache: int = 4             # SR_DEMO_MODEL_CACHE: models kept loaded (LRU)
    results_mb: int = 256            # SR_DEMO_RESULTS_MB: finished results kept for the crop inspector
    concurrency: int = 1             # SR_DEMO_CONCURRENCY: model runs at the same time
    device: str | None = None        # SR_DEMO_DEVICE: "cpu", "cuda", ...; default: CUDA if available
    default_model: str | None = None  # SR_DEMO_DEFAULT_MODEL
    work_dir: Path = Path(tempfile.gettempdir()) / "sr-demo"  # SR_DEMO_WORK_DIR
    results_dir: Path = PROJECT_ROOT / "results"               # SR_DEMO_RESULTS_DIR (eval CSVs)

    @property
    def max_pixels(self) -> int:
        return int(self.max_megapixels * 1_000_000)


_FIELDS = {
    "SR_DEMO_MAX_MP": ("max_megapixels", float),
    "SR_DEMO_QUEUE_SIZE": ("queue_size", int),
    "SR_DEMO_MAX_FILE_MB": ("max_file_mb", int),
    "SR_DEMO_MEMORY_MB": ("memory_mb", int),
    "SR_DEMO_MODEL_CACHE": ("model_cache", int),
    "SR_DEMO_RESULTS_MB": ("results_mb", int),
    "SR_DEMO_CONCURRENCY": ("concurrency", int),
    "SR_DEMO_DEVICE": ("device", str),
    "SR_DEMO_DEFAULT_MODEL": ("default_model", str),
    "SR_DEMO_WORK_DIR": ("work_dir", Path),
    "SR_DEMO_RESULTS_DIR": ("results_dir", Path),
}


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from `environ` (default os.environ); a bad value raises SRError naming it."""
    environ = os.environ if environ is None else environ
    values = {}
    for var, (name, kind) in _FIELDS.items():
        raw = environ.get(var, "").strip()
        if not raw:
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise SRError(f"{var}={raw!r} is not a valid {kind.__name__}; fix or unset it") from None
        if kind in (int, float) and value <= 0:
            raise SRError(f"{var}={raw!r} must be positive; fix or unset it")
        values[name] = value
    return Settings(**values)
