"""Evaluate models on benchmark sets with the paper protocol: one row per image.

``evaluate(models, datasets, scales)`` returns a DataFrame with the columns in
``COLUMNS``. Models are registry names (bundled weights, or ``bicubic``), checkpoint
paths, model objects, or a dict ``{label: any of those}``. Results are cached per
(weights, dataset, scale, protocol, ensemble), so a re-run computes only what is new.
"""
from __future__ import annotations

import itertools
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
from torch import nn

import sr
from eval.cache import ResultCache, cache_home, file_sha256, make_key, state_dict_sha256
from eval.datasets import Benchmark, find_data_root
from eval.metrics import METRIC_COLUMNS, PROTOCOL_VERSION, Lpips, MetricUnavailable, evaluate_pair
from sr.errors import ScaleError, SRError

COLUMNS = ["model", "scale", "dataset", "image", *METRIC_COLUMNS, "seconds", "megapixels", "lr_source",
           "tiles", "device", "params", "gmacs", "error"]
# GMACs are reported for one output image of this size (the efficient-SR convention).
FLOPS_OUTPUT_SIZE = (720, 1280)


@dataclass
class _Candidate:
    label: str
    source: Any
    kind: str  # "name", "path" or "object"


def _candidates(models) -> list[_Candidate]:
    if isinstance(models, dict):
        items = list(models.items())
    elif isinstance(models, (str, os.PathLike, nn.Module)) or callable(models):
        items = [(None, models)]
    else:
        items = [(None, m) for m in models]
    out, seen = [], {}
    for label, m in items:
        if isinstance(m, (str, os.PathLike)):
            # An existing file is a checkpoint; anything else goes to load_model as a name
            # (which reports a missing file or an unknown model by itself).
            kind = "path" if Path(m).is_file() else "name"
            default = Path(m).stem if kind == "path" else str(m)
        elif callable(m):
            kind, default = "object", getattr(m, "arch", type(m).__name__)
        else:
            raise TypeError(f"cannot evaluate a {type(m).__name__}: give a model name, a checkpoint "
                            "path, a torch model or a callable")
        label = str(label) if label is not None else default
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:  # two models would share a table row
            label = f"{label}#{seen[label]}"
        out.append(_Candidate(label, m, kind))
    return out


def _load(c: _Candidate, scale: int, device, hashes: dict) -> tuple[Any, str | None]:
    """(model, weights id for the cache key or None) for ``c`` at ``scale``; raises SRError."""
    from sr.checkpoints import load_model

    if c.kind == "object":
        m = c.source
        own = getattr(m, "scale", None)
        if own is not None and int(own) != scale:
            raise ScaleError(f"{c.label} is a x{own} model; it cannot be evaluated at x{scale}")
        if not isinstance(m, nn.Module):
            return m, None  # an opaque callable cannot be fingerprinted: never cached
        return m, "state:" + state_dict_sha256(m)
    model = load_model(c.source, scale=scale, device=device or "cpu")
    if c.kind == "path":
        path = Path(c.source)
        if path not in hashes:
            hashes[path] = "file:" + file_sha256(path)
        return model, hashes[path]
    return model, "state:" + state_dict_sha256(model)


