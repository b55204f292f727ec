"""Decoding one image file into the pixel array the model and the previews use.

Policies, applied to every image the same way:

- Formats: PNG, JPEG, BMP and TIFF, recognised by content (the extension is
  checked earlier, case-insensitively).
- The pixel count in the header is checked against ``InputLimits.max_pixels``
  before any pixel is decoded.
- EXIF orientation is applied first, so the model input, the preview and the
  heatmap all share one orientation.
- Transparency is flattened onto white (``ALPHA_BACKGROUND``).
- 16-bit images are divided by 65535, never stretched to their own range, so
  one exposure maps to the same values in every image. 32-bit integer images
  (how some 16-bit files open) are clipped to 0..65535 and scaled the same way.
- Multi-page TIFF: the first page is used and a note records the page count.
  A JPEG with extra images (MPO) is decoded the same way: the first image.
- Colour is converted to the model's channel count: RGB to luminance
  (ITU-R BT.601 weights, as Pillow's ``"L"`` mode) or grayscale replicated to
  three channels.
"""

from __future__ import annotations

import io
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from davae.config import InputLimits
from davae.errors import DavaeError

SUPPORTED_FORMATS = ("PNG", "JPEG", "BMP", "TIFF")
# Pillow opens a JPEG with extra images (the MPF extension, written by many
# phones and cameras) as format "MPO". Such a file is decoded as a JPEG.
_FORMAT_ALIASES = {"MPO": "JPEG"}
SUPPORTED_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
ALPHA_BACKGROUND = 1.0  # white, on the [0, 1] scale
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class DecodedImage:
    """Pixels as float32 in [0, 1], shape (height, width, channels)."""

    pixels: np.ndarray
    format: str
    notes: tuple[str, ...] = ()

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def has_supported_extension(name: str) -> bool:
    return name.lower().endswith(SUPPORTED_EXTENSIONS)


def decode_image(
    data: bytes, name: str, channels: int, limits: InputLimits | None = None
) -> DecodedImage:
    """Decode ``data`` into a :class:`DecodedImage` with ``channels`` channels.

    Raises :class:`DavaeError` naming ``name`` and the reason when the bytes are
    empty, not an image, an unsupported format, over the pixel limit, or
    truncated.
    """
    limits = limits or InputLimits()
    if not data:
        raise DavaeError("empty_file", f"{name}: the file is empty (0 bytes)", name=name)

    image = _open_checked(data, name, limits)
    image_format = _FORMAT_ALIASES.get(image.format, image.format)
    notes: list[str] = []
    page_count = int(getattr(image, "n_frames", 1) or 1)
    if page_count > 1:
        image.seek(0)
        if image_format == "TIFF":
            notes.append(f"multi-page TIFF with {page_count} pages: page 1 used")
        else:
            notes.append(f"{image_format} with {page_count} images: image 1 used")

    try:
        image.load()
    except OSError as exc:
        raise DavaeError(
            "truncated_image",
            f"{name}: the image data is truncated or damaged ({exc})",
            name=name,
            detail=str(exc),
        ) from exc
    except (ValueError, SyntaxError, EOFError, struct.error) as exc:
        raise DavaeError(
            "not_an_image", f"{name}: not a readable image ({exc})", name=name, detail=str(exc)
        ) from exc

    image = ImageOps.exif_transpose(image)
    pixels = _to_float_array(image, name)
    return DecodedImage(
        pixels=convert_channels(pixels, channels), format=image_format, notes=tuple(notes)
    )


def _open_checked(data: bytes, name: str, limits: InputLimits) -> Image.Image:
    """Open the header only, and check format and pixel count before decoding."""
    with warnings.catch_warnings():
        # Pillow warns above its own limit of about 89 M pixels; our limit is
        # checked below instead. Pillow still raises above twice its limit,
        # which is reported as too many pixels whatever our limit is.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
        except UnidentifiedImageError as exc:
            raise DavaeError(
                "not_an_image",
                f"{name}: not an image file that can be read (no known image header)",
                name=name,
                detail="no known image header",
            ) from exc
        except Image.DecompressionBombError as exc:
            raise DavaeError(
                "too_many_pixels",
                f"{name}: the image has too many pixels ({exc})",
                name=name,
                width=0,
                height=0,
                limit_pixels=limits.max_pixels,
            ) from exc
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise DavaeError(
                "not_an_image", f"{name}: not a readable image ({exc})", name=name, detail=str(exc)
            ) from exc

    if _FORMAT_ALIASES.get(image.format, image.format) not in SUPPORTED_FORMATS:
        raise DavaeError(
            "unsupported_format",
            f"{name}: {image.format} images are not supported; "
            f"save it as one of {', '.join(SUPPORTED_FORMATS)}",
            name=name,
            format=image.format,
            supported=", ".join(SUPPORTED_FORMATS),
        )
    width, height = image.size
    if width * height > limits.max_pixels:
        raise DavaeError(
            "too_many_pixels",
            f"{name}: {width} x {height} pixels is over the limit of {limits.max_pixels:,} pixels",
            name=name,
            width=width,
            height=height,
            limit_pixels=limits.max_pixels,
        )
    if width == 0 or height == 0:
        raise DavaeError(
            "not_an_image", f"{name}: the image has no pixels", name=name, detail="zero size"
        )
    return image


def _to_float_array(image: Image.Image, name: str) -> np.ndarray:
    """Convert any supported mode to float32 (H, W, 1) or (H, W, 3) in [0, 1]."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        gray = np.asarray(image, dtype=np.uint16).astype(np.float32) / 65535.0
        return gray[..., None]
    if mode == "I":
        gray = np.clip(np.asarray(image, dtype=np.int64), 0, 65535).astype(np.float32) / 65535.0
        return gray[..., None]
    if mode == "F":
        raise DavaeError(
            "unsupported_mode",
            f"{name}: 32-bit floating-point images are not supported; save it as 8- or 16-bit",
            name=name,
            mode=mode,
        )
    if mode == "P":
        mode_after = "RGBA" if "transparency" in image.info else "RGB"
        image = image.convert(mode_after)
        mode = image.mode
    if mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "RGBa"):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float32) / 255.0
        alpha = rgba[..., 3:4]
        rgb = rgba[..., :3] * alpha + ALPHA_BACKGROUND * (1.0 - alpha)
        return rgb.astype(np.float32)
    if mode == "1":
        image = image.convert("L")
        mode = "L"
    if mode == "L":
        return (np.asarray(image, dtype=np.float32) / 255.0)[..., None]
    if mode in ("RGB", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    raise DavaeError(
        "unsupported_mode",
        f"{name}: pixel mode {mode} is not supported; save it as grayscale or RGB",
        name=name,
        mode=mode,
    )


def convert_channels(pixels: np.ndarray, channels: int) -> np.ndarray:
    """Convert (H, W, 1 or 3) pixels to ``channels`` channels."""
    have = pixels.shape[2]
    if have == channels:
        return np.ascontiguousarray(pixels, dtype=np.float32)
    if channels == 1:
        return (pixels @ _LUMA_WEIGHTS)[..., None].astype(np.float32)
    return np.repeat(pixels, 3, axis=2).astype(np.float32)


def to_uint8_image(pixels: np.ndarray) -> Image.Image:
    """Turn (H, W, 1 or 3) float pixels in [0, 1] into a Pillow image for display."""
    array = np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if array.shape[2] == 1:
        return Image.fromarray(array[..., 0], mode="L")
    return Image.fromarray(array, mode="RGB")
