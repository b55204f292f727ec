"""Turn decoded pixels into model input: illumination normalisation and resizing."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from davae.config import DetectorConfig, PreprocessConfig

# Flat-field output: 0.5 + FLATFIELD_GAIN * (image / illumination - 1), clipped
# to [0, 1], so a pixel as bright as its surroundings maps to 0.5.
FLATFIELD_GAIN = 0.5
# The illumination estimate is blurred at this shorter-side size and scaled
# back up: a wide blur at full resolution costs far more for the same result.
_ILLUMINATION_SIZE = 64


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """Convert (H, W, C) float pixels to a (C, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1), dtype=np.float32))


def resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize (C, H, W) bilinearly with antialiasing when shrinking."""
    if image.shape[-2:] == (height, width):
        return image
    resized = F.interpolate(
        image[None], size=(height, width), mode="bilinear", align_corners=False, antialias=True
    )
    return resized[0]


def estimate_illumination(image: torch.Tensor, sigma_fraction: float) -> torch.Tensor:
    """Estimate slowly varying illumination of (C, H, W) as a wide Gaussian blur.

    The blur sigma is ``sigma_fraction`` of the shorter side.
    """
    height, width = image.shape[-2:]
    scale = min(1.0, _ILLUMINATION_SIZE / min(height, width))
    small_h, small_w = max(1, round(height * scale)), max(1, round(width * scale))
    small = resize(image, small_h, small_w)
    sigma = max(0.5, sigma_fraction * min(small_h, small_w))
    kernel = 2 * math.ceil(3 * sigma) + 1
    # Reflect padding needs the kernel radius to be smaller than the image.
    pad = min(kernel // 2, small_h - 1, small_w - 1)
    if pad > 0:
        padded = F.pad(small[None], (pad, pad, pad, pad), mode="reflect")[0]
        # The Gaussian is separable: one horizontal and one vertical pass give the
        # 2D blur (to float rounding) at about a seventh of its cost.
        blurred = TF.gaussian_blur(padded, [kernel, 1], [sigma, sigma])
        blurred = TF.gaussian_blur(blurred, [1, kernel], [sigma, sigma])
        blurred = blurred[:, pad : pad + small_h, pad : pad + small_w]
    else:
        blurred = small
    return resize(blurred, height, width)


def normalize(image: torch.Tensor, config: PreprocessConfig) -> torch.Tensor:
    """Apply the configured illumination normalisation to (C, H, W) in [0, 1]."""
    if config.normalize == "none":
        return image
    illumination = estimate_illumination(image, config.flatfield_sigma)
    ratio = image / illumination.clamp_min(1e-3)
    return (0.5 + FLATFIELD_GAIN * (ratio - 1.0)).clamp(0.0, 1.0)


def prepare_whole(pixels: np.ndarray, config: DetectorConfig) -> torch.Tensor:
    """Model input for whole-image mode: (C, S, S), normalised then resized."""
    size = config.vae.image_size
    image = to_tensor(pixels)
    if config.preprocess.normalize != "none":
        # Normalise at a working size near the model input: cheaper, and the
        # illumination estimate does not depend on the original resolution.
        work = max(size, 2 * _ILLUMINATION_SIZE)
        height, width = image.shape[-2:]
        scale = min(1.0, work / min(height, width))
        image = resize(image, max(1, round(height * scale)), max(1, round(width * scale)))
        image = normalize(image, config.preprocess)
    return resize(image, size, size)


def prepare_scaled(pixels: np.ndarray, config: DetectorConfig) -> torch.Tensor:
    """Model input for patch mode: the whole image scaled by ``patch_scale``, normalised.

    Images smaller than one patch are padded up to it by reflection.
    """
    image = to_tensor(pixels)
    height, width = image.shape[-2:]
    scale = config.train.patch_scale
    image = resize(image, max(1, round(height * scale)), max(1, round(width * scale)))
    image = normalize(image, config.preprocess)
    return pad_to_min_size(image, config.vae.image_size)


def pad_to_min_size(image: torch.Tensor, size: int) -> torch.Tensor:
    """Pad (C, H, W) on the bottom and right to at least ``size`` in each dimension."""
    height, width = image.shape[-2:]
    pad_h, pad_w = max(0, size - height), max(0, size - width)
    if not (pad_h or pad_w):
        return image
    # "replicate" works for any size, where "reflect" needs the pad below the size.
    return F.pad(image[None], (0, pad_w, 0, pad_h), mode="replicate")[0]


def prepare(pixels: np.ndarray, config: DetectorConfig) -> torch.Tensor:
    """Model input in the configured mode."""
    if config.train.mode == "patch":
        return prepare_scaled(pixels, config)
    return prepare_whole(pixels, config)