def count_macs(model, scale: int) -> float:
    """Multiply-accumulates (convolutions and matrix products) for one output of
    FLOPS_OUTPUT_SIZE, in GMACs; NaN when the model cannot be measured."""
    from torch.utils.flop_counter import FlopCounterMode

    if not isinstance(model, nn.Module):
        return math.nan
    out_h, out_w = FLOPS_OUTPUT_SIZE

    def measure(h, w, dev, state):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            torch.func.functional_call(model, state, (torch.zeros(1, 3, h, w, device=dev),))
        return counter.get_total_flops() / 2 / (h * scale * w * scale)

    named = dict(itertools.chain(model.named_parameters(), model.named_buffers()))
    try:  # shapes only: no memory and no compute, even for EDSR at 720p
        meta = {k: torch.empty_like(v, device="meta") for k, v in named.items()}
        per_pixel = measure(out_h // scale, out_w // scale, "meta", meta)
    except Exception:  # models with device-specific code: a small real run instead
        dev = next(iter(named.values())).device if named else torch.device("cpu")
        try:
            per_pixel = measure(32, 32, dev, named)
        except Exception:
            return math.nan
    return per_pixel * out_h * out_w / 1e9


def _count_params(model) -> float:
    from sr.models import count_parameters

    return float(count_parameters(model)) if isinstance(model, nn.Module) else math.nan


def _predict(model, lr: torch.Tensor, scale: int, device, ensemble: bool):
    """(SR output as uint8 or float in [0, 1], tiles, device string) for a uint8 LR image."""
    from sr.inference import pick_device, upscale_with_info
    from sr.models.bicubic import Bicubic
    from sr.resize import imresize

    dev = pick_device(device)
    if isinstance(model, Bicubic):
        # The baseline row is MATLAB imresize of the uint8 LR image (protocol step 2):
        # the uint8 path rounds between the two passes, as MATLAB does.
        return imresize(lr.to(dev), scale=scale), 1, str(dev)
    x = lr.unsqueeze(0).float().div_(255)
    if isinstance(model, nn.Module):
        out, info = upscale_with_info(model, x, device=dev, precision="fp32", ensemble=ensemble,
                                      memory_budget_mb=_memory_budget_mb(dev))
        return out, info["tiles"], info["device"]
    if ensemble:
        raise SRError("self-ensemble needs a torch model (nn.Module), not a plain callable")
    with torch.inference_mode():
        return model(x.to(dev)), 1, str(dev)


def _memory_budget_mb(dev: torch.device) -> float | None:
    """Half the free RAM on the CPU (the engine's interactive default is 1 GB), so that
    evaluation tiles only when it must: tiles with a finite overlap can change deep
    networks' outputs slightly. CUDA: the engine's default (half the free memory)."""
    if dev.type != "cpu":
        return None
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 / 2**20
    except (ValueError, OSError, AttributeError):
        return None


def _sync(device) -> None:
    if torch.cuda.is_available() and str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _error_text(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else ""
    return text if isinstance(e, SRError) else f"{type(e).__name__}: {text}"


def _row(label, scale, dataset, image, **values) -> dict:
    row = dict.fromkeys(COLUMNS, math.nan)
    row.update(model=label, scale=scale, dataset=dataset, image=image, lr_source="", device="",
               error="")
    row.update(values)
    return row


def _progress_bar(progress, total: int, desc: str):
    if progress is True:
        from tqdm.auto import tqdm
        return tqdm(total=total, desc=desc, unit="img", leave=False)
    return None


def evaluate(models, datasets, scales, data_root=None, device=None, ensemble=False, cache=True,
             cache_dir=None, progress: bool | Callable = True, lpips=False) -> pd.DataFrame:
    """Protocol metrics of every (model, scale, dataset, image) as a DataFrame (``COLUMNS``).

    models: names (``"edsr_baseline"``: bundled weights at each scale; ``"bicubic"``),
    checkpoint paths (fixed scale: other scales give error rows), model objects
    (labelled by ``.arch``) or a dict {label: model}. datasets: names or aliases (see
    ``eval.datasets.DATASETS``). A model that fails on an image gives a row with NaN
    metrics and ``error`` set, and the others go on. cache=False recomputes (and
    refreshes the cache). progress: True for a tqdm bar, or a callable(done, total, desc).
    lpips=True adds an ``lpips`` column (NaN with a note in ``df.attrs["notes"]`` when the
    package or its weights are unavailable); a string instead of True is the AlexNet
    backbone to use (a converted file, or "random" for tests), see ``eval.metrics.Lpips``.
    """
    if isinstance(datasets, str):
        datasets = [datasets]
    scales = [int(s) for s in ([scales] if isinstance(scales, int) else scales)]
    candidates = _candidates(models)
    root = find_data_root(data_root)
    # Open every set first: a missing folder fails now, not after an hour of compute.
    benches = {(d, s): Benchmark(d, s, root) for s in scales for d in datasets}
    store = ResultCache(Path(cache_dir) if cache_dir is not None else cache_home() / "eval")
    notes: list[str] = []
    lpips_metric = None
    if lpips:
        try:
            lpips_metric = Lpips(device or ("cuda" if torch.cuda.is_available() else "cpu"),
                                 backbone=lpips if isinstance(lpips, str) else None)
        except MetricUnavailable as e:
            notes.append(str(e))
            warnings.warn(str(e), stacklevel=2)
    columns = COLUMNS[:-1] + (["lpips"] if lpips else []) + ["error"]
    hashes: dict = {}
    sizes: dict = {}  # (label, scale) -> params and GMACs, measured once
    rows: list[dict] = []
    for scale in scales:
        loaded = {}
        for c in candidates:
            try:
                loaded[c.label] = _load(c, scale, device, hashes)
            except (SRError, OSError, ValueError, TypeError) as e:
                loaded[c.label] = e
        for dataset in datasets:
            bench = benches[(dataset, scale)]
            pending = []
            for c in candidates:
                got = loaded[c.label]
                if isinstance(got, BaseException):
                    rows += [_row(c.label, scale, bench.name, p.stem, error=_error_text(got))
                             for p in bench.hr_paths]
                    continue
                model, weights_id = got
                key = None if weights_id is None else make_key(
                    weights=weights_id, arch=getattr(model, "arch", type(model).__name__),
                    scale=scale, dataset=bench.name, data=bench.fingerprint(), ensemble=bool(ensemble),
                    lpips=lpips_metric.backbone_id if lpips_metric is not None else False, protocol=PROTOCOL_VERSION, sr=sr.__version__,
                    columns=COLUMNS)
                hit = store.get(key) if (cache and key is not None) else None
                if hit is not None:
                    rows += [dict(r, model=c.label) for r in hit.to_dict("records")]
                else:
                    pending.append((c, model, key))
            if pending:
                for c, m, _ in pending:
                    if (c.label, scale) not in sizes:
                        sizes[(c.label, scale)] = {"params": _count_params(m), "gmacs": count_macs(m, scale)}
                extras = {c.label: sizes[(c.label, scale)] for c, _, _ in pending}
                rows += _run(pending, extras, bench, scale, device, ensemble, progress, lpips_metric,
                             store)
    order = {c.label: i for i, c in enumerate(candidates)}
    rows.sort(key=lambda r: (order[r["model"]], scales.index(r["scale"])))  # stable: sets, images keep order
    df = pd.DataFrame(rows, columns=columns)
    df.attrs["notes"] = notes
    return df


def _run(pending, extras, bench: Benchmark, scale: int, device, ensemble, progress, lpips_metric,
         store: ResultCache) -> list[dict]:
    """Evaluate the pending models on every image of ``bench``; LR images are loaded once."""
    per_model: dict[str, list[dict]] = {c.label: [] for c, _, _ in pending}
    desc = f"{bench.name} x{scale}"
    bar = _progress_bar(progress, len(bench), desc)
    try:
        for i, path in enumerate(bench.hr_paths):
            try:
                item = bench.load(path)
            except SRError as e:  # an unreadable image: every model gets an error row
                item = e
            for c, model, _ in pending:
                per_model[c.label].append(
                    _row(c.label, scale, bench.name, path.stem, error=_error_text(item),
                         **extras[c.label]) if isinstance(item, SRError) else
                    _one(c.label, model, item, bench.name, scale, device, ensemble, lpips_metric,
                         extras[c.label]))
            if bar is not None:
                bar.update(1)
            elif callable(progress):
                progress(i + 1, len(bench), desc)
    finally:
        if bar is not None:
            bar.close()
    for c, _, key in pending:
        rows = per_model[c.label]
        if key is not None and not any(r["error"] for r in rows):  # failures are retried next time
            store.put(key, pd.DataFrame(rows).drop(columns="model"))
    return [r for c, _, _ in pending for r in per_model[c.label]]


def _one(label, model, item, dataset, scale, device, ensemble, lpips_metric, extras) -> dict:
    base = dict(lr_source=item.lr_source, **extras)
    try:
        start = time.perf_counter()
        out, tiles, dev = _predict(model, item.lr, scale, device, ensemble)
        _sync(dev)
        seconds = time.perf_counter() - start
        values = evaluate_pair(out, item.hr, scale)
        if lpips_metric is not None:
            values["lpips"] = float(lpips_metric(out, item.hr, scale)[0])
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as e:  # one bad image must not stop the table
        if isinstance(e, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        return _row(label, scale, dataset, item.name, error=_error_text(e), **base)
    h, w = item.hr.shape[-2:]
    return _row(label, scale, dataset, item.name, seconds=seconds, megapixels=h * w / 1e6,
                tiles=tiles, device=dev, **values, **base)
