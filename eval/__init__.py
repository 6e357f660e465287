"""Evaluation workbench: paper-protocol PSNR/SSIM on the standard SR benchmark sets.

``from eval import evaluate``; CLI: ``python -m eval --models bicubic --datasets Set5 --scales 4``.
The protocol is in ``eval.metrics`` (docs: EVAL_PROTOCOL.md in the shared docs).
"""
from eval.metrics import evaluate_pair
from eval.published_bicubic import published_bicubic_row
from eval.runner import evaluate
from eval.tables import summarize

__all__ = ["evaluate", "evaluate_pair", "published_bicubic_row", "summarize"]
