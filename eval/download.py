"""Fetch benchmark archives (for users with internet): resumable, verified, cached.

``python -m eval.download`` downloads the benchmark archive distributed with EDSR-PyTorch
(Set5, Set14, B100, Urban100 with MATLAB-made LR images, about 250 MB) into
``~/.cache/sr-workbench/downloads`` and extracts it to ``~/.cache/sr-workbench/benchmarks``,
where ``eval.datasets.find_data_root`` looks when no other data folder is configured.

Interrupted downloads resume with an HTTP Range request. Checksums are ``md5:<hex>`` or
``sha256:<hex>``; an archive without a known checksum is accepted only when the user
passes ``--checksum`` or ``--no-verify``.
"""
from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from eval.cache import cache_home
from eval.datasets import download_root
from sr.errors import DatasetError

CHUNK = 1 << 20


@dataclass(frozen=True)
class Archive:
    url: str
    checksum: str | None  # "md5:<hex>" / "sha256:<hex>"; None: unknown, the user must give one
    # (prefix inside the archive, destination prefix under the data root)
    layout: tuple[tuple[str, str], ...]
    note: str


ARCHIVES: dict[str, Archive] = {
    # Both MD5s are the ones torchSR's dataset loaders pin for these URLs (its Set5/Set14/
    # B100/Urban100 loaders share the benchmark archive); they could not be re-checked
    # here (no network). A mismatch stops with a clear error and leaves nothing behind.
    "benchmark": Archive("https://cv.snu.ac.kr/research/EDSR/benchmark.tar",
                         "md5:4ace41d33c2384b97e6b320cd0afd6ba", (("benchmark/", ""),),
                         "Set5, Set14, B100, Urban100 (EDSR-PyTorch), ~250 MB"),
    "DIV2K_valid": Archive("https://data.vision.ee.ethz.ch/cvl/DIV2K/DIV2K_valid_HR.zip",
                           "md5:9fcdda83005c5e5997799b69f955ff88",
                           (("DIV2K_valid_HR/", "DIV2K_valid/HR/"),),
                           "DIV2K validation HR images 0801-0900, ~430 MB"),
}


def _digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _parse_checksum(checksum: str) -> tuple[str, str]:
    algorithm, _, value = checksum.partition(":")
    if algorithm not in ("md5", "sha256") or not value:
        raise DatasetError(f"checksum {checksum!r} must look like md5:<hex> or sha256:<hex>")
    return algorithm, value.lower()


def verify(path: Path, checksum: str) -> None:
    """Raise DatasetError unless ``path`` has the given ``md5:``/``sha256:`` checksum."""
    algorithm, expected = _parse_checksum(checksum)
    got = _digest(path, algorithm)
    if got != expected:
        raise DatasetError(f"{path} has {algorithm} {got}, expected {expected}: the download is "
                           "corrupt or the file changed on the server; it was deleted, run again")


