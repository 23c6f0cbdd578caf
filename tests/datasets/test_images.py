"""Pixel-format conversion to 8-bit RGB and image sources, against hand-computed pixels."""

from __future__ import annotations

import io
import pickle

import numpy as np
import pytest
from PIL import Image

from featlab.datasets.images import (
    ArrayImages,
    FileImages,
    array_to_image,
    open_image_file,
    to_rgb,
)
from featlab.errors import BadImageError, DatasetError

# 16-bit value -> expected 8-bit value, by hand: round(v / 257) (65535 / 255 = 257 exactly).
SIXTEEN_BIT = {
    0: 0,
    128: 0,  # 0.498 -> 0
    129: 1,  # 0.502 -> 1
    257: 1,
    385: 1,  # 1.498 -> 1
    386: 2,  # 1.502 -> 2
    1000: 4,  # 3.891 -> 4
    32896: 128,  # 128 * 257
    65278: 254,  # 254 * 257
    65535: 255,
}


def _rgb(img: Image.Image) -> np.ndarray:
    assert img.mode == "RGB"
    return np.asarray(img)


def _gray3(values) -> np.ndarray:
    """Expected RGB pixels of gray ``values`` (rows of ints): gray replicated into 3 channels."""
    v = np.asarray(values, dtype=np.uint8)
    return np.repeat(v[..., None], 3, axis=-1)


def _roundtrip(img: Image.Image, fmt: str) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    buf.seek(0)
    out = Image.open(buf)
    out.load()
    return out


def _sixteen_bit_array() -> tuple[np.ndarray, np.ndarray]:
    values = np.array(list(SIXTEEN_BIT), dtype=np.uint16).reshape(2, 5)
    expected = np.array(list(SIXTEEN_BIT.values()), dtype=np.uint8).reshape(2, 5)
    return values, expected


# -- to_rgb, one pixel format at a time -----------------------------------------------------------


def test_rgb_is_returned_unchanged():
    a = np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8)
    img = Image.fromarray(a)
    out = to_rgb(img)
    np.testing.assert_array_equal(_rgb(out), a)


def test_16bit_grayscale_png_scales_by_257_not_clipped(tmp_path):
    values, expected = _sixteen_bit_array()
    path = tmp_path / "x16.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as img:
        img.load()
        assert img.mode.startswith("I")  # 16-bit PNG really is 16-bit on disk
        np.testing.assert_array_equal(np.asarray(img), values)
        naive = np.asarray(img.convert("RGB"))
        out = _rgb(to_rgb(img))
    np.testing.assert_array_equal(out, _gray3(expected))
    # The deliberate conversion differs from PIL's clipping convert: 257 is 1, not 255.
    assert naive[0, 3, 0] == 255
    assert out[0, 3, 0] == 1
    # And through the file reader the same numbers come out.
    np.testing.assert_array_equal(_rgb(open_image_file(str(path))), _gray3(expected))


def test_16bit_conversion_is_monotonic_and_full_range():
    v = np.arange(0, 65536, dtype=np.uint16).reshape(256, 256)
    out = _rgb(to_rgb(Image.fromarray(v)))[..., 0].ravel().astype(int)
    assert out[0] == 0
    assert out[-1] == 255
    assert (np.diff(out) >= 0).all()
    np.testing.assert_array_equal(np.unique(out), np.arange(256))  # every 8-bit level is used
    # Independent reference with exact rational arithmetic: nearest integer to v/257.
    ref = (2 * np.arange(65536) + 257) // (2 * 257)
    np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("mode", ["I;16B", "I;16L"])
def test_16bit_other_byte_orders(mode):
    values, expected = _sixteen_bit_array()
    dtype = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (5, 2), values.astype(dtype).tobytes())
    np.testing.assert_array_equal(_rgb(to_rgb(img)), _gray3(expected))


def test_32bit_integer_image_in_16bit_range_is_scaled():
    values, expected = _sixteen_bit_array()
    img = Image.fromarray(values.astype(np.int32))
    assert img.mode == "I"
    np.testing.assert_array_equal(_rgb(to_rgb(img)), _gray3(expected))


