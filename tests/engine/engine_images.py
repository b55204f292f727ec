"""Generated images, files and configurations shared by the engine tests.

A plain module rather than conftest.py, so test files can import these
helpers by name.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from davae.config import DetectorConfig

IMAGE_HEIGHT, IMAGE_WIDTH = 40, 48
EXIF_ORIENTATION_TAG = 0x0112


def normal_image(rng: np.random.Generator, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH):
    """Generate a smooth sinusoidal texture with mild noise, (H, W, 1) float32 in [0, 1]."""
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (xx * rng.uniform(1, 2) + yy * rng.uniform(0, 1)) + phase)
    pixels = 0.4 + 0.2 * wave + 0.03 * rng.standard_normal((height, width))
    return np.clip(pixels, 0, 1)[..., None].astype(np.float32)


def with_bright_square(pixels: np.ndarray, top: int, left: int, size: int) -> np.ndarray:
    """Return a copy of ``pixels`` with a white square pasted in, an obvious defect."""
    defective = pixels.copy()
    defective[top : top + size, left : left + size] = 1.0
    return defective


def to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Convert (H, W, 1) floats in [0, 1] to an (H, W) uint8 array."""
    return np.round(pixels[..., 0] * 255).astype(np.uint8)


def encode(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, image_format, **options)
    return buffer.getvalue()


def asymmetric_array(height: int = 6, width: int = 10) -> np.ndarray:
    """Return a uint8 (H, W) array that no rotation or flip maps onto itself."""
    array = np.arange(height * width, dtype=np.uint8).reshape(height, width) * 4
    array[0, 0] = 255
    return array


def blocky_asymmetric_array(block: int = 8) -> np.ndarray:
    """Return an asymmetric pattern of flat 8 x 8 blocks, which survives JPEG nearly unchanged."""
    small = np.array([[255, 0, 0, 0], [255, 255, 0, 0], [0, 0, 128, 0]], dtype=np.uint8)
    return np.kron(small, np.ones((block, block), dtype=np.uint8))


def with_orientation(image: Image.Image, orientation: int) -> Image.Exif:
    exif = image.getexif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    return exif


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def zip_with_raw_name(raw_name: bytes, data: bytes) -> bytes:
    """Build a ZIP whose only member name is ``raw_name`` as stored bytes, UTF-8 flag cleared.

    zipfile always encodes non-ASCII names as flagged UTF-8, so the archive is
    written with an ASCII placeholder of the same length, whose bytes are then
    replaced in the local header and the central directory.
    """
    placeholder = b"Q" * len(raw_name)
    archive = zip_bytes({placeholder.decode("ascii"): data})
    assert archive.count(placeholder) == 2
    return archive.replace(placeholder, raw_name)


def tiny_config(**changes) -> DetectorConfig:
    """Return the config of a detector that trains in seconds: 32 px input, width 8, latent 8.

    Preprocessing and scoring settings are pinned too, so the tests keep
    their meaning when the library's defaults change.
    """
    base = DetectorConfig().replace(
        vae__image_size=32,
        vae__width=8,
        vae__latent_dim=8,
        vae__depth=2,
        train__epochs=2,
        train__batch_size=8,
        train__learning_rate=5e-4,
        train__val_fraction=0.2,
        train__mode="whole",
        augment__iterations=1,
        preprocess__normalize="none",
        scoring__batch_size=8,
        scoring__smoothing_sigma=2.0,
        scoring__recon_reduction="max",
        scoring__error_normalization="none",
        scoring__latent_metric="mahalanobis",
        scoring__target_fpr=0.01,
        scoring__patch_stride_fraction=0.5,
    )
    return base.replace(**changes) if changes else base


