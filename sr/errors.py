"""Errors a user can cause. Each carries a one-line message that says what to do."""


class SRError(Exception):
    """Base class: str(err) is a single readable line, shown as-is in the CLI and demo."""


class ImageReadError(SRError):
    """The input is not a readable image (corrupt, truncated, empty, unsupported)."""


class InputTooLargeError(SRError):
    """The image has more pixels than the configured limit."""


class CheckpointError(SRError):
    """A weights file cannot be loaded safely or does not match the architecture."""


class ScaleError(SRError):
    """The requested scale is not supported by the chosen model or checkpoint."""


class DatasetError(SRError):
    """A benchmark or training folder is missing or inconsistent."""


class Cancelled(SRError):
    """Work was cancelled by the caller."""


class ImageWriteError(SRError):
    """An output image cannot be written (unsupported format, unwritable folder)."""


class UnknownModelError(SRError, ValueError):
    """The model name or one of its hyper-parameters is not known."""