@pytest.mark.parametrize("bad_value", [65536, 70000, -1])
def test_32bit_integer_image_outside_16bit_range_is_rejected(bad_value):
    img = Image.fromarray(np.array([[0, bad_value]], dtype=np.int32))
    with pytest.raises(BadImageError, match=r"outside 0\.\.65535"):
        to_rgb(img)


def test_8bit_grayscale_replicated():
    g = np.array([[0, 1, 127], [128, 254, 255]], dtype=np.uint8)
    img = Image.fromarray(g)
    assert img.mode == "L"
    np.testing.assert_array_equal(_rgb(to_rgb(img)), _gray3(g))


def test_rgba_drops_alpha_and_keeps_colours_even_when_transparent():
    px = np.array(
        [[[10, 20, 30, 255], [200, 100, 50, 0]], [[1, 2, 3, 128], [255, 255, 255, 0]]],
        dtype=np.uint8,
    )
    img = Image.fromarray(px)
    assert img.mode == "RGBA"
    # Colours kept exactly; not composited onto black or white.
    np.testing.assert_array_equal(_rgb(to_rgb(img)), px[..., :3])


def _palette_image(transparency=None) -> Image.Image:
    img = Image.new("P", (4, 1))
    img.putpalette([10, 20, 30, 40, 50, 60, 70, 80, 90, 250, 251, 252])
    img.putdata([0, 1, 2, 3])
    if transparency is not None:
        img.info["transparency"] = transparency
    return img


PALETTE_RGB = np.array([[[10, 20, 30], [40, 50, 60], [70, 80, 90], [250, 251, 252]]], np.uint8)


@pytest.mark.parametrize(
    "transparency",
    [None, 1, bytes([255, 0, 128, 255])],
    ids=["opaque", "transparent-index", "per-index-alpha"],
)
def test_palette_looks_up_colours_and_drops_transparency(transparency):
    img = _palette_image(transparency)
    np.testing.assert_array_equal(_rgb(to_rgb(img)), PALETTE_RGB)


def test_palette_png_with_transparency_from_disk(tmp_path):
    path = tmp_path / "p.png"
    _palette_image(transparency=1).save(path)
    with Image.open(path) as img:
        assert img.mode == "P"
        assert "transparency" in img.info
    np.testing.assert_array_equal(_rgb(open_image_file(str(path))), PALETTE_RGB)


def test_palette_alpha_mode_pa():
    img = _palette_image().convert("PA")
    assert img.mode == "PA"
    np.testing.assert_array_equal(_rgb(to_rgb(img)), PALETTE_RGB)


# CMYK -> RGB by hand for the exact cases: R = (255 - C)(255 - K)/255, etc.
CMYK_CASES = [
    ((0, 0, 0, 0), (255, 255, 255)),
    ((255, 0, 0, 0), (0, 255, 255)),
    ((0, 255, 0, 0), (255, 0, 255)),
    ((0, 0, 255, 0), (255, 255, 0)),
    ((0, 0, 0, 255), (0, 0, 0)),
    ((255, 255, 255, 0), (0, 0, 0)),
]


def test_cmyk_matches_pil_and_hand_values():
    img = Image.new("CMYK", (len(CMYK_CASES), 1))
    img.putdata([c for c, _ in CMYK_CASES])
    out = _rgb(to_rgb(img))
    np.testing.assert_array_equal(out[0], np.array([rgb for _, rgb in CMYK_CASES], np.uint8))
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGB")))


def test_cmyk_random_pixels_match_pil_convert_and_formula():
    px = np.random.default_rng(1).integers(0, 256, (6, 7, 4), dtype=np.uint8)
    img = Image.frombytes("CMYK", (7, 6), px.tobytes())
    out = _rgb(to_rgb(img)).astype(int)
    np.testing.assert_array_equal(out, np.asarray(img.convert("RGB")))
    # Within 1 of the textbook formula (PIL rounds its integer arithmetic its own way).
    c, k = px[..., :3].astype(float), px[..., 3:].astype(float)
    ref = (255 - c) * (255 - k) / 255
    assert np.abs(out - ref).max() <= 1


def test_cmyk_tiff_file(tmp_path):
    img = Image.new("CMYK", (len(CMYK_CASES), 1))
    img.putdata([c for c, _ in CMYK_CASES])
    path = tmp_path / "c.tif"
    img.save(path)
    out = _rgb(open_image_file(str(path)))
    np.testing.assert_array_equal(out[0], np.array([rgb for _, rgb in CMYK_CASES], np.uint8))


