"""Image I/O: read what users upload, hand the engine plain planes, write results atomically.

Every image that leaves `read_image` is in one of five modes: 'L', 'LA', 'RGB', 'RGBA'
or 'I;16' (16-bit gray). Pillow has no mode for 16-bit colour or 16-bit gray+alpha, so
those come back as a `DeepImage`: an ordinary PIL image holding the 8-bit rendering (for
display and for code that only knows PIL) plus the exact uint16 samples in `.samples16`.
`decompose`, `to_numpy` and `save_image` use the exact samples; any other PIL operation
on a `DeepImage` returns a plain 8-bit image.
"""

from __future__ import annotations

import contextlib
import io
import os
import struct
import sys
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from sr.errors import ImageReadError, ImageWriteError, InputTooLargeError

DEFAULT_MAX_PIXELS = 64_000_000

SUPPORTED = "PNG, JPEG, WebP, BMP or TIFF"
_SAVE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF")
_NO_ALPHA_FORMATS = ("JPEG", "BMP")  # Pillow reads 32-bit BMP back without alpha
_EIGHT_BIT_FORMATS = ("JPEG", "WEBP", "BMP")
_ICC_FORMATS = ("PNG", "JPEG", "WEBP", "TIFF")

# Exceptions Pillow's decoders raise on damaged data.
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)


class DeepImage(Image.Image):
    """A PIL image ('LA', 'RGB' or 'RGBA') whose exact 16-bit samples are `samples16` (H, W, C)."""

    samples16: np.ndarray


@dataclass
class ImagePlanes:
    """What the inference engine works on: float planes in [0, 1] on the CPU."""

    rgb: torch.Tensor  # (3, H, W) float32; gray images are replicated to 3 channels
    alpha: torch.Tensor | None  # (1, H, W) float32, or None when the image is opaque
    gray: bool
    bit_depth: int  # 8 or 16
    icc_profile: bytes | None = None  # colour profile of the input, written back on save


# ---------------------------------------------------------------- reading


