"""Fixtures for the engine tests: generated images and tiny trained detectors.

Every image is generated with numpy and Pillow (see engine_images.py), so the
tests need no data files. The detectors are real ConvVAEs trained for one or
two epochs on 40 x 48 images at model size 32, a few seconds each on two CPU
cores.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_images import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    encode,
    normal_image,
    tiny_config,
    to_uint8,
    write_input_zoo,
    write_mvtec,
)
from PIL import Image

# Tiny models gain nothing from more threads, and two leave the other cores free.
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def png_bytes() -> bytes:
    rng = np.random.default_rng(1)
    return encode(Image.fromarray(to_uint8(normal_image(rng))), "PNG")


@dataclass
class TrainedTiny:
    """A trained detector with what went into it and the progress it reported."""

    detector: object
    train_images: list[np.ndarray]
    progress: list


@pytest.fixture(scope="session")
def normal_images() -> Callable[..., list[np.ndarray]]:
    """Factory: ``normal_images(count, seed, height, width)``."""

    def make(count: int, seed: int = 0, height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH):
        rng = np.random.default_rng(seed)
        return [normal_image(rng, height, width) for _ in range(count)]

    return make


@pytest.fixture(scope="session")
def tiny(normal_images) -> TrainedTiny:
    """One detector trained on 24 generated normals, shared by the whole session."""
    from davae.training import train_detector

    images = normal_images(24, seed=0)
    progress: list = []
    detector = train_detector(images, tiny_config(), progress=progress.append)
    return TrainedTiny(detector, images, progress)


@pytest.fixture(scope="session")
def tiny_patch(normal_images) -> TrainedTiny:
    """A patch-mode detector: 32 px crops of 64 x 80 images, sliding window of stride 16."""
    from davae.training import train_detector

    images = normal_images(12, seed=5, height=64, width=80)
    config = tiny_config(
        train__mode="patch",
        train__patches_per_image=4,
        train__epochs=1,
        augment__iterations=0,
    )
    return TrainedTiny(train_detector(images, config), images, [])


@pytest.fixture(scope="session")
def tiny_bundle(tiny, tmp_path_factory) -> Path:
    from davae.bundle import save_bundle

    path = tmp_path_factory.mktemp("bundle") / "tiny.pt"
    save_bundle(tiny.detector, path)
    return path


@pytest.fixture(scope="session")
def mvtec_root(tmp_path_factory) -> Path:
    return write_mvtec(tmp_path_factory.mktemp("mvtec") / "parts")


@pytest.fixture(scope="session")
def input_zoo(tmp_path_factory) -> Path:
    """A folder with one file of every input kind; see engine_images.ZOO_*."""
    return write_input_zoo(tmp_path_factory.mktemp("zoo") / "upload")