def test_one_bit_maps_to_black_and_white():
    img = Image.fromarray(np.array([[True, False], [False, True]]))
    assert img.mode == "1"
    np.testing.assert_array_equal(_rgb(to_rgb(img)), _gray3([[255, 0], [0, 255]]))


def test_one_bit_png_from_disk():
    img = Image.new("1", (3, 1))
    img.putdata([0, 1, 0])
    back = _roundtrip(img, "PNG")
    assert back.mode == "1"
    np.testing.assert_array_equal(_rgb(to_rgb(back)), _gray3([[0, 255, 0]]))


def test_la_keeps_gray_drops_alpha():
    img = Image.new("LA", (3, 1))
    img.putdata([(10, 0), (200, 255), (77, 128)])
    np.testing.assert_array_equal(_rgb(to_rgb(img)), _gray3([[10, 200, 77]]))


def test_ycbcr_uses_pil_conversion():
    px = np.random.default_rng(2).integers(0, 256, (3, 4, 3), dtype=np.uint8)
    img = Image.frombytes("YCbCr", (4, 3), px.tobytes())
    np.testing.assert_array_equal(_rgb(to_rgb(img)), np.asarray(img.convert("RGB")))


def test_float_image_rejected():
    img = Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32))
    assert img.mode == "F"
    with pytest.raises(BadImageError, match="float image"):
        to_rgb(img)


def test_float_tiff_file_rejected_naming_file(tmp_path):
    path = tmp_path / "float.tif"
    Image.fromarray(np.array([[0.0, 0.5]], dtype=np.float32)).save(path)
    with pytest.raises(BadImageError, match=r"float\.tif: float image"):
        open_image_file(str(path))


def test_bad_image_error_is_an_oserror():
    assert issubclass(BadImageError, OSError)


# -- array_to_image -------------------------------------------------------------------------------


