"""Decoding single images: formats, pixel modes, 16-bit, alpha, EXIF, pages, bad files."""

from __future__ import annotations

import numpy as np
import pytest
from engine_images import (
    asymmetric_array,
    blocky_asymmetric_array,
    encode,
    normal_image,
    to_uint8,
    with_orientation,
)
from PIL import Image

from davae.config import InputLimits
from davae.errors import DavaeError
from davae.imageio import (
    ALPHA_BACKGROUND,
    convert_channels,
    decode_image,
    has_supported_extension,
    to_uint8_image,
)

LOSSLESS_FORMATS = ("PNG", "BMP", "TIFF")


def decode_error(data: bytes, name: str = "part.png", **limits) -> DavaeError:
    with pytest.raises(DavaeError) as caught:
        decode_image(data, name, 1, InputLimits(**limits) if limits else None)
    return caught.value


@pytest.mark.parametrize("image_format", LOSSLESS_FORMATS)
def test_lossless_formats_decode_exactly(image_format):
    array = asymmetric_array()
    decoded = decode_image(encode(Image.fromarray(array), image_format), "a", 1)

    assert decoded.format == image_format
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.shape == (6, 10, 1)
    np.testing.assert_allclose(decoded.pixels[..., 0], array / 255.0, atol=1e-6)


def test_jpeg_decodes_close_to_original():
    pixels = normal_image(np.random.default_rng(0))
    decoded = decode_image(encode(Image.fromarray(to_uint8(pixels)), "JPEG", quality=95), "a", 1)

    assert decoded.format == "JPEG"
    assert decoded.pixels.shape == pixels.shape
    assert np.abs(decoded.pixels - pixels).mean() < 0.02


def test_format_comes_from_content_not_name():
    data = encode(Image.fromarray(asymmetric_array()), "PNG")

    assert decode_image(data, "mislabelled.JPG", 1).format == "PNG"


@pytest.mark.parametrize(
    "name",
    [
        *("a.png", "a.PNG", "a.Png", "a.jpg", "a.JPG", "a.jpeg", "a.JPEG", "a.bmp", "a.BMP"),
        *("a.tif", "a.TIF", "a.tiff", "a.Tiff", "dir.v2/a.tiff"),
    ],
)
def test_supported_extension_any_case(name):
    assert has_supported_extension(name)


@pytest.mark.parametrize("name", ["a.gif", "a.webp", "a.txt", "a.png.txt", "png", "a.zip"])
def test_unsupported_extensions(name):
    assert not has_supported_extension(name)


@pytest.mark.parametrize(
    ("mode", "pixel"),
    [
        ("L", 128),
        ("RGB", (200, 100, 50)),
        ("RGBA", (200, 100, 50, 255)),
        ("LA", (128, 255)),
        ("P", None),
        ("1", 1),
        ("CMYK", (0, 0, 0, 0)),
    ],
)
@pytest.mark.parametrize("channels", [1, 3])
def test_every_mode_converts_to_model_channels(mode, pixel, channels):
    if mode == "P":
        image = Image.new("RGB", (5, 4), (200, 100, 50)).convert("P")
    else:
        image = Image.new(mode, (5, 4), pixel)
    image_format = {"CMYK": "JPEG", "1": "TIFF"}.get(mode, "PNG")
    decoded = decode_image(encode(image, image_format), f"{mode}.png", channels)

    assert decoded.pixels.shape == (4, 5, channels)
    assert decoded.pixels.dtype == np.float32
    assert decoded.pixels.min() >= 0.0
    assert decoded.pixels.max() <= 1.0


def test_rgb_to_gray_uses_bt601_luma():
    red = encode(Image.new("RGB", (3, 3), (255, 0, 0)), "PNG")
    green = encode(Image.new("RGB", (3, 3), (0, 255, 0)), "PNG")

    assert decode_image(red, "red.png", 1).pixels[0, 0, 0] == pytest.approx(0.299, abs=1e-4)
    assert decode_image(green, "green.png", 1).pixels[0, 0, 0] == pytest.approx(0.587, abs=1e-4)


def test_gray_to_rgb_replicates_channels():
    array = asymmetric_array()
    decoded = decode_image(encode(Image.fromarray(array), "PNG"), "g.png", 3)

    assert decoded.pixels.shape == (6, 10, 3)
    for channel in range(3):
        np.testing.assert_allclose(decoded.pixels[..., channel], array / 255.0, atol=1e-6)


