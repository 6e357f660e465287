"""Saving and loading weights: our safetensors format, official EDSR/RCAN files, spandrel.

Our format is a safetensors file whose (str -> str) metadata holds ``format``
(``srwb/1``), ``arch``, ``scale``, ``dtype`` and the JSON fields ``hparams``,
``provenance`` and ``eval``. Pickled files (``.pt``/``.pth``) are only ever read with
``torch.load(weights_only=True)``, which refuses anything but plain tensors and
containers, so a malicious file cannot run code.
"""
from __future__ import annotations

import json
import os
import pickle
import re
import tempfile
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from sr.errors import CheckpointError, ScaleError
from sr.paths import PROJECT_ROOT

FORMAT = "srwb/1"
WEIGHTS_ENV = "SR_WEIGHTS_DIR"
WEIGHTS_DIR = PROJECT_ROOT / "weights"
JSON_FIELDS = ("hparams", "provenance", "eval")
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
SPANDREL_PREFIX = "spandrel:"

# Wrappers that training frameworks put around the real state dict, most preferred
# first: BasicSR stores both ``params`` and the EMA weights ``params_ema``, and the
# EMA ones are the ones published.
_WRAPPER_KEYS = ("params_ema", "params-ema", "params", "state_dict", "model_state_dict", "model", "net", "netG")
# Not "model.": the original ESRGAN files name their layers model.0, model.1, ...
_STRIP_PREFIXES = ("module.", "netG.")
_BUNDLED_NAME = re.compile(r"^(?P<arch>.+)_x(?P<scale>\d+)$")


def weights_dir() -> Path:
    """Folder of bundled weights: ``$SR_WEIGHTS_DIR`` if set, else ``WEIGHTS_DIR``."""
    env = os.environ.get(WEIGHTS_ENV)
    return Path(env) if env else WEIGHTS_DIR


def bundled_weights() -> list[tuple[str, int, Path]]:
    """``(arch, scale, path)`` for every ``<arch>_x<scale>.safetensors`` in the weights folder."""
    folder = weights_dir()
    found = []
    for path in sorted(folder.glob("*.safetensors")) if folder.is_dir() else []:
        m = _BUNDLED_NAME.match(path.stem)
        if m:
            found.append((m["arch"], int(m["scale"]), path))
    return found


# ---------------------------------------------------------------- saving

def save_checkpoint(model: nn.Module, path: str | os.PathLike, metadata: dict | None = None,
                    half: bool = False) -> Path:
    """Write ``model``'s weights and metadata to a safetensors file, atomically.

    ``metadata`` may hold ``provenance``/``eval`` (any JSON-serialisable values) and
    other string fields; ``format``, ``arch``, ``scale``, ``hparams`` and ``dtype``
    always come from the model. ``half=True`` stores floating tensors as fp16
    (half the size; loading gives fp32 back).
    """
    path = Path(path)
    dtype = torch.float16 if half else torch.float32
    tensors = {}
    for key, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if t.is_floating_point():
            t = t.to(dtype)
        # clone: safetensors refuses tensors that share storage
        tensors[key] = t.contiguous().clone()
    meta = {}
    for key, value in (metadata or {}).items():
        meta[key] = json.dumps(value) if key in JSON_FIELDS or not isinstance(value, str) else value
    meta.update(format=FORMAT, arch=model.arch, scale=str(model.scale),
                hparams=json.dumps(getattr(model, "hparams", {})), dtype=str(dtype).removeprefix("torch."))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, tmp, metadata=meta)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# ---------------------------------------------------------------- reading files