def write_mvtec(root: Path, seed: int = 7, with_masks: bool = True) -> Path:
    """Write a small MVTec-style dataset: 12 train, 6 test normals, 2 defect classes."""
    rng = np.random.default_rng(seed)

    def save(pixels: np.ndarray, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(to_uint8(pixels)).save(path)

    for i in range(12):
        save(normal_image(rng), root / "train" / "good" / f"{i:03d}.png")
    for i in range(6):
        save(normal_image(rng), root / "test" / "good" / f"{i:03d}.png")
    for defect, size in (("square", 12), ("dot", 6)):
        for i in range(4):
            top, left = int(rng.integers(2, 20)), int(rng.integers(2, 28))
            pixels = with_bright_square(normal_image(rng), top, left, size)
            save(pixels, root / "test" / defect / f"{i:03d}.png")
            if with_masks:
                mask = np.zeros((IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.uint8)
                mask[top : top + size, left : left + size] = 255
                mask_path = root / "ground_truth" / defect / f"{i:03d}_mask.png"
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(mask).save(mask_path)
    return root


# Files of the input zoo by expected outcome. Paths are relative to its root.
ZOO_GOOD = (
    "a_gray.png",
    "b_rgb.JPG",
    "c_palette.Png",
    "d_rgba.png",
    "e_la.png",
    "f_deep16.tiff",
    "g_exif6.jpeg",
    "h_pages.TIF",
    "i_bitmap.BMP",
    "lineA/img_001.png",
    "lineB/img_001.png",
)
ZOO_REJECTED = {
    "empty.png": "empty_file",
    "notes.txt": "unsupported_type",
    "text_as_image.png": "not_an_image",
    "truncated.jpg": "truncated_image",
    "animation.gif": "unsupported_type",
    "gif_renamed.png": "unsupported_format",
    "webp_renamed.jpg": "unsupported_format",
    "oversized.png": "too_many_pixels",
}
ZOO_IGNORED = ("._a_gray.png", ".DS_Store", ".cache/", "__MACOSX/")
# Pixel limit that only "oversized.png" (80 x 70) exceeds.
ZOO_MAX_PIXELS = 5000


def write_input_zoo(root: Path) -> Path:
    """Write one file of every input kind, good and bad, under ``root``."""
    rng = np.random.default_rng(11)

    def gray(height: int = 30, width: int = 40) -> Image.Image:
        return Image.fromarray(to_uint8(normal_image(rng, height, width)))

    def write(relative: str, data: bytes) -> None:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    write("a_gray.png", encode(gray(), "PNG"))
    write("b_rgb.JPG", encode(gray().convert("RGB"), "JPEG"))
    write("c_palette.Png", encode(gray().convert("RGB").convert("P"), "PNG"))
    rgba = gray().convert("RGBA")
    rgba.putalpha(128)
    write("d_rgba.png", encode(rgba, "PNG"))
    write("e_la.png", encode(gray().convert("LA"), "PNG"))
    deep = (rng.random((30, 40)) * 20000).astype(np.uint16)
    write("f_deep16.tiff", encode(Image.fromarray(deep), "TIFF"))
    exif_image = gray()
    write("g_exif6.jpeg", encode(exif_image, "JPEG", exif=with_orientation(exif_image, 6)))
    write("h_pages.TIF", encode(gray(), "TIFF", save_all=True, append_images=[gray()]))
    write("i_bitmap.BMP", encode(gray(), "BMP"))
    write("lineA/img_001.png", encode(gray(), "PNG"))
    write("lineB/img_001.png", encode(gray(), "PNG"))

    write("empty.png", b"")
    write("notes.txt", b"not an image\n")
    write("text_as_image.png", b"part 17 passed inspection\n")
    jpeg = encode(gray(60, 80), "JPEG")
    write("truncated.jpg", jpeg[: len(jpeg) * 6 // 10])
    write("animation.gif", encode(gray().convert("P"), "GIF"))
    write("gif_renamed.png", encode(gray().convert("P"), "GIF"))
    write("webp_renamed.jpg", encode(gray().convert("RGB"), "WEBP"))
    write("oversized.png", encode(gray(70, 80), "PNG"))

    write("._a_gray.png", b"\x00\x05\x16\x07AppleDouble")
    write(".DS_Store", b"\x00\x00\x00\x01Bud1")
    write(".cache/thumb.png", encode(gray(), "PNG"))
    write("__MACOSX/._b_rgb.JPG", b"\x00\x05\x16\x07")
    return root