def test_convert_channels_keeps_three_channels():
    pixels = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)

    np.testing.assert_array_equal(convert_channels(pixels, 3), pixels)


def test_alpha_background_is_white():
    assert ALPHA_BACKGROUND == 1.0


def test_transparent_rgba_flattens_onto_background():
    rgba = np.zeros((2, 3, 4), dtype=np.uint8)
    rgba[0, :, 3] = 0  # fully transparent black: the background shows
    rgba[1, :, 3] = 255  # opaque black
    rgba[1, 2, 3] = 128  # half transparent black: halfway to the background
    decoded = decode_image(encode(Image.fromarray(rgba, "RGBA"), "PNG"), "a.png", 3)

    np.testing.assert_allclose(decoded.pixels[0], ALPHA_BACKGROUND)
    np.testing.assert_allclose(decoded.pixels[1, 0], 0.0)
    np.testing.assert_allclose(decoded.pixels[1, 2], ALPHA_BACKGROUND * (1 - 128 / 255), atol=1e-6)


def test_transparent_la_flattens_onto_background():
    la = np.zeros((2, 2, 2), dtype=np.uint8)
    la[:, 0, 1] = 255  # opaque black column
    decoded = decode_image(encode(Image.fromarray(la, "LA"), "PNG"), "la.png", 1)

    np.testing.assert_allclose(decoded.pixels[:, 0, 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(decoded.pixels[:, 1, 0], ALPHA_BACKGROUND, atol=1e-6)


def test_palette_transparency_flattens_onto_background():
    palette_image = Image.new("P", (4, 2), 0)
    palette_image.putpalette([0, 0, 0] + [10, 10, 10] * 255)
    palette_image.putpixel((3, 1), 1)
    decoded = decode_image(encode(palette_image, "PNG", transparency=0), "p.png", 1)

    np.testing.assert_allclose(decoded.pixels[0, 0, 0], ALPHA_BACKGROUND, atol=1e-6)
    assert decoded.pixels[1, 3, 0] == pytest.approx(10 / 255, abs=1e-3)


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_16bit_scales_by_65535(image_format):
    raw = np.array([[0, 1000, 30000, 65535]], dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(raw), image_format), "deep.png", 1)

    np.testing.assert_allclose(decoded.pixels[0, :, 0], raw[0] / 65535.0, rtol=1e-6)


@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_16bit_images_keep_their_ratio(image_format):
    # A per-image stretch would map both maxima to 1.0.
    dim = np.array([[100, 1000]], dtype=np.uint16)
    bright = np.array([[100, 30000]], dtype=np.uint16)
    dim_pixels = decode_image(encode(Image.fromarray(dim), image_format), "dim.png", 1).pixels
    bright_pixels = decode_image(encode(Image.fromarray(bright), image_format), "b.png", 1).pixels

    assert dim_pixels[0, 0, 0] == pytest.approx(bright_pixels[0, 0, 0])
    assert bright_pixels[0, 1, 0] / dim_pixels[0, 1, 0] == pytest.approx(30.0, rel=1e-5)
    assert dim_pixels.max() < 0.02


def test_32bit_integer_tiff_clips_to_16bit_range():
    raw = np.array([[0, 30000, 65535, 70000]], dtype=np.int32)
    decoded = decode_image(encode(Image.fromarray(raw), "TIFF"), "int.tif", 1)

    np.testing.assert_allclose(decoded.pixels[0, :, 0], [0, 30000 / 65535, 1, 1], rtol=1e-6)


def test_float_tiff_is_unsupported_mode():
    image = Image.fromarray(np.ones((3, 4), dtype=np.float32))
    error = decode_error(encode(image, "TIFF"), "float.tif")

    assert error.code == "unsupported_mode"
    assert "float.tif" in str(error)


# Pillow's transpose for each EXIF orientation, written out with numpy.
ORIENTED = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1, :],
    5: lambda a: a.T,
    6: lambda a: np.rot90(a, k=-1),
    7: lambda a: a[::-1, ::-1].T,
    8: lambda a: np.rot90(a, k=1),
}


@pytest.mark.parametrize("orientation", sorted(ORIENTED))
@pytest.mark.parametrize("image_format", ["PNG", "TIFF"])
def test_exif_orientation_applied_to_pixels(orientation, image_format):
    stored = asymmetric_array()
    image = Image.fromarray(stored)
    exif = with_orientation(image, orientation)
    decoded = decode_image(encode(image, image_format, exif=exif), "o.png", 1)

    expected = ORIENTED[orientation](stored) / 255.0
    assert decoded.pixels.shape[:2] == expected.shape
    np.testing.assert_allclose(decoded.pixels[..., 0], expected, atol=1e-6)