def read_metadata(path: str | os.PathLike) -> dict:
    """Metadata of a safetensors file, JSON fields decoded and ``scale`` as int."""
    path = _existing_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({_first_line(e)})") from None
    meta = dict(raw)
    for key in JSON_FIELDS:
        if key in meta:
            try:
                meta[key] = json.loads(meta[key])
            except json.JSONDecodeError:
                raise CheckpointError(f"{path}: metadata field {key!r} is not valid JSON") from None
    if "scale" in meta:
        try:
            meta["scale"] = int(meta["scale"])
        except ValueError:
            raise CheckpointError(f"{path}: metadata scale {meta['scale']!r} is not an integer") from None
    return meta


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Tensors of a weights file (safetensors or a pickled plain state dict), unwrapped.

    Wrappers (``params_ema``, ``params``, ``state_dict``, ``model``, ...) and common
    prefixes (``module.``) are removed. Pickles are read with ``weights_only=True``:
    one that holds anything but tensors and plain containers is refused.
    """
    path = _existing_file(path)
    if path.suffix.lower() == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except Exception as e:
            raise CheckpointError(f"cannot read {path}: not a valid safetensors file ({_first_line(e)})") from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refusing to load {path}: it contains pickled code or objects ({_unpickling_reason(e)}); "
            "only plain state dicts are accepted; convert it to .safetensors in a trusted environment"
        ) from None
    except Exception as e:
        raise CheckpointError(f"cannot read {path}: corrupt or not a PyTorch weights file "
                              f"({type(e).__name__}: {_first_line(e) or 'empty file'})") from None
    return _unwrap_state_dict(obj, path)


def _existing_file(path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint file not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file is empty: {path}")
    return path


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return lines[0][:200] if lines else ""


def _unpickling_reason(e: BaseException) -> str:
    """The informative line of torch's long weights_only error (e.g. the blocked global)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for ln in lines:
        if "GLOBAL" in ln or ln.startswith("Unsupported"):
            return ln[:200]
    return "not a plain state dict"


def _unwrap_state_dict(obj, path) -> dict[str, torch.Tensor]:
    for _ in range(3):  # wrappers may nest, e.g. {"model": {"state_dict": ...}}
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _WRAPPER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None and len(obj) == 1 and isinstance(next(iter(obj.values())), dict):
            inner = next(iter(obj.values()))
        if inner is None:
            break
        obj = inner
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a state dict")
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{path} contains no tensors (keys: {_preview(list(obj))})")
    return _strip_prefixes(sd)


def _strip_prefixes(sd: dict) -> dict:
    for prefix in _STRIP_PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _preview(items, n: int = 4) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:n])
    return shown + (f", ... ({len(items)} in all)" if len(items) > n else "")


# ---------------------------------------------------------------- building models

def load_model(name_or_path: str | os.PathLike, scale: int | None = None, device="cpu") -> nn.Module:
    """A ready model (eval mode, on ``device``) from a name or a weights file.

    Names: ``"bicubic"`` (needs ``scale``), ``"<arch>"`` with ``scale``, or
    ``"<arch>_x<scale>"``, looked up as ``<weights dir>/<arch>_x<scale>.safetensors``.
    Files: our safetensors checkpoints, official EDSR/RCAN state dicts, and any
    super-resolution state dict spandrel recognises. The model carries ``.scale``,
    ``.arch`` and ``.metadata``. An explicit ``scale`` that disagrees with the
    weights raises ScaleError.
    """
    from sr.inference import pick_device

    device = pick_device(device)  # a clear error for an unavailable device, before any work
    path = Path(name_or_path)
    if path.is_file() or path.suffix.lower() in (".safetensors", *PICKLE_SUFFIXES) or os.sep in str(name_or_path):
        model = _load_file(path, scale)
    else:
        model = _load_named(str(name_or_path), scale)
    return model.to(device).eval()


def _load_named(name: str, scale: int | None) -> nn.Module:
    from sr.models import MODELS, create_model

    arch, name_scale = name, None
    m = _BUNDLED_NAME.match(name)
    if m and name not in MODELS:
        arch, name_scale = m["arch"], int(m["scale"])
        if scale is not None and scale != name_scale:
            raise ScaleError(f"model {name!r} is x{name_scale}, but scale {scale} was asked for")
    scale = scale if scale is not None else name_scale
    if arch not in MODELS:
        raise CheckpointError(f"unknown model {name!r}: not a file and not an architecture "
                              f"(architectures: {', '.join(MODELS)}; {_available_text()})")
    if arch == "bicubic":
        if scale is None:
            raise ScaleError("bicubic needs a scale (e.g. scale=4)")
        model = create_model("bicubic", scale)
        model.metadata = {"arch": "bicubic", "scale": scale}
        return model
    if scale is None:
        scales = [s for a, s, _ in bundled_weights() if a == arch]
        if len(scales) != 1:
            raise ScaleError(f"model {arch!r} needs a scale ({_available_text()})")
        scale = scales[0]
    path = weights_dir() / f"{arch}_x{scale}.safetensors"
    if not path.is_file():
        raise CheckpointError(f"no bundled weights for {arch} x{scale}: {path} not found "
                              f"({_available_text()}); pass a checkpoint file instead")
    return _load_file(path, scale)


