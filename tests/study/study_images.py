"""A generated MVTec-style dataset with obvious defects, for the study tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

SIZE = 48  # pixels per side


def _texture(rng: np.random.Generator) -> np.ndarray:
    """A normal part: a fine periodic texture at a random phase, mild brightness change."""
    y, x = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    pattern = 0.08 * np.sin(x * 0.8 + phase[0]) + 0.08 * np.sin(y * 0.8 + phase[1])
    brightness = rng.uniform(0.45, 0.55)
    noise = rng.normal(0.0, 0.01, size=(SIZE, SIZE))
    return np.clip(brightness + pattern + noise, 0.0, 1.0)


def _with_square(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    top, left = rng.integers(4, SIZE - 16, size=2)
    value = 1.0 if rng.random() < 0.5 else 0.0
    image = image.copy()
    image[top : top + 12, left : left + 12] = value
    return image


def _with_line(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    row = int(rng.integers(6, SIZE - 6))
    image = image.copy()
    image[row : row + 3, :] = 0.0
    return image


def _save(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(image * 255).astype(np.uint8), mode="L").save(path)


def make_dataset(
    root: Path,
    train_count: int = 50,
    good_count: int = 20,
    defects_per_class: int = 12,
    seed: int = 0,
) -> Path:
    """Write train/good, test/good, test/square and test/line under ``root``; return it."""
    rng = np.random.default_rng(seed)
    for index in range(train_count):
        _save(_texture(rng), root / "train" / "good" / f"{index:03d}.png")
    for index in range(good_count):
        _save(_texture(rng), root / "test" / "good" / f"{index:03d}.png")
    for index in range(defects_per_class):
        _save(_with_square(_texture(rng), rng), root / "test" / "square" / f"{index:03d}.png")
        _save(_with_line(_texture(rng), rng), root / "test" / "line" / f"{index:03d}.png")
    return root