def read_image(src, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read a path, bytes, binary file, PIL image or numpy array into a normalised image.

    Raises ImageReadError for anything that is not a readable image and
    InputTooLargeError when it has more than `max_pixels` pixels (None: no limit of ours).
    """
    if isinstance(src, np.ndarray):
        if src.ndim >= 2:
            _check_pixels(src.shape[1], src.shape[0], max_pixels, "the array")
        return from_numpy(src)
    if isinstance(src, Image.Image):
        _check_pixels(*src.size, max_pixels, "the image")
        if isinstance(src, DeepImage):
            return src
        _load(src, "the image")
        return _normalise(ImageOps.exif_transpose(src))  # a copy: the caller's image is untouched
    opener, name = _opener(src)
    return _read_file(opener, name, max_pixels)


def _opener(src):
    """A function returning a fresh binary stream over `src`, and a name for messages."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.exists():
            raise ImageReadError(f"cannot read image: {path} does not exist; check the path")
        if path.is_dir():
            raise ImageReadError(f"cannot read image: {path} is a folder; give an image file")
        try:
            empty = path.stat().st_size == 0
        except OSError as e:
            raise ImageReadError(f"cannot read image: {path}: {_line(e)}; "
                                 "check that the file is readable") from e
        if empty:
            raise ImageReadError(f"cannot read image: {path} is empty (0 bytes); "
                                 "export or upload it again")

        def open_path():
            try:
                return open(path, "rb")
            except OSError as e:
                raise ImageReadError(f"cannot read image: {path}: {_line(e)}; "
                                     "check that the file is readable") from e

        return open_path, str(path)
    if isinstance(src, (bytes, bytearray, memoryview)):
        data, name = bytes(src), "the uploaded data"
    elif hasattr(src, "read"):
        name = str(getattr(src, "name", "the uploaded file"))
        try:
            data = src.read()
        except OSError as e:
            raise ImageReadError(f"cannot read image: {name}: {_line(e)}; upload it again") from e
        if not isinstance(data, bytes):
            raise ImageReadError(f"cannot read image: {name} is opened in text mode; open it with 'rb'")
    else:
        raise ImageReadError(f"cannot read image from a {type(src).__name__}; "
                             "give a file path, bytes, a binary file, a PIL image or a numpy array")
    if not data:
        raise ImageReadError(f"cannot read image: {name} is empty (0 bytes); export or upload it again")
    return lambda: io.BytesIO(data), name


def _read_file(opener, name: str, max_pixels: int | None) -> Image.Image:
    with opener() as f:
        img = _open(f, name)
        _check_pixels(*img.size, max_pixels, name)
        rawmode = _rawmode(img)
        if rawmode == "LA;16B":
            return _read_gray_alpha16(img, name)
        if rawmode is not None and rawmode[:-1] in ("RGB;16", "RGBA;16") and rawmode[-1] in "BLN":
            with opener() as f2:
                return _read_colour16(img, _open(f2, name), rawmode, name)
        return _normalise(_oriented(_load(img, name)))


def _open(f, name: str) -> Image.Image:
    try:
        return Image.open(f)
    except Image.DecompressionBombError as e:
        raise InputTooLargeError(f"image {name} is above Pillow's decompression-bomb limit "
                                 f"({_line(e)}); downscale it first") from e
    except UnidentifiedImageError as e:
        raise ImageReadError(f"cannot read image: {name} is not a {SUPPORTED} image; "
                             "convert it to PNG and try again") from e
    except _DECODE_ERRORS as e:
        raise ImageReadError(f"cannot read image: {name} is corrupt ({_line(e)}); "
                             "export or upload it again") from e


def _load(img: Image.Image, name: str) -> Image.Image:
    """Decode all pixels now, so truncated or damaged data fails here."""
    try:
        img.load()
    except _DECODE_ERRORS as e:
        raise ImageReadError(f"cannot read image: {name} is corrupt or truncated ({_line(e)}); "
                             "export or upload it again") from e
    return img


def _oriented(img: Image.Image) -> Image.Image:
    ImageOps.exif_transpose(img, in_place=True)
    return img


def _check_pixels(width: int, height: int, max_pixels: int | None, name: str) -> None:
    if max_pixels is not None and width * height > max_pixels:
        raise InputTooLargeError(
            f"image {name} is {width}x{height} ({width * height / 1e6:.1f} megapixels), above the "
            f"limit of {max_pixels / 1e6:.1f} megapixels; downscale it or raise the pixel limit")


def _line(e: BaseException) -> str:
    return " ".join(str(getattr(e, "strerror", None) or e or type(e).__name__).split())


# 16-bit colour: Pillow decodes it to 8 bits, keeping the high byte of each sample. The
# decoder is told to unpack with the opposite byte order on a second pass, which yields
# the low bytes; together they are the exact samples, decoded by Pillow's own codecs.
_OTHER_BYTE_ORDER = {"B": "L", "L": "B", "N": "B" if sys.byteorder == "little" else "L"}


def _rawmode(img: Image.Image) -> str | None:
    """The single rawmode all tiles of a not-yet-loaded image decode with, else None."""
    modes = {t[3] if isinstance(t[3], str) else (t[3] or (None,))[0] for t in (img.tile or [])}
    mode = modes.pop() if len(modes) == 1 else None
    return mode if isinstance(mode, str) else None  # some codecs take no rawmode


def _set_rawmode(img: Image.Image, rawmode: str) -> None:
    img.tile = [t[:3] + ((rawmode if isinstance(t[3], str) else (rawmode, *t[3][1:])),)
                for t in img.tile]


def _read_colour16(hi: Image.Image, lo: Image.Image, rawmode: str, name: str) -> Image.Image:
    info = dict(hi.info)
    _set_rawmode(lo, rawmode[:-1] + _OTHER_BYTE_ORDER[rawmode[-1]])
    samples = np.asarray(_oriented(_load(hi, name))).astype(np.uint16) << 8
    samples |= np.asarray(_oriented(_load(lo, name)))
    key = info.get("transparency")
    if samples.shape[-1] == 3 and isinstance(key, tuple):
        alpha = np.where(np.all(samples == np.array(key, np.uint16), axis=-1), 0, 65535)
        samples = np.dstack([samples, alpha.astype(np.uint16)])
    return _deep_image(samples, info.get("icc_profile"))


def _read_gray_alpha16(img: Image.Image, name: str) -> Image.Image:
    # Pillow opens 16-bit gray+alpha as 8-bit RGBA; read the 4 stored bytes verbatim instead.
    info = dict(img.info)
    _set_rawmode(img, "RGBA")
    raw = np.asarray(_oriented(_load(img, name)), dtype=np.uint16)
    return _deep_image((raw[..., 0::2] << 8) | raw[..., 1::2], info.get("icc_profile"))


def _normalise(img: Image.Image) -> Image.Image:
    """Convert a loaded image to 'L', 'LA', 'RGB', 'RGBA', 'I;16' (or keep a DeepImage)."""
    mode = img.mode
    if isinstance(img, DeepImage):
        return img
    if "transparency" in img.info and mode in ("L", "RGB", "I;16"):
        if mode == "I;16":
            gray = np.asarray(img, dtype=np.uint16)
            alpha = np.where(gray == img.info["transparency"], 0, 65535).astype(np.uint16)
            return _deep_image(np.dstack([gray, alpha]), img.info.get("icc_profile"))
        return _without_transparency(img.convert("LA" if mode == "L" else "RGBA"))
    if mode in ("L", "LA", "RGB", "RGBA", "I;16"):
        return img
    if mode == "1":
        return img.convert("L")
    if mode in ("P", "PA"):
        return _without_transparency(
            img.convert("RGBA" if mode == "PA" or img.has_transparency_data else "RGB"))
    if mode == "La":
        return img.convert("LA")
    if mode == "CMYK":
        # Pillow's conversion ignores any embedded CMYK profile, so the profile is dropped
        # rather than attached to RGB pixels it does not describe.
        rgb = img.convert("RGB")
        rgb.info.pop("icc_profile", None)
        return rgb
    if mode.startswith("I;16"):  # big-endian or explicit-endian 16-bit gray
        return _with_info(Image.fromarray(np.asarray(img).astype(np.uint16)), img)
    if mode in ("I", "F"):
        return _with_info(Image.fromarray(_to_uint16(np.asarray(img))), img)
    try:
        return img.convert("RGBA" if mode.endswith(("A", "a")) else "RGB")
    except ValueError as e:
        raise ImageReadError(f"cannot read image: colour mode {mode} is not supported; "
                             "convert it to RGB and try again") from e


def _without_transparency(img: Image.Image) -> Image.Image:
    img.info.pop("transparency", None)  # now carried by the alpha channel
    return img


def _with_info(new: Image.Image, old: Image.Image) -> Image.Image:
    new.info = dict(old.info)
    return new


def _to_uint16(a: np.ndarray) -> np.ndarray:
    """32-bit int or float gray to 16 bits: in-range values keep their meaning, others are stretched."""
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ImageReadError("cannot read image: it contains NaN or infinite values; "
                             "export it with finite values")
    lo, hi = float(a.min()), float(a.max())
    integral = bool(np.all(a == np.round(a)))
    if integral and lo >= 0 and hi <= 65535:
        return a.astype(np.uint16)
    if not integral and lo >= 0 and hi <= 1:
        return np.round(a * 65535).astype(np.uint16)
    return np.round((a - lo) / ((hi - lo) or 1.0) * 65535).astype(np.uint16)


# ---------------------------------------------------------------- 16-bit helpers


def _deep_image(samples: np.ndarray, icc_profile: bytes | None = None) -> DeepImage:
    """Wrap uint16 (H, W, 2|3|4) samples; the PIL pixels are their rounded 8-bit rendering."""
    samples = np.ascontiguousarray(samples, dtype=np.uint16)
    img = Image.fromarray(_to_8bit(samples))
    img.__class__ = DeepImage  # same layout; adds only the samples16 attribute
    img.samples16 = samples
    if icc_profile:
        img.info["icc_profile"] = icc_profile
    return img


def _to_8bit(samples: np.ndarray) -> np.ndarray:
    # round(v * 255 / 65535) without a division (exact for every uint16 value)
    return ((samples.astype(np.uint32) * 255 + 32895) >> 16).astype(np.uint8)


def bit_depth(img: Image.Image) -> int:
    """Bits per sample of an image: 16 for 'I;16' and DeepImage, 32 for 'I'/'F', else 8."""
    if isinstance(img, DeepImage) or img.mode.startswith("I;16"):
        return 16
    return 32 if img.mode in ("I", "F") else 8


# ---------------------------------------------------------------- planes for the engine


def decompose(img: Image.Image) -> ImagePlanes:
    """Split an image into float planes; any PIL mode is normalised first."""
    img = _normalise(img)
    if isinstance(img, DeepImage):
        samples, depth = img.samples16, 16
    else:
        samples, depth = np.asarray(img), bit_depth(img)
    if samples.ndim == 2:
        samples = samples[..., None]
    planes = torch.from_numpy(np.array(samples.transpose(2, 0, 1), order="C"))  # writable copy
    planes = planes.to(torch.float32).div_(2 ** depth - 1)
    colour = planes[:1].expand(3, -1, -1) if img.mode in ("L", "LA", "I;16") else planes[:3]
    alpha = planes[-1:].contiguous() if img.mode in ("LA", "RGBA") else None
    return ImagePlanes(rgb=colour.contiguous(), alpha=alpha, gray=img.mode in ("L", "LA", "I;16"),
                       bit_depth=depth, icc_profile=img.info.get("icc_profile"))


def compose(planes: ImagePlanes) -> Image.Image:
    """Quantise planes back to an image of the input's kind.

    Gray images take the mean of the three channels: the model sees three equal
    channels, so its outputs differ only by small errors that the mean averages out.
    """
    rgb, alpha, depth = planes.rgb, planes.alpha, planes.bit_depth
    if depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {depth}")
    if rgb.ndim != 3 or (rgb.shape[0] != 3 and not (planes.gray and rgb.shape[0] == 1)):
        raise ValueError(f"rgb must have shape (3, H, W), got {tuple(rgb.shape)}")
    if alpha is not None and tuple(alpha.shape) != (1, *rgb.shape[1:]):
        raise ValueError(f"alpha must have shape (1, {rgb.shape[1]}, {rgb.shape[2]}), "
                         f"got {tuple(alpha.shape)}")
    colour = rgb.mean(0, keepdim=True) if planes.gray else rgb
    stacked = colour if alpha is None else torch.cat([colour, alpha.to(colour)])
    samples = _quantise(stacked, depth).transpose(1, 2, 0)
    if depth == 16 and samples.shape[-1] > 1:
        img = _deep_image(samples)
    else:
        img = Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples)
    if planes.icc_profile:
        img.info["icc_profile"] = planes.icc_profile
    return img