def _available_text() -> str:
    names = [f"{a}_x{s}" for a, s, _ in bundled_weights()]
    return "bundled weights: " + (", ".join(names) if names else f"none in {weights_dir()}")


def _load_file(path: Path, scale: int | None) -> nn.Module:
    sd = load_state_dict_file(path)
    meta = read_metadata(path) if path.suffix.lower() == ".safetensors" else {}
    if meta.get("format") == FORMAT:
        return _from_own_checkpoint(path, sd, meta, scale)
    sd = _strip_prefixes(sd)
    model = _from_official_layout(path, sd)
    if model is None:
        model = _from_spandrel(path, sd)
    _check_scale(path, model.scale, scale)
    model.metadata = {"format": "third-party", "source": str(path), "arch": model.arch,
                      "scale": model.scale, "hparams": getattr(model, "hparams", {})}
    return model


def _check_scale(path, actual: int, wanted: int | None) -> None:
    if wanted is not None and int(wanted) != actual:
        raise ScaleError(f"{path} holds a x{actual} model, but scale {wanted} was asked for")


def _from_own_checkpoint(path: Path, sd: dict, meta: dict, scale: int | None) -> nn.Module:
    from sr.models import create_model

    for key in ("arch", "scale"):
        if key not in meta:
            raise CheckpointError(f"{path}: metadata lacks {key!r}")
    _check_scale(path, meta["scale"], scale)
    arch = meta["arch"]
    if arch.startswith(SPANDREL_PREFIX):
        model = _from_spandrel(path, {k.removeprefix("net."): v for k, v in sd.items()})
        if model.arch != arch:
            raise CheckpointError(f"{path}: metadata says {arch}, but spandrel detects {model.arch}")
    else:
        try:
            model = create_model(arch, meta["scale"], **meta.get("hparams", {}))
        except ScaleError:
            raise
        except Exception as e:
            raise CheckpointError(f"{path}: cannot build {arch} x{meta['scale']} "
                                  f"with hparams {meta.get('hparams')}: {_first_line(e)}") from None
        load_weights(model, sd, what=f"{path} ({arch} x{meta['scale']})")
    model.metadata = meta
    return model


