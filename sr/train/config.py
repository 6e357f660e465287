"""Training recipes: YAML files merged onto DEFAULTS, with dotted ``key=value`` overrides.

A recipe may name another recipe in ``base:`` (a path relative to its own folder); the
base is loaded first and the recipe's values replace its values key by key. Every key
must exist in DEFAULTS (typos fail with a suggestion), except inside the free-form
sections listed in FREE_FORM (model hyper-parameters).
"""
from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any

import yaml

from sr.errors import SRError


class ConfigError(SRError, ValueError):
    """A recipe file or override is malformed or names an unknown key."""


DEFAULTS: dict[str, Any] = {
    "model": {
        "name": None,
        "scale": 4,
        "hparams": {},
    },
    "data": {
        "root": None,            # folder the relative hr_dirs/lr_dirs are under; None = shared train root
        "hr_dirs": [],
        "lr_dirs": None,         # paired LR folders (same order/names as hr_dirs); None = make LR on the fly
        "patch": 48,             # LR patch side; the HR crop is patch * scale
        "batch": 16,             # global batch (split over DDP ranks)
        "augment": True,         # random flips and 90-degree rotations
        "cache_mb": 4096,        # decoded images kept in memory up to this size; the rest is read per sample
        "workers": 4,
        "lr_resize": "auto",     # exact (uint8 MATLAB path), float (float path, then quantised), auto
    },
    "degrade": {
        "blur": {"prob": 0.0, "sigma": [0.2, 3.0], "at": "before"},
        "noise": {"prob": 0.0, "sigma": [1.0, 25.0], "gray_prob": 0.0, "at": "after"},
        "jpeg": {"prob": 0.0, "quality": [30, 95], "at": "after"},
    },
    "loss": {
        "pixel": {"type": "l1", "weight": 1.0, "eps": 1.0e-3},
        "perceptual": {"weight": 0.0, "layer": "conv5_4", "before_activation": True,
                       "feature_scale": 1.0, "criterion": "mse", "weights": "imagenet"},
        "adversarial": {"weight": 0.0, "type": "gan"},
    },
    "optim": {
        "type": "adam",
        "lr": 1.0e-4,
        "betas": [0.9, 0.999],
        "eps": 1.0e-8,
        "weight_decay": 0.0,
        "grad_clip": 0.0,        # max gradient norm; 0 = off
    },
    "sched": {
        "type": "step",          # step | cosine | constant
        "warmup_steps": 0,
        "milestones": [],        # step: multiply the lr by gamma at each of these steps
        "gamma": 0.5,
        "min_lr": 0.0,           # cosine: the lr reached at the last step
    },
    "gan": {
        "d_hparams": {},
        "optim": {"lr": 1.0e-4, "betas": [0.9, 0.999]},
    },
    "init": {
        "from": None,            # weights to start from (.safetensors export or a training .pt)
        "strict": True,          # False: load only tensors whose name and shape match
    },
    "train": {
        "steps": 100000,
        "seed": 0,
        "device": "auto",
        "y_channel": "auto",     # train Y-channel models on luma (as their papers did)
        "amp": "auto",           # auto (bf16 or fp16 on CUDA, off on CPU), bf16, fp16, off
        "channels_last": "auto", # auto = on CUDA
        "compile": False,        # true (inductor's default mode), false, or a torch.compile mode:
                                 # reduce-overhead (adds CUDA graphs), max-autotune, ...
        "ema": 0.0,              # EMA decay; 0 = off
        "export": "auto",        # final weights: auto (ema if on, else best), best, last, ema
        "log_every": 50,
        "ckpt_every": 1000,
        "max_minutes": None,     # wall-clock budget; stops, checkpoints and exports when reached
        "threads": None,         # torch CPU threads; None = torch's default
    },
    "val": {
        "dataset": "Set14",      # a set under val.root (<root>/<name>/HR); null = no validation
        "root": None,            # None = eval.datasets.find_data_root() (the shared benchmarks)
        "every": 1000,           # 0 = validate only at the end
        "max_images": None,
    },
}

# Sections whose keys are passed through (model hyper-parameters).
FREE_FORM = {("model", "hparams"), ("gan", "d_hparams")}


class _Loader(yaml.SafeLoader):
    """Safe YAML with two YAML 1.2 habits: ``1e-4`` (no dot) is a float, and only
    true/false are booleans (``train.amp=off`` stays the string "off")."""


