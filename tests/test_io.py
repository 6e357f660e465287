import io
import os
import struct
import zlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageFile

from sr.errors import ImageReadError, InputTooLargeError, SRError
from sr.io import (DEFAULT_MAX_PIXELS, DeepImage, ImagePlanes, bit_depth, compose, decompose,
                   from_numpy, image_info, pil_to_tensor, premultiply, read_image, save_image,
                   tensor_to_pil, to_numpy, unpremultiply)

RNG = np.random.default_rng(1234)


def samples(shape, dtype=np.uint8):
    return RNG.integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)


def smooth(h, w, c):
    """An 8-bit image with gentle gradients, which JPEG keeps close to the original."""
    y, x = np.mgrid[0:h, 0:w]
    planes = [(x * 255 // (w - 1)), (y * 255 // (h - 1)), ((x + y) * 255 // (w + h - 2))]
    return np.dstack(planes[:c]).astype(np.uint8).squeeze()


def encoded(img, fmt, **options):
    buf = io.BytesIO()
    img.save(buf, format=fmt, **options)
    return buf.getvalue()


def assert_one_line(err):
    msg = str(err.value)
    assert msg and "\n" not in msg, msg


# ---------------------------------------------------------------- round trips through files

EXACT_CASES = [
    ("png", "L"), ("png", "LA"), ("png", "RGB"), ("png", "RGBA"), ("png", "I;16"),
    ("tiff", "L"), ("tiff", "LA"), ("tiff", "RGB"), ("tiff", "RGBA"), ("tiff", "I;16"),
    ("webp", "RGB"), ("webp", "RGBA"), ("bmp", "L"), ("bmp", "RGB"),
]
CHANNELS = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "I;16": 1}


@pytest.mark.parametrize("suffix,mode", EXACT_CASES)
def test_lossless_formats_round_trip_exactly(tmp_path, suffix, mode):
    dtype = np.uint16 if mode == "I;16" else np.uint8
    arr = samples((9, 13, CHANNELS[mode]), dtype).squeeze(-1) if CHANNELS[mode] == 1 \
        else samples((9, 13, CHANNELS[mode]), dtype)
    if mode.endswith("A"):
        arr[..., -1] = 255  # keep some opaque pixels and one fully transparent
        arr[0, 0, -1] = 0
        arr[0, 0, :-1] = 0  # lossless WebP may drop colour under alpha 0
    img = from_numpy(arr)
    assert img.mode == mode
    out = read_image(save_image(img, tmp_path / f"x.{suffix}"))
    assert out.mode == mode
    np.testing.assert_array_equal(to_numpy(out), arr)


@pytest.mark.parametrize("mode", ["L", "RGB"])
def test_jpeg_round_trip_keeps_mode_and_is_close(tmp_path, mode):
    arr = smooth(32, 48, CHANNELS[mode])
    out = read_image(save_image(from_numpy(arr), tmp_path / "x.jpg"))
    assert out.mode == mode and out.size == (48, 32)
    assert np.abs(to_numpy(out).astype(int) - arr).mean() < 2


def test_webp_gray_comes_back_as_equal_rgb(tmp_path):
    arr = samples((8, 8))
    out = read_image(save_image(from_numpy(arr), tmp_path / "g.webp"))
    assert out.mode == "RGB"  # WebP has no gray mode
    np.testing.assert_array_equal(to_numpy(out), np.dstack([arr] * 3))


@pytest.mark.parametrize("channels", [2, 3, 4])
def test_16bit_colour_png_round_trips_exactly(tmp_path, channels):
    arr = samples((11, 7, channels), np.uint16)
    img = from_numpy(arr)
    assert isinstance(img, DeepImage) and bit_depth(img) == 16
    path = save_image(img, tmp_path / "deep.png")
    with Image.open(path) as check:
        check.verify()  # chunk CRCs and structure, checked by Pillow's own reader
    with Image.open(path) as high:  # Pillow alone decodes the high byte of each sample
        high_bytes = np.asarray(high)
    expected_high = (arr >> 8).astype(np.uint8)
    if channels == 2:
        expected_high = expected_high[..., [0, 0, 0, 1]]  # Pillow widens gray+alpha to RGBA
    np.testing.assert_array_equal(high_bytes, expected_high)
    out = read_image(path)
    assert isinstance(out, DeepImage) and out.mode == {2: "LA", 3: "RGB", 4: "RGBA"}[channels]
    np.testing.assert_array_equal(to_numpy(out), arr)


@pytest.mark.parametrize("byteorder,compression", [("<", None), (">", None), ("<", "zlib")])
def test_16bit_rgb_tiff_from_an_independent_writer_is_exact(tmp_path, byteorder, compression):
    tifffile = pytest.importorskip("tifffile")
    arr = samples((6, 10, 3), np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", arr, photometric="rgb", byteorder=byteorder,
                     compression=compression)
    np.testing.assert_array_equal(to_numpy(read_image(tmp_path / "x.tif")), arr)


def test_16bit_png_through_planes_is_exact(tmp_path):
    gray = samples((10, 12), np.uint16)
    Image.fromarray(gray).save(tmp_path / "g16.png")
    img = read_image(tmp_path / "g16.png")
    assert img.mode == "I;16"
    planes = decompose(img)
    assert planes.gray and planes.bit_depth == 16 and planes.alpha is None
    assert planes.rgb.shape == (3, 10, 12) and planes.rgb.dtype == torch.float32
    out = read_image(save_image(compose(planes), tmp_path / "out.png"))
    assert out.mode == "I;16"
    np.testing.assert_array_equal(to_numpy(out), gray)

    rgba = samples((5, 6, 4), np.uint16)
    planes = decompose(read_image(save_image(from_numpy(rgba), tmp_path / "c16.png")))
    assert not planes.gray and planes.bit_depth == 16 and planes.alpha.shape == (1, 5, 6)
    np.testing.assert_array_equal(to_numpy(read_image(save_image(compose(planes), tmp_path / "o.png"))),
                                  rgba)


# ---------------------------------------------------------------- mode normalisation


def test_palette_with_transparency_becomes_rgba(tmp_path):
    img = Image.new("P", (4, 3), 1)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.putpixel((0, 0), 0)
    img.save(tmp_path / "p.png", transparency=0)
    out = read_image(tmp_path / "p.png")
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0 and out.getpixel((1, 0)) == (255, 0, 0, 255)
    assert "transparency" not in out.info


def test_palette_without_transparency_becomes_rgb(tmp_path):
    img = Image.new("P", (4, 3), 1)
    img.putpalette([0, 0, 0, 10, 200, 30] + [0] * 762)
    img.save(tmp_path / "p.gif")
    out = read_image(tmp_path / "p.gif")
    assert out.mode == "RGB" and out.getpixel((2, 2)) == (10, 200, 30)


def test_rgb_with_colour_key_becomes_rgba():
    img = Image.new("RGB", (3, 3), (9, 9, 9))
    img.putpixel((1, 1), (1, 2, 3))
    out = read_image(encoded(img, "PNG", transparency=(9, 9, 9)))
    assert out.mode == "RGBA"
    assert out.getpixel((0, 0))[3] == 0 and out.getpixel((1, 1)) == (1, 2, 3, 255)


def test_cmyk_becomes_rgb():
    cmyk = Image.new("CMYK", (6, 4), (0, 255, 255, 0))
    out = read_image(encoded(cmyk, "TIFF"))
    assert out.mode == "RGB" and out.getpixel((3, 2)) == (255, 0, 0)
    out = read_image(encoded(cmyk, "JPEG", quality=95))
    assert out.mode == "RGB"
    assert np.abs(np.asarray(out).astype(int) - [255, 0, 0]).max() < 8


def test_bilevel_and_wide_gray_modes_are_normalised():
    bilevel = Image.new("1", (5, 5), 1)
    assert read_image(encoded(bilevel, "PNG")).mode == "L"
    assert read_image(bilevel).getpixel((0, 0)) == 255

    ints = Image.fromarray(np.array([[0, 1000], [40000, 65535]], np.int32))
    assert ints.mode == "I"
    out = read_image(ints)
    assert out.mode == "I;16" and to_numpy(out).tolist() == [[0, 1000], [40000, 65535]]

    floats = Image.fromarray(np.array([[0.0, 0.5], [0.25, 1.0]], np.float32))
    assert floats.mode == "F"
    assert to_numpy(read_image(floats)).tolist() == [[0, 32768], [16384, 65535]]

    big_endian = Image.frombytes("I;16B", (2, 1), struct.pack(">HH", 258, 65000))
    out = read_image(big_endian)
    assert out.mode == "I;16" and to_numpy(out).tolist() == [[258, 65000]]


def _exif(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


def test_exif_orientation_is_applied_to_jpeg():
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 tall
    stored[:10, :10] = (255, 0, 0)  # red block at the stored top-left
    data = encoded(Image.fromarray(stored), "JPEG", quality=95,
                   exif=_exif(6))
    out = read_image(data)
    assert out.size == (20, 40)  # orientation 6: shown rotated 90 degrees clockwise
    shown = np.asarray(out).astype(int)
    assert np.abs(shown - np.rot90(stored, k=-1)).mean() < 3
    assert np.abs(shown - np.rot90(stored, k=1)).mean() > 15  # the other way round would differ
    assert shown[3, 16, 0] > 200 and shown[3, 3, 0] < 50  # red is now at the top-right
    assert 0x0112 not in out.getexif()  # so viewers do not rotate it twice


def _png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize("channels", [2, 3])
def test_exif_orientation_is_applied_to_16bit_png(tmp_path, channels):
    stored = samples((4, 6, channels), np.uint16)
    png = save_image(from_numpy(stored), tmp_path / "o.png").read_bytes()
    exif = _exif(6).tobytes().removeprefix(b"Exif\x00\x00")
    end_of_ihdr = 8 + 8 + 13 + 4
    png = png[:end_of_ihdr] + _png_chunk(b"eXIf", exif) + png[end_of_ihdr:]
    np.testing.assert_array_equal(to_numpy(read_image(png)), np.rot90(stored, k=-1))


def test_exif_orientation_is_applied_to_16bit_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    stored = samples((4, 6, 3), np.uint16)
    tifffile.imwrite(tmp_path / "o.tif", stored, photometric="rgb",
                     extratags=[(274, "H", 1, 6, True)])
    out = read_image(tmp_path / "o.tif")
    np.testing.assert_array_equal(to_numpy(out), np.rot90(stored, k=-1))


def test_exif_orientation_of_a_pil_input_leaves_the_caller_image_alone():
    img = Image.open(io.BytesIO(encoded(Image.new("RGB", (8, 4)), "JPEG",
                                        exif=_exif(8))))
    assert read_image(img).size == (4, 8)
    assert img.size == (8, 4)


# ---------------------------------------------------------------- sources


def test_bytes_file_objects_and_arrays_are_accepted(tmp_path):
    arr = samples((5, 7, 3))
    data = encoded(Image.fromarray(arr), "PNG")
    for src in (data, bytearray(data), io.BytesIO(data), str(_write(tmp_path / "a.png", data))):
        np.testing.assert_array_equal(to_numpy(read_image(src)), arr)
    with open(tmp_path / "a.png", "rb") as f:
        np.testing.assert_array_equal(to_numpy(read_image(f)), arr)
    np.testing.assert_array_equal(to_numpy(read_image(arr)), arr)


def _write(path, data):
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("arr,mode,expected", [
    (np.full((3, 4), 7, np.uint8), "L", 7),
    (np.full((3, 4, 1), 7, np.uint8), "L", 7),
    (np.full((3, 4), 700, np.uint16), "I;16", 700),
    (np.full((3, 4, 3), 0.5, np.float32), "RGB", (128, 128, 128)),
    (np.full((3, 4, 4), 2.0), "RGBA", (255, 255, 255, 255)),
    (np.full((3, 4, 3), 300, np.int64), "RGB", (300, 300, 300)),
    (np.ones((3, 4), bool), "L", 255),
])
def test_from_numpy_modes(arr, mode, expected):
    img = from_numpy(arr)
    assert img.mode == mode and img.size == (4, 3)
    value = to_numpy(img)[0, 0]
    assert np.array_equal(value, expected), (value, expected)


@pytest.mark.parametrize("arr", [
    np.zeros((4,), np.uint8), np.zeros((2, 2, 5), np.uint8), np.zeros((0, 3), np.uint8),
    np.full((2, 2), np.nan), np.full((2, 2), -1, np.int32), np.zeros((2, 2), complex),
])
def test_from_numpy_rejects_non_images(arr):
    with pytest.raises(ImageReadError) as err:
        read_image(arr)
    assert_one_line(err)


# ---------------------------------------------------------------- bad inputs


def _png_bytes():
    return encoded(Image.fromarray(samples((64, 64, 3))), "PNG")


def _bad_inputs(tmp_path):
    png = _png_bytes()
    idat = png.index(b"IDAT") + 8
    corrupt = bytearray(png)
    corrupt[idat + 20: idat + 400] = os.urandom(380)
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("this is not an image\n")
    (tmp_path / "folder.png").mkdir()
    jpeg = encoded(Image.fromarray(smooth(64, 64, 3)), "JPEG")
    return {
        "corrupt png": bytes(corrupt),
        "truncated png": png[: len(png) // 2],
        "truncated jpeg": jpeg[: len(jpeg) // 2],
        "random bytes": os.urandom(500),
        "empty bytes": b"",
        "empty file": tmp_path / "empty.png",
        "text file": tmp_path / "notes.txt",
        "missing path": tmp_path / "nowhere.png",
        "folder": tmp_path / "folder.png",
        "unsupported object": 12345,
    }


def test_every_bad_input_raises_image_read_error(tmp_path):
    for label, src in _bad_inputs(tmp_path).items():
        with pytest.raises(ImageReadError) as err:
            read_image(src)
        assert_one_line(err)
        assert str(err.value).startswith("cannot read image"), (label, str(err.value))


def test_messages_name_the_problem(tmp_path):
    bad = _bad_inputs(tmp_path)
    expectations = {"missing path": "does not exist", "folder": "is a folder",
                    "empty file": "is empty", "text file": "not a PNG, JPEG",
                    "truncated png": "truncated"}
    for label, words in expectations.items():
        with pytest.raises(ImageReadError, match=words):
            read_image(bad[label])


def test_pixel_limit_is_checked_from_the_header(tmp_path, monkeypatch):
    data = _png_bytes()  # 64x64 = 4096 pixels
    assert read_image(data, max_pixels=4096).size == (64, 64)
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self))
    with pytest.raises(InputTooLargeError, match="64x64") as err:
        read_image(data, max_pixels=4095)
    assert_one_line(err)
    assert not decoded  # refused before any pixel was decoded
    monkeypatch.undo()
    with pytest.raises(InputTooLargeError):
        read_image(samples((64, 64)), max_pixels=100)
    with pytest.raises(InputTooLargeError):
        read_image(Image.new("L", (64, 64)), max_pixels=100)
    assert DEFAULT_MAX_PIXELS >= 16_000_000


def test_pillow_decompression_bomb_guard_becomes_input_too_large(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64x64 > 2 * 1000: Pillow refuses
    with pytest.raises(InputTooLargeError) as err:
        read_image(_png_bytes(), max_pixels=None)
    assert_one_line(err)
    assert issubclass(InputTooLargeError, SRError) and issubclass(ImageReadError, SRError)


# ---------------------------------------------------------------- planes and alpha


@pytest.mark.parametrize("arr", [
    samples((6, 5)), samples((6, 5, 2)), samples((6, 5, 3)), samples((6, 5, 4)),
    samples((6, 5), np.uint16), samples((6, 5, 2), np.uint16), samples((6, 5, 4), np.uint16),
])
def test_decompose_compose_is_lossless(arr):
    img = from_numpy(arr)
    planes = decompose(img)
    channels = 1 if arr.ndim == 2 else arr.shape[2]
    assert planes.gray == (channels <= 2)
    assert (planes.alpha is not None) == (channels in (2, 4))
    assert planes.bit_depth == (16 if arr.dtype == np.uint16 else 8)
    if planes.gray:
        assert torch.equal(planes.rgb[0], planes.rgb[2])
    out = compose(planes)
    assert out.mode == img.mode
    np.testing.assert_array_equal(to_numpy(out), arr)


def test_compose_gray_uses_channel_mean_and_rounds():
    rgb = torch.tensor([0.2, 0.3, 0.4]).view(3, 1, 1).expand(3, 2, 2)
    out = compose(ImagePlanes(rgb=rgb, alpha=None, gray=True, bit_depth=8))
    assert out.mode == "L" and out.getpixel((0, 0)) == round(0.3 * 255)
    over = compose(ImagePlanes(rgb=torch.full((3, 2, 2), 1.3), alpha=torch.full((1, 2, 2), -0.2),
                               gray=False, bit_depth=8))
    assert over.getpixel((1, 1)) == (255, 255, 255, 0)


def test_compose_rejects_mismatched_planes():
    with pytest.raises(ValueError):
        compose(ImagePlanes(rgb=torch.zeros(3, 4, 4), alpha=torch.zeros(1, 4, 5), gray=False, bit_depth=8))
    with pytest.raises(ValueError):
        compose(ImagePlanes(rgb=torch.zeros(3, 4, 4), alpha=None, gray=False, bit_depth=12))


def test_premultiply_round_trip():
    rgb = torch.rand(3, 8, 8)
    alpha = torch.rand(1, 8, 8) * 0.9 + 0.1
    planes = ImagePlanes(rgb=rgb, alpha=alpha, gray=False, bit_depth=8)
    torch.testing.assert_close(premultiply(planes), rgb * alpha)
    torch.testing.assert_close(unpremultiply(premultiply(planes), alpha), rgb)
    zero = unpremultiply(torch.full((3, 2, 2), 0.3), torch.zeros(1, 2, 2))
    assert torch.equal(zero, torch.zeros(3, 2, 2))
    opaque = ImagePlanes(rgb=rgb, alpha=None, gray=False, bit_depth=8)
    assert premultiply(opaque) is rgb


def _red_square():
    arr = np.zeros((16, 16, 4), np.uint8)  # transparent black around an opaque red square
    arr[5:11, 5:11] = (255, 0, 0, 255)
    return decompose(from_numpy(arr))


def _bicubic(x):
    return F.interpolate(x.unsqueeze(0), scale_factor=3, mode="bicubic", align_corners=False)[0]


def test_premultiplied_upscale_has_no_dark_fringe():
    planes = _red_square()
    alpha = _bicubic(planes.alpha).clamp(0, 1)
    rgb = unpremultiply(_bicubic(premultiply(planes)), alpha)
    out = to_numpy(compose(ImagePlanes(rgb=rgb, alpha=alpha, gray=False, bit_depth=8)))
    visible = out[..., 3] > 0
    assert visible.sum() > 36 * 9 and (out[..., 3] < 255).any()  # soft edges exist
    np.testing.assert_array_equal(out[visible][:, :3], np.tile([255, 0, 0], (visible.sum(), 1)))


def test_straight_alpha_upscale_would_fringe():
    # Guards the test above: without premultiplication the edge pixels turn dark.
    planes = _red_square()
    alpha = _bicubic(planes.alpha).clamp(0, 1)
    out = to_numpy(compose(ImagePlanes(rgb=_bicubic(planes.rgb), alpha=alpha, gray=False, bit_depth=8)))
    edge = (out[..., 3] > 0) & (out[..., 3] < 255)
    assert (out[edge][:, 0] < 200).any()


def test_tensor_helpers():
    arr = samples((5, 6, 3))
    x = pil_to_tensor(Image.fromarray(arr))
    assert x.shape == (1, 3, 5, 6) and x.dtype == torch.float32
    torch.testing.assert_close(x[0, :, 2, 3], torch.tensor(arr[2, 3] / 255, dtype=torch.float32))
    np.testing.assert_array_equal(np.asarray(tensor_to_pil(x)), arr)
    assert pil_to_tensor(Image.new("LA", (2, 2), (10, 0))).shape == (1, 3, 2, 2)
    deep = tensor_to_pil(x, bit_depth=16)
    assert isinstance(deep, DeepImage) and to_numpy(deep).dtype == np.uint16
    np.testing.assert_array_equal(to_numpy(deep), arr.astype(np.uint16) * 257)


# ---------------------------------------------------------------- saving


def test_save_creates_folders_and_defaults_to_png(tmp_path):
    path = save_image(Image.new("RGB", (3, 3), (1, 2, 3)), tmp_path / "a" / "b" / "result")
    with Image.open(path) as img:
        assert img.format == "PNG"
    assert sorted(p.name for p in path.parent.iterdir()) == ["result"]


def test_save_to_jpeg_and_bmp_flattens_alpha_on_white(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[:4] = (0, 0, 255, 255)  # top half opaque blue, bottom half transparent
    for name in ("x.jpg", "x.bmp"):
        out = np.asarray(read_image(save_image(from_numpy(arr), tmp_path / name))).astype(int)
        assert out.shape == (8, 8, 3)
        assert np.abs(out[6, 4] - [255, 255, 255]).max() < 4
        assert np.abs(out[1, 4] - [0, 0, 255]).max() < 4


def test_16bit_to_8bit_formats_is_scaled_not_clipped(tmp_path):
    gray = np.array([[0, 257 * 100 + 129, 65535]], np.uint16)
    out = read_image(save_image(from_numpy(gray), tmp_path / "g.bmp"))
    assert to_numpy(out).tolist() == [[0, 101, 255]]
    out = read_image(save_image(from_numpy(np.dstack([gray] * 3)), tmp_path / "c.bmp"))
    assert out.mode == "RGB" and to_numpy(out)[0, :, 0].tolist() == [0, 101, 255]


def test_16bit_gray_with_transparent_key_becomes_gray_alpha():
    gray = np.array([[5, 60000], [5, 7]], np.uint16)
    out = read_image(encoded(Image.fromarray(gray), "PNG", transparency=5))
    assert isinstance(out, DeepImage) and out.mode == "LA"
    np.testing.assert_array_equal(to_numpy(out), np.dstack([gray, [[0, 65535], [0, 65535]]]))


def test_icc_profile_is_kept(tmp_path):
    from PIL import ImageCms
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    img = Image.new("RGB", (4, 4), (5, 6, 7))
    img.info["icc_profile"] = icc
    planes = decompose(read_image(encoded(img, "PNG", icc_profile=icc)))
    assert planes.icc_profile == icc
    for name in ("a.png", "a.jpg", "a.webp"):
        assert read_image(save_image(compose(planes), tmp_path / name)).info.get("icc_profile") == icc
    deep = from_numpy(samples((3, 3, 3), np.uint16))
    deep.info["icc_profile"] = icc
    assert read_image(save_image(deep, tmp_path / "deep.png")).info.get("icc_profile") == icc


def test_unknown_format_is_refused(tmp_path):
    with pytest.raises(SRError, match="cannot save") as err:
        save_image(Image.new("RGB", (2, 2)), tmp_path / "x.xyz")
    assert_one_line(err)
    assert not list(tmp_path.iterdir())


def test_write_errors_are_reported_in_one_line(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SRError, match="cannot write") as err:
        save_image(Image.new("RGB", (2, 2)), tmp_path / "file" / "out.png")
    assert_one_line(err)


@pytest.mark.parametrize("exc", [RuntimeError("disk on fire"), KeyboardInterrupt()])
def test_failed_save_leaves_no_partial_file_and_keeps_the_old_one(tmp_path, monkeypatch, exc):
    target = tmp_path / "out.png"
    save_image(Image.new("RGB", (4, 4), (9, 9, 9)), target)
    before = target.read_bytes()

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"\x89PNG half of it")
        raise exc

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(type(exc)):
        save_image(Image.new("RGB", (4, 4), (200, 0, 0)), target)
    with pytest.raises(type(exc)):
        save_image(Image.new("RGB", (4, 4)), tmp_path / "new.png")
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.png"]


def test_image_info():
    assert image_info(Image.new("RGBA", (640, 480))) == "640x480 px (0.31 MP), RGB + alpha, 8-bit"
    assert image_info(from_numpy(np.zeros((2, 3), np.uint16))) == "3x2 px (0.00 MP), grayscale, 16-bit"
    assert image_info(from_numpy(np.zeros((2, 3, 3), np.uint16))).endswith("RGB, 16-bit")