def test_array_hw_uint8():
    a = np.array([[0, 50], [200, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(_rgb(array_to_image(a)), _gray3(a))


def test_array_hw1_uint8():
    a = np.array([[0, 50], [200, 255]], dtype=np.uint8)
    np.testing.assert_array_equal(_rgb(array_to_image(a[..., None])), _gray3(a))


def test_array_hw3_uint8():
    a = np.random.default_rng(3).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    np.testing.assert_array_equal(_rgb(array_to_image(a)), a)


def test_array_hw3_non_contiguous():
    a = np.random.default_rng(3).integers(0, 256, (5, 8, 3), dtype=np.uint8)[:, ::2]
    assert not a.flags.c_contiguous
    np.testing.assert_array_equal(_rgb(array_to_image(a)), a)


def test_array_hw4_uint8_drops_alpha():
    a = np.random.default_rng(4).integers(0, 256, (3, 3, 4), dtype=np.uint8)
    a[0, 0, 3] = 0  # fully transparent pixel keeps its colour
    np.testing.assert_array_equal(_rgb(array_to_image(a)), a[..., :3])


def test_array_hw_uint16_scaled():
    values, expected = _sixteen_bit_array()
    np.testing.assert_array_equal(_rgb(array_to_image(values)), _gray3(expected))


def test_array_hw1_uint16_scaled():
    values, expected = _sixteen_bit_array()
    np.testing.assert_array_equal(_rgb(array_to_image(values[..., None])), _gray3(expected))


def test_array_uint16_big_endian_and_strided():
    values, expected = _sixteen_bit_array()
    big = values.astype(">u2")
    np.testing.assert_array_equal(_rgb(array_to_image(big)), _gray3(expected))
    np.testing.assert_array_equal(_rgb(array_to_image(values[:, ::2])), _gray3(expected[:, ::2]))


@pytest.mark.parametrize(
    "dtype", [np.float32, np.float64, np.int16, np.int32, np.int64, np.uint32, bool]
)
def test_array_bad_dtype(dtype):
    with pytest.raises(BadImageError, match="uint8 or uint16"):
        array_to_image(np.zeros((4, 4), dtype=dtype))


@pytest.mark.parametrize("shape", [(4,), (4, 4, 2), (4, 4, 5), (2, 4, 4, 3)])
def test_array_bad_shape(shape):
    with pytest.raises(BadImageError, match=r"\(H, W\[, 1\|3\|4\]\)"):
        array_to_image(np.zeros(shape, dtype=np.uint8))


def test_array_uint16_colour_rejected():
    with pytest.raises(BadImageError, match=r"uint16 arrays must be \(H, W\) grayscale"):
        array_to_image(np.zeros((4, 4, 3), dtype=np.uint16))


# -- open_image_file: unreadable, truncated, zero-byte --------------------------------------------


def _png_bytes(seed=0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _jpeg_bytes(seed=0) -> bytes:
    a = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_open_image_file_reads_png(tmp_path):
    a = np.random.default_rng(5).integers(0, 256, (6, 7, 3), dtype=np.uint8)
    path = tmp_path / "ok.png"
    Image.fromarray(a).save(path)
    np.testing.assert_array_equal(_rgb(open_image_file(str(path))), a)


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(BadImageError, match=r"empty\.png: file is empty \(0 bytes\)"):
        open_image_file(str(path))


def test_missing_file(tmp_path):
    path = tmp_path / "nope.png"
    with pytest.raises(BadImageError, match=r"nope\.png.*FileNotFoundError"):
        open_image_file(str(path))


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(BadImageError, match="IsADirectoryError"):
        open_image_file(str(tmp_path))


@pytest.mark.parametrize("content", [b"not an image at all", b"\x89PNG\r\n\x1a\n" + b"\0" * 8])
def test_undecodable_file(tmp_path, content):
    path = tmp_path / "garbage.png"
    path.write_bytes(content)
    with pytest.raises(BadImageError, match=r"garbage\.png: cannot decode image"):
        open_image_file(str(path))


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
@pytest.mark.parametrize(("suffix", "make"), [(".png", _png_bytes), (".jpg", _jpeg_bytes)])
def test_truncated_file(tmp_path, fraction, suffix, make):
    data = make()
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(BadImageError, match=r"cut\.(png|jpg): cannot decode image") as info:
        open_image_file(str(path))
    assert str(info.value).startswith(str(path))
    # The file must not have been decoded into a half-grey image behind our back.
    assert isinstance(info.value.__cause__, OSError | SyntaxError | ValueError)


def test_complete_jpeg_still_reads(tmp_path):
    path = tmp_path / "full.jpg"
    path.write_bytes(_jpeg_bytes())
    assert open_image_file(str(path)).size == (32, 32)


# -- image sources --------------------------------------------------------------------------------


def test_file_images_returns_errors_per_row(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes(7))
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    src = FileImages([good, empty, good])
    assert len(src) == 3
    out = src.load([2, 1, 0])
    assert isinstance(out[0], Image.Image)
    assert out[0].mode == "RGB"
    assert isinstance(out[1], BadImageError)
    assert str(empty) in str(out[1])
    np.testing.assert_array_equal(np.asarray(out[0]), np.asarray(out[2]))


def test_file_images_pickles(tmp_path):
    good = tmp_path / "good.png"
    good.write_bytes(_png_bytes(8))
    src = pickle.loads(pickle.dumps(FileImages([good])))
    np.testing.assert_array_equal(
        np.asarray(src.load([0])[0]), np.asarray(Image.open(good).convert("RGB"))
    )


def test_array_images_load_and_errors():
    rng = np.random.default_rng(9)
    rgb = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    src = ArrayImages(rgb)
    assert len(src) == 3
    out = src.load([2, 0])
    np.testing.assert_array_equal(np.asarray(out[0]), rgb[2])
    np.testing.assert_array_equal(np.asarray(out[1]), rgb[0])
    copy = pickle.loads(pickle.dumps(src))
    np.testing.assert_array_equal(np.asarray(copy.load([1])[0]), rgb[1])
    # Two-channel images are not an image format: an error per row, not an exception.
    bad = ArrayImages(np.zeros((2, 4, 4, 2), dtype=np.uint8)).load([0, 1])
    assert all(isinstance(e, BadImageError) for e in bad)


@pytest.mark.parametrize("shape", [(4, 4), (2, 4, 4, 3, 1)])
def test_array_images_rejects_bad_rank(shape):
    with pytest.raises(DatasetError, match=r"\(n, H, W\[, C\]\)"):
        ArrayImages(np.zeros(shape, dtype=np.uint8))