def _quantise(x: torch.Tensor, depth: int) -> np.ndarray:
    top = 2 ** depth - 1
    q = x.detach().float().cpu().clamp(0, 1).mul_(top).round_()  # clamp made a new tensor
    return q.numpy().astype(np.uint16 if depth == 16 else np.uint8)


def premultiply(planes: ImagePlanes) -> torch.Tensor:
    """Colour multiplied by alpha, so resampling does not pull in the colour of transparent pixels."""
    return planes.rgb if planes.alpha is None else planes.rgb * planes.alpha


def unpremultiply(rgb: torch.Tensor, alpha: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """Undo `premultiply` after resampling; shapes (..., 3, H, W) and (..., 1, H, W).

    Where alpha <= eps the pixel is invisible and its colour is set to 0 instead of
    amplifying noise by a near-zero division.
    """
    a = alpha.clamp(0, 1)
    colour = (rgb / a.clamp_min(eps)).clamp(0, 1)
    return torch.where(a > eps, colour, torch.zeros_like(colour))


def pil_to_tensor(img: Image.Image) -> torch.Tensor:
    """(1, 3, H, W) float in [0, 1]; gray is replicated, alpha is ignored."""
    return decompose(img).rgb.unsqueeze(0)


def tensor_to_pil(x: torch.Tensor, bit_depth: int = 8) -> Image.Image:
    """An RGB image from (1, 3, H, W) or (3, H, W) float in about [0, 1]."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"expected a single image, got a batch of {x.shape[0]}")
        x = x[0]
    return compose(ImagePlanes(rgb=x, alpha=None, gray=False, bit_depth=bit_depth))


# ---------------------------------------------------------------- numpy


def to_numpy(img: Image.Image) -> np.ndarray:
    """(H, W) for gray, else (H, W, C); uint8, or uint16 for 16-bit images."""
    img = _normalise(img)
    if isinstance(img, DeepImage):
        return img.samples16.copy()
    return np.array(img)


def from_numpy(arr) -> Image.Image:
    """An image from (H, W) or (H, W, 1|2|3|4) uint8, uint16, bool, int or float in [0, 1].

    uint16 gives a 16-bit image; float is clipped to [0, 1] and stored with 8 bits; other
    integer types are 8-bit when their values fit in 0..255, else 16-bit.
    """
    a = np.asarray(arr)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[..., 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)) or 0 in a.shape:
        raise ImageReadError(f"cannot read image: array of shape {a.shape} is not an image; "
                             "give (H, W) or (H, W, 1|2|3|4)")
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype.kind == "f":
        if not np.isfinite(a).all():
            raise ImageReadError("cannot read image: the array contains NaN or infinite values")
        a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
    elif a.dtype.kind in "iu" and a.dtype not in (np.uint8, np.uint16):
        lo, hi = int(a.min()), int(a.max())
        if lo < 0 or hi > 65535:
            raise ImageReadError(f"cannot read image: integer values {lo}..{hi} are outside "
                                 "0..65535; scale them to 8 or 16 bits")
        a = a.astype(np.uint8 if hi <= 255 else np.uint16)
    elif a.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"cannot read image: arrays of type {a.dtype} are not supported; "
                             "use uint8, uint16 or float in [0, 1]")
    if a.dtype == np.uint16 and a.ndim == 3:
        return _deep_image(a)
    return Image.fromarray(np.ascontiguousarray(a))


# ---------------------------------------------------------------- writing


def save_image(img: Image.Image, path, format: str | None = None) -> Path:
    """Write `img` atomically (temp file + rename) and return the path.

    The format comes from `format` or the suffix, PNG when there is none. PNG and TIFF
    keep alpha; PNG keeps 16 bits (TIFF only for gray). JPEG and BMP cannot keep
    transparency, so alpha is flattened onto white; JPEG, WebP and BMP store 8 bits.
    WebP is written lossless, JPEG at quality 95 without chroma subsampling.
    """
    path = Path(path)
    fmt = _save_format(path, format)
    img = _normalise(img)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)  # 0o666 & umask, like open()
        with os.fdopen(fd, "wb") as f:
            _write(img, f, fmt)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(OSError):  # e.g. the folder could not be created
            tmp.unlink()
        if isinstance(e, OSError):
            raise ImageWriteError(f"cannot write {path}: {_line(e)}; "
                          "check that the folder is writable and has free space") from e
        raise
    return path


def _save_format(path: Path, format: str | None) -> str:
    if format is None:
        if not path.suffix:
            return "PNG"
        format = Image.registered_extensions().get(path.suffix.lower(), path.suffix)
    fmt = format.upper().lstrip(".")
    fmt = {"JPG": "JPEG", "TIF": "TIFF"}.get(fmt, fmt)
    if fmt not in _SAVE_FORMATS:
        raise ImageWriteError(f"cannot save as {format!r}: use .png (lossless), .jpg, .webp, .bmp or .tiff")
    return fmt


def _write(img: Image.Image, f, fmt: str) -> None:
    icc = img.info.get("icc_profile")
    if isinstance(img, DeepImage):
        if fmt == "PNG":
            f.write(_encode_png16(img.samples16, icc))
            return
        img = img.copy()  # the 8-bit rendering
    if fmt in _EIGHT_BIT_FORMATS and img.mode == "I;16":
        img = Image.fromarray(_to_8bit(np.asarray(img, dtype=np.uint16)))
    if fmt in _NO_ALPHA_FORMATS and img.mode in ("LA", "RGBA"):
        img = _flatten_on_white(img)
    options = {"icc_profile": icc} if icc and fmt in _ICC_FORMATS else {}
    if fmt == "JPEG":
        options.update(quality=95, subsampling=0)
    elif fmt == "WEBP":
        options.update(lossless=True)
    img.save(f, format=fmt, **options)


def _flatten_on_white(img: Image.Image) -> Image.Image:
    base = Image.new(img.mode[:-1], img.size, 255 if img.mode == "LA" else (255, 255, 255))
    base.paste(img.convert(img.mode[:-1]), mask=img.getchannel("A"))
    return base


def _encode_png16(samples: np.ndarray, icc_profile: bytes | None) -> bytes:
    """A 16-bit PNG of (H, W, 2|3|4) samples (gray+alpha, RGB, RGBA), which Pillow cannot write."""
    h, w, c = samples.shape
    rows = samples.astype(">u2").reshape(h, w * c).view(np.uint8)
    filtered = rows.copy()
    filtered[:, 2 * c:] -= rows[:, :-2 * c]  # 'Sub' filter: difference to the previous pixel, mod 256
    scanlines = np.hstack([np.ones((h, 1), np.uint8), filtered])  # filter type 1 on every row

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    colour_type = {2: 4, 3: 2, 4: 6}[c]
    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, colour_type, 0, 0, 0))]
    if icc_profile:
        parts.append(chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(icc_profile)))
    parts += [chunk(b"IDAT", zlib.compress(scanlines.tobytes(), 6)), chunk(b"IEND", b"")]
    return b"".join(parts)


# ---------------------------------------------------------------- description


def image_info(img: Image.Image) -> str:
    """E.g. '640x480 px (0.31 MP), RGB + alpha, 8-bit'."""
    w, h = img.size
    kind = {"L": "grayscale", "LA": "grayscale + alpha", "RGB": "RGB", "RGBA": "RGB + alpha",
            "I;16": "grayscale"}.get(img.mode, f"mode {img.mode}")
    return f"{w}x{h} px ({w * h / 1e6:.2f} MP), {kind}, {bit_depth(img)}-bit"