_BOOL = "tag:yaml.org,2002:bool"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _BOOL]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(_BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _merge(base: dict, new: dict, path: tuple[str, ...], check: bool) -> dict:
    out = copy.deepcopy(base)
    for key, value in new.items():
        here = path + (key,)
        if check and path not in FREE_FORM and key not in base:
            _unknown(here, base)
        if isinstance(value, dict) and isinstance(out.get(key), dict) and here not in FREE_FORM:
            out[key] = _merge(out[key], value, here, check)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _unknown(path: tuple[str, ...], siblings: dict) -> None:
    hint = difflib.get_close_matches(path[-1], [str(k) for k in siblings], n=1)
    where = ".".join(path)
    raise ConfigError(f"unknown config key {where!r}"
                      + (f"; did you mean {'.'.join(path[:-1] + (hint[0],))!r}?" if hint else ""))


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader) or {}
    except OSError as e:
        raise ConfigError(f"cannot read recipe {path}: {e.strerror or e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"recipe {path} is not valid YAML: {str(e).splitlines()[0]}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {path} must be a mapping of sections")
    return data


def _load_recipe(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"recipe {path} includes itself through 'base'")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return _merge(DEFAULTS, data, (), check=True)
    return _merge(_load_recipe(path.parent / base, seen + (path,)), data, (), check=True)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"optim.lr=1e-4"`` -> (["optim", "lr"], 0.0001); the value is a YAML scalar/list."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} must look like section.key=value")
    try:
        value = yaml.load(raw, Loader=_Loader) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"cannot parse the value of override {text!r}: {str(e).splitlines()[0]}") from e
    return key.strip().split("."), value


def apply_overrides(cfg: dict, overrides: list[str]) -> dict:
    """A copy of ``cfg`` with each ``dotted.key=value`` applied (unknown keys raise)."""
    for text in overrides:
        keys, value = parse_override(text)
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        cfg = _merge(cfg, nested, (), check=True)
    return cfg


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """DEFAULTS <- recipe file (and its ``base`` chain) <- overrides, validated."""
    cfg = _load_recipe(Path(path)) if path is not None else copy.deepcopy(DEFAULTS)
    cfg = apply_overrides(cfg, list(overrides))
    validate(cfg)
    return cfg


def _lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


_CHOICES = {
    ("data", "lr_resize"): ("auto", "exact", "float"),
    ("loss", "pixel", "type"): ("l1", "mse", "charbonnier"),
    ("loss", "perceptual", "criterion"): ("mse", "l1"),
    ("loss", "adversarial", "type"): ("gan", "ragan"),
    ("optim", "type"): ("adam", "adamw"),
    ("sched", "type"): ("step", "cosine", "constant"),
    ("train", "amp"): ("auto", "bf16", "fp16", "off"),
    ("train", "export"): ("auto", "best", "last", "ema"),
    ("train", "y_channel"): ("auto", True, False),
    ("train", "channels_last"): ("auto", True, False),
    ("train", "compile"): (False, True, "default", "reduce-overhead", "max-autotune",
                           "max-autotune-no-cudagraphs"),
    **{("degrade", name, "at"): ("before", "after") for name in ("blur", "noise", "jpeg")},
}


def validate(cfg: dict) -> None:
    """Raise ConfigError for values that cannot work (before any data is read)."""
    if not cfg["model"]["name"]:
        raise ConfigError("the recipe names no model; set model.name (e.g. model.name=edsr_baseline)")
    for path, choices in _CHOICES.items():
        value = _lookup(cfg, path)
        if value not in choices:
            raise ConfigError(f"{'.'.join(path)} must be one of {', '.join(map(str, choices))}, not {value!r}")
    for key in ("steps", "log_every"):
        if not isinstance(cfg["train"][key], int) or cfg["train"][key] < 1:
            raise ConfigError(f"train.{key} must be a positive integer, got {cfg['train'][key]!r}")
    for key in ("patch", "batch"):
        if not isinstance(cfg["data"][key], int) or cfg["data"][key] < 1:
            raise ConfigError(f"data.{key} must be a positive integer, got {cfg['data'][key]!r}")
    if not cfg["data"]["hr_dirs"]:
        raise ConfigError("no training images: set data.hr_dirs to one or more folders of HR images")
    if cfg["train"]["export"] == "ema" and not cfg["train"]["ema"]:
        raise ConfigError("train.export=ema needs train.ema (a decay such as 0.999)")
