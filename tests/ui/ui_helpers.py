"""Paths, generated images and database helpers shared by the dashboard tests.

A plain module rather than conftest.py, so test files can import it by name.
Images are generated with numpy and Pillow, so the tests need no data files.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from davae.config import DetectorConfig

ROOT = Path(__file__).resolve().parents[2]
APP_PATH = ROOT / "app.py"
IMAGE_HEIGHT, IMAGE_WIDTH = 40, 48
REVIEWER = "tester"


def tiny_config(**changes: Any) -> DetectorConfig:
    """Return a detector configuration that trains in seconds: 32 px input, width 8, latent 8."""
    base = DetectorConfig().replace(
        vae__image_size=32,
        vae__width=8,
        vae__latent_dim=8,
        vae__depth=2,
        train__epochs=2,
        train__batch_size=8,
        augment__iterations=1,
        scoring__batch_size=8,
    )
    return base.replace(**changes) if changes else base


def normal_pixels(rng: np.random.Generator) -> np.ndarray:
    """Generate a smooth sinusoidal texture with mild noise, (H, W) uint8."""
    yy, xx = np.mgrid[0:IMAGE_HEIGHT, 0:IMAGE_WIDTH] / max(IMAGE_HEIGHT, IMAGE_WIDTH)
    phase = rng.uniform(0, 2 * np.pi)
    wave = np.sin(2 * np.pi * (xx * rng.uniform(1, 2) + yy * rng.uniform(0, 1)) + phase)
    pixels = 0.4 + 0.2 * wave + 0.03 * rng.standard_normal((IMAGE_HEIGHT, IMAGE_WIDTH))
    return np.round(np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def defect_pixels(rng: np.random.Generator) -> np.ndarray:
    """Generate a normal texture with a white square pasted in, an obvious defect."""
    pixels = normal_pixels(rng)
    top, left = int(rng.integers(2, 20)), int(rng.integers(2, 28))
    pixels[top : top + 12, left : left + 12] = 255
    return pixels


def png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def write_images(folder: Path, count: int, seed: int = 0, *, defects: bool = False) -> list[Path]:
    """Write ``count`` generated PNG images into ``folder``; return their paths."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        pixels = defect_pixels(rng) if defects else normal_pixels(rng)
        path = folder / f"{index:03d}.png"
        path.write_bytes(png_bytes(pixels))
        paths.append(path)
    return paths


def write_mvtec(root: Path, seed: int = 7) -> Path:
    """Write a small dataset in MVTec layout: 16 train normals, 6 test normals, 2 defect classes."""
    write_images(root / "train" / "good", 16, seed)
    write_images(root / "test" / "good", 6, seed + 1)
    write_images(root / "test" / "square", 4, seed + 2, defects=True)
    write_images(root / "test" / "spot", 4, seed + 3, defects=True)
    return root


def wait_for(condition: Callable[[], Any], timeout_s: float = 120.0, every_s: float = 0.2) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every_s)
    raise AssertionError(f"condition not met within {timeout_s} s")
