"""Training: ``python -m sr.train --config configs/<recipe>.yaml [key=value ...]``.

Recipes (``configs/*.yaml``) are merged onto ``sr.train.config.DEFAULTS``; see
``sr.train.trainer`` for the run folder layout and resume semantics.
"""
from sr.train.config import ConfigError, load_config
from sr.train.state import ResumeError
from sr.train.trainer import Trainer, TrainingDiverged, train

__all__ = ["ConfigError", "ResumeError", "Trainer", "TrainingDiverged", "load_config", "train"]