@pytest.mark.parametrize("orientation", [3, 6, 8])
def test_exif_orientation_applied_to_jpeg(orientation):
    stored = blocky_asymmetric_array()
    image = Image.fromarray(stored)
    data = encode(image, "JPEG", quality=100, exif=with_orientation(image, orientation))
    decoded = decode_image(data, "o.jpg", 1)

    expected = ORIENTED[orientation](stored) / 255.0
    assert decoded.pixels.shape[:2] == expected.shape
    assert np.abs(decoded.pixels[..., 0] - expected).mean() < 0.02


def test_multipage_tiff_uses_first_page_with_note():
    pages = [Image.new("L", (6, 4), value) for value in (10, 200, 90)]
    data = encode(pages[0], "TIFF", save_all=True, append_images=pages[1:])
    decoded = decode_image(data, "stack.tif", 1)

    np.testing.assert_allclose(decoded.pixels, 10 / 255, atol=1e-6)
    assert len(decoded.notes) == 1
    assert "3 pages" in decoded.notes[0]


def test_jpeg_with_mpo_extension_decodes_first_image():
    # Phone and camera JPEGs often carry extra images (MPF), which Pillow opens as MPO.
    first = Image.new("RGB", (8, 6), (250, 250, 250))
    second = Image.new("RGB", (8, 6), (0, 0, 0))
    data = encode(first, "MPO", save_all=True, append_images=[second])
    decoded = decode_image(data, "photo.jpg", 1)

    assert decoded.format == "JPEG"
    assert decoded.pixels.shape == (6, 8, 1)
    assert decoded.pixels.mean() > 0.9


def test_empty_file_rejected():
    error = decode_error(b"", "empty.png")

    assert error.code == "empty_file"
    assert error.params["name"] == "empty.png"
    assert "empty.png" in str(error)


@pytest.mark.parametrize("image_format", ["PNG", "JPEG", "BMP", "TIFF"])
def test_truncated_file_rejected(image_format):
    pixels = normal_image(np.random.default_rng(3), 60, 80)
    data = encode(Image.fromarray(to_uint8(pixels)), image_format)
    error = decode_error(data[: len(data) * 6 // 10], "cut.img")

    assert error.code == "truncated_image"
    assert "cut.img" in str(error)


def test_text_file_is_not_an_image():
    error = decode_error(b"part number, result\n17, ok\n", "notes.png")

    assert error.code == "not_an_image"
    assert "notes.png" in str(error)


@pytest.mark.parametrize("image_format", ["GIF", "WEBP"])
def test_other_formats_are_unsupported(image_format):
    data = encode(Image.new("RGB", (8, 8), (1, 2, 3)), image_format)
    error = decode_error(data, "renamed.png")

    assert error.code == "unsupported_format"
    assert error.params["format"] == image_format
    assert "renamed.png" in str(error)


def test_pixel_limit_rejects_with_size():
    data = encode(Image.new("L", (20, 10)), "PNG")
    error = decode_error(data, "big.png", max_pixels=199)

    assert error.code == "too_many_pixels"
    assert error.params["width"] == 20
    assert error.params["height"] == 10
    assert error.params["limit_pixels"] == 199


def test_pixel_limit_allows_exact_count():
    data = encode(Image.new("L", (20, 10)), "PNG")

    assert decode_image(data, "ok.png", 1, InputLimits(max_pixels=200)).pixels.shape == (10, 20, 1)


def test_pixel_limit_checked_before_decoding():
    # The header is intact but the pixel data is cut: decoding would report a
    # truncated file, so this code shows the size check came first.
    data = encode(Image.fromarray(to_uint8(normal_image(np.random.default_rng(0)))), "PNG")
    error = decode_error(data[: len(data) // 2], "huge.png", max_pixels=100)

    assert error.code == "too_many_pixels"


def test_to_uint8_image_round_trips():
    array = asymmetric_array()
    pixels = (array / 255.0).astype(np.float32)[..., None]

    np.testing.assert_array_equal(np.asarray(to_uint8_image(pixels)), array)
    assert to_uint8_image(np.repeat(pixels, 3, axis=2)).mode == "RGB"
