"""Models tab: one Markdown card per bundled model, from the checkpoints' metadata."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from sr.checkpoints import bundled_weights, read_metadata, weights_dir
from sr.errors import SRError
from sr.models import MODELS, count_parameters, create_model

NO_LICENSE = ("no licence recorded in the checkpoint; the weights follow the repository's "
              "licence, and the training images keep their own terms")


def model_cards() -> str:
    """All cards, or a note saying where weights go when there are none."""
    by_arch: dict[str, list[tuple[int, Path]]] = {}
    for arch, scale, path in bundled_weights():
        by_arch.setdefault(arch, []).append((scale, path))
    if not by_arch:
        return (f"No bundled weights yet (looked in `{weights_dir()}`), so only **bicubic** is "
                "offered. Trained checkpoints named `<arch>_x<scale>.safetensors` appear here, "
                "and in the Upscale tab, on the next page load. You can also upload your own "
                "checkpoint in the Upscale tab.")
    return "\n\n---\n\n".join(_card(arch, sorted(files)) for arch, files in sorted(by_arch.items()))


def _card(arch: str, files: list[tuple[int, Path]]) -> str:
    spec = MODELS.get(arch)
    title = f"### {arch} ({', '.join(f'x{s}' for s, _ in files)})"
    lines = [title]
    if spec is not None:
        lines.append(f"{spec.description}. *{spec.paper}*")
    rows = ["| scale | parameters | file | recipe | training data | steps | scores (PSNR-Y / SSIM-Y) |",
            "|---|---|---|---|---|---|---|"]
    licences = set()
    for scale, path in files:
        try:
            meta = read_metadata(path)
        except SRError as e:
            rows.append(f"| x{scale} | | `{path.name}` | | unreadable: {e} | | |")
            continue
        prov = meta.get("provenance") or {}
        if not isinstance(prov, dict):
            prov = {}
        licences.add(str(prov.get("license") or meta.get("license") or NO_LICENSE))
        size_mb = path.stat().st_size / 2**20
        rows.append(f"| x{scale} | {_params(meta)} | `{path.name}` ({size_mb:.1f} MB) "
                    f"| {_first(prov, 'recipe')} "
                    f"| {_training_data(prov)} | {_steps(prov)} "
                    f"| {_scores(meta.get('eval'))} |")
    lines.append("\n".join(rows))
    lines.append("**Licence:** " + "; ".join(sorted(licences)))
    return "\n\n".join(lines)


def _params(meta: dict) -> str:
    arch = meta.get("arch")
    if arch not in MODELS or "scale" not in meta:
        return "?"
    hparams = meta.get("hparams") if isinstance(meta.get("hparams"), dict) else {}
    try:
        return f"{_count(arch, meta['scale'], json.dumps(hparams, sort_keys=True)):,}"
    except (SRError, TypeError, ValueError):
        return "?"


@functools.lru_cache(maxsize=None)
def _count(arch: str, scale: int, hparams_json: str) -> int:
    """Parameters of an architecture, built on the meta device (no memory, no weights read)."""
    with torch.device("meta"):
        return count_parameters(create_model(arch, scale, **json.loads(hparams_json)))


def _training_data(prov: dict) -> str:
    """The trainer records folders as machine paths: show their names and the image count."""
    data = prov.get("data")
    if not isinstance(data, dict):
        return _first(prov, "train_data", "dataset", "datasets", "data")
    dirs = data.get("hr_dirs") or data.get("lr_dirs") or []
    names = ", ".join(Path(str(d)).name for d in dirs) or "not recorded"
    return f"{names} ({data['images']:,} images)" if isinstance(data.get("images"), int) else names


def _steps(prov: dict) -> str:
    """Steps of the whole training, which may be a chain of runs, each continuing the last."""
    text = _first(prov, "steps", "iterations", "iters", "epochs")
    history = prov.get("history")
    entries = [h for h in history if isinstance(h, dict)] if isinstance(history, list) else []
    entries.append(prov)
    # Older checkpoints record a chain as one hand-written command: "A (...), then B (...)".
    runs = sum(str(e.get("command", "")).count(", then ") + 1 for e in entries)
    counts = [e.get("steps") for e in entries]
    if runs == 1:
        return text
    if runs == len(entries) and all(isinstance(c, int) for c in counts):
        return f"{sum(counts):,} in {runs} runs"
    return f"{text} in the last of {runs} runs"


def _first(d: dict, *keys: str) -> str:
    for key in keys:
        value = d.get(key)
        if value not in (None, "", [], {}):
            if isinstance(value, (list, tuple)):
                return ", ".join(map(str, value))
            return f"{value:,}" if isinstance(value, int) else str(value)
    return "not recorded"


def _scores(evaluation) -> str:
    """'Set5: 32.09 / 0.8938; ...' from the checkpoint's eval metadata (nested by set/scale)."""
    if not isinstance(evaluation, dict) or not evaluation:
        return "not recorded"
    return "; ".join(_score_parts(evaluation, ""))


def _score_parts(d: dict, prefix: str) -> list[str]:
    parts = []
    for key, value in d.items():
        name = f"{prefix} {key}".strip()
        psnr_key = next((k for k in ("psnr_y", "psnr") if k in value), None) \
            if isinstance(value, dict) else None
        if psnr_key:
            ssim = value.get("ssim_y", value.get("ssim"))
            ssim_text = f" / {ssim:.4f}" if ssim is not None else ""
            scale = f" x{value['scale']}" if "scale" in value else ""
            parts.append(f"{name}{scale}: {value[psnr_key]:.2f}{ssim_text} (Y)")
        elif isinstance(value, dict):
            parts += _score_parts(value, name)
        else:
            parts.append(f"{name}: {value}")
    return parts