def fetch(url: str, dest: str | Path, checksum: str | None = None, progress: bool = True,
          timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` unless it is already there (and verified).

    Partial data lives in ``dest + '.part'`` and is resumed with an HTTP Range request;
    the file appears at ``dest`` only when complete and verified.
    """
    dest = Path(dest)
    if checksum is not None:
        _parse_checksum(checksum)  # a malformed checksum fails before any download
    if dest.is_file():
        if checksum is None:
            return dest
        try:
            verify(dest, checksum)
            return dest
        except DatasetError:
            dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to send: the partial file is complete
            response = None
        else:
            raise DatasetError(f"cannot download {url}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise DatasetError(f"cannot download {url} ({reason}); without internet, put the sets "
                           f"in <data root>/<Set>/HR yourself and pass --data-root") from None
    if response is not None:
        with response:
            resumed = have and getattr(response, "status", 200) == 206 and \
                response.headers.get("Content-Range", "").startswith(f"bytes {have}-")
            if not resumed:
                have = 0  # the server sent the whole file
            length = response.headers.get("Content-Length")
            total = have + int(length) if length and length.isdigit() else None
            bar = None
            if progress:
                from tqdm.auto import tqdm
                bar = tqdm(total=total, initial=have, unit="B", unit_scale=True, desc=dest.name)
            try:
                with open(part, "ab" if resumed else "wb") as f:
                    for block in iter(lambda: response.read(CHUNK), b""):
                        f.write(block)
                        if bar is not None:
                            bar.update(len(block))
            finally:
                if bar is not None:
                    bar.close()
    if checksum is not None:
        try:
            verify(part, checksum)
        except DatasetError:
            part.unlink()
            raise
    part.replace(dest)
    return dest


def _mapped(name: str, layout) -> str | None:
    """Destination of archive member ``name`` under the data root, or None to skip it."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts:
        return None
    text = path.as_posix()
    for prefix, target in layout:
        if text.startswith(prefix) and len(text) > len(prefix):
            return target + text[len(prefix):]
    return None


def extract(archive: str | Path, root: str | Path, layout=(("", ""),)) -> list[str]:
    """Unpack a .tar/.zip archive under ``root`` following ``layout``; return the top-level
    folders added. Existing folders are kept (never overwritten). Unpacking goes to a
    temporary folder first, so an interrupted run leaves no half-filled set behind."""
    archive, root = Path(archive), Path(root)
    root.mkdir(parents=True, exist_ok=True)
    added = []
    with tempfile.TemporaryDirectory(prefix=".extract-", dir=root) as tmp:
        tmp = Path(tmp)
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    target = _mapped(info.filename, layout)
                    if target is None or info.is_dir():
                        continue
                    out = tmp / target
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with z.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                members = []
                for m in t.getmembers():
                    target = _mapped(m.name, layout)
                    if target is not None and m.isfile():
                        m.name = target
                        members.append(m)
                t.extractall(tmp, members=members, filter="data")
        else:
            raise DatasetError(f"{archive} is neither a tar nor a zip archive")
        for folder in sorted(p for p in tmp.iterdir() if p.is_dir()):
            if not (root / folder.name).exists():
                folder.replace(root / folder.name)
                added.append(folder.name)
    return added


def download_benchmarks(name: str = "benchmark", root: str | Path | None = None,
                        url: str | None = None, checksum: str | None = None,
                        verify_checksum: bool = True, progress: bool = True) -> Path:
    """Download and extract the archive ``name`` (see ARCHIVES); return the data root."""
    if name not in ARCHIVES:
        raise DatasetError(f"unknown archive {name!r}; choose one of: {', '.join(ARCHIVES)}")
    spec = ARCHIVES[name]
    url = url or spec.url
    checksum = checksum or (spec.checksum if url == spec.url else None)
    if checksum is None and verify_checksum:
        raise DatasetError(f"no known checksum for {url}; pass --checksum md5:<hex> or "
                           "sha256:<hex>, or --no-verify to accept it unchecked")
    dest = cache_home() / "downloads" / PurePosixPath(urllib.request.urlparse(url).path).name
    archive = fetch(url, dest, checksum if verify_checksum else None, progress=progress)
    root = Path(root) if root is not None else download_root()
    extract(archive, root, spec.layout)
    return root


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m eval.download",
                                description="Download SR benchmark sets (needs internet).")
    p.add_argument("archive", nargs="?", default="benchmark", choices=sorted(ARCHIVES),
                   help="; ".join(f"{k}: {v.note}" for k, v in ARCHIVES.items()))
    p.add_argument("--root", help=f"extract here (default {download_root()})")
    p.add_argument("--url", help="download from this address instead (a mirror)")
    p.add_argument("--checksum", help="expected md5:<hex> or sha256:<hex> of the archive")
    p.add_argument("--no-verify", action="store_true", help="accept the archive without a checksum")
    args = p.parse_args(argv)
    try:
        root = download_benchmarks(args.archive, args.root, args.url, args.checksum,
                                   verify_checksum=not args.no_verify)
    except DatasetError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"benchmark sets are in {root}; evaluate with: python -m eval --data-root {root} ...")
    return 0


if __name__ == "__main__":
    sys.exit(main())