def load_weights(model: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """``model.load_state_dict(sd)``, strict, with an error naming the offending keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    mismatched = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in sd and sd[k].shape != own[k].shape]
    problems = []
    if mismatched:
        problems.append(f"shape mismatch: {_preview(mismatched, 3)}")
    if missing:
        problems.append(f"missing keys: {_preview(missing, 3)}")
    if unexpected:
        problems.append(f"unexpected keys: {_preview(unexpected, 3)}")
    if problems:
        raise CheckpointError(f"weights do not fit {what}: " + "; ".join(problems))
    model.load_state_dict(sd)


def _seq_len(sd: dict, prefix: str) -> int:
    """Number of consecutive ``prefix.<i>.`` entries starting at 0."""
    n = 0
    while any(k.startswith(f"{prefix}.{n}.") for k in sd):
        n += 1
    return n


def _detect_official(sd: dict) -> tuple[str, int, dict] | None:
    """(arch, scale, hparams) of an EDSR-PyTorch / RCAN layout, else None."""
    needed = ("head.0.weight", "tail.0.0.weight", "tail.1.weight")
    if not all(k in sd for k in needed) or sd["head.0.weight"].shape[1] != 3:
        return None
    n_feats = sd["head.0.weight"].shape[0]
    upsampler = [sd[f"tail.0.{i}.weight"].shape[0] for i in range(0, 8, 2) if f"tail.0.{i}.weight" in sd]
    if upsampler == [9 * n_feats]:
        scale = 3
    elif upsampler and all(c == 4 * n_feats for c in upsampler):
        scale = 2 ** len(upsampler)
    else:
        return None
    if "body.0.body.0.body.3.conv_du.0.weight" in sd:
        hparams = {"n_resgroups": _seq_len(sd, "body") - 1, "n_resblocks": _seq_len(sd, "body.0.body") - 1,
                   "n_feats": n_feats,
                   "reduction": n_feats // sd["body.0.body.0.body.3.conv_du.0.weight"].shape[0]}
        return "rcan", scale, hparams
    if "body.0.body.0.weight" in sd and "body.0.body.2.weight" in sd:
        hparams = {"n_resblocks": _seq_len(sd, "body") - 1, "n_feats": n_feats}
        # res_scale is not in the weights; EDSR-PyTorch uses 0.1 only for its wide model
        return ("edsr" if n_feats > 64 else "edsr_baseline"), scale, hparams
    return None


def _from_official_layout(path: Path, sd: dict) -> nn.Module | None:
    """Our EDSR/EDSR-baseline/RCAN for an official-layout state dict, else None.

    Official files were trained on [0, 255] (our default ``rgb_range``). Hyper-
    parameters not visible in the weights (EDSR's ``res_scale``) take the registry
    default of the detected architecture.
    """
    from sr.models import create_model

    found = _detect_official(sd)
    if found is None:
        return None
    arch, scale, hparams = found
    model = create_model(arch, scale, **hparams)
    load_weights(model, sd, what=f"{path} (detected {arch} x{scale}, {hparams})")
    return model


class SpandrelModel(nn.Module):
    """A spandrel super-resolution model under the project's model contract.

    Pads the input to the model's size requirements (reflect) and crops the output.
    Single-channel models run on R, G and B separately.
    """

    def __init__(self, descriptor):
        super().__init__()
        self.net = descriptor.model
        self.scale = int(descriptor.scale)
        self.arch = SPANDREL_PREFIX + descriptor.architecture.id
        self.hparams: dict = {}  # spandrel re-detects them from the weights
        self.tags = list(descriptor.tags)
        self.channels = descriptor.input_channels
        self.size_requirements = descriptor.size_requirements
        self.supports_half = descriptor.supports_half
        self.supports_bfloat16 = descriptor.supports_bfloat16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        if self.channels == 1:
            x = x.reshape(n * c, 1, h, w)
        pad_w, pad_h = self.size_requirements.get_padding(w, h)
        if pad_w or pad_h:
            # reflect needs pad < size; replicate covers whatever is left
            rw, rh = min(pad_w, w - 1), min(pad_h, h - 1)
            x = nn.functional.pad(x, (0, rw, 0, rh), mode="reflect")
            x = nn.functional.pad(x, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
        else:
            x = x.clone()  # some spandrel archs scale their input in place
        out = self.net(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        out = out[..., : h * self.scale, : w * self.scale]
        return out.reshape(n, c, h * self.scale, w * self.scale)


def _from_spandrel(path: Path, sd: dict) -> SpandrelModel:
    import spandrel

    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError:
        raise CheckpointError(f"{path}: unknown architecture (not an EDSR/RCAN layout, and spandrel does "
                              f"not recognise it; first keys: {_preview(sd)})") from None
    except Exception as e:
        raise CheckpointError(f"{path}: spandrel recognised the file but could not load it "
                              f"({type(e).__name__}: {_first_line(e)})") from None
    name = desc.architecture.id
    if not isinstance(desc, spandrel.ImageModelDescriptor) or desc.purpose != "SR":
        raise CheckpointError(f"{path}: {name} is a {desc.purpose} model, not super-resolution")
    if desc.input_channels != desc.output_channels or desc.input_channels not in (1, 3):
        raise CheckpointError(f"{path}: {name} maps {desc.input_channels} to {desc.output_channels} "
                              "channels; only RGB (3 -> 3) and grayscale (1 -> 1) models are supported")
    return SpandrelModel(desc)
