"""Heatmaps: the smoothed error map at the original size on a fixed colour scale."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from davae.calibration import HeatmapScale
from davae.imageio import to_uint8_image

# Colour ramp from low to high error: dark red, red, orange, yellow, white.
# Anchors are (position in [0, 1], R, G, B).
_RAMP_ANCHORS = np.array(
    [
        (0.00, 80, 0, 0),
        (0.35, 200, 20, 0),
        (0.65, 255, 120, 0),
        (0.85, 255, 220, 40),
        (1.00, 255, 255, 220),
    ],
    dtype=np.float32,
)
_LUT_SIZE = 256


def _build_lut() -> np.ndarray:
    positions = np.linspace(0.0, 1.0, _LUT_SIZE)
    channels = [np.interp(positions, _RAMP_ANCHORS[:, 0], _RAMP_ANCHORS[:, i]) for i in (1, 2, 3)]
    return np.stack(channels, axis=1).astype(np.uint8)


_LUT = _build_lut()


def resize_map(error_map: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize an (h, w) error map to (height, width) bilinearly."""
    tensor = torch.as_tensor(np.asarray(error_map, dtype=np.float32))[None, None]
    if tensor.shape[-2:] == (height, width):
        return tensor[0, 0].numpy()
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    return resized[0, 0].numpy()


def normalized_map(error_map: np.ndarray, scale: HeatmapScale) -> np.ndarray:
    """Map errors to [0, 1] on the fixed scale: 0 at ``scale.low``, 1 at ``scale.high``."""
    span = max(scale.high - scale.low, 1e-12)
    return np.clip((np.asarray(error_map, dtype=np.float32) - scale.low) / span, 0.0, 1.0)


def colorize(error_map: np.ndarray, scale: HeatmapScale) -> Image.Image:
    """Render an error map as an RGBA image: transparent where the error is normal."""
    level = normalized_map(error_map, scale)
    index = np.round(level * (_LUT_SIZE - 1)).astype(np.intp)
    rgb = _LUT[index]
    # Opacity rises quickly above "low" so small defects stay visible.
    alpha = (np.sqrt(level) * 230).astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), mode="RGBA")


def overlay(
    pixels: np.ndarray, error_map: np.ndarray, scale: HeatmapScale, max_side: int | None = None
) -> Image.Image:
    """Blend the heatmap over the original (H, W, C) pixels at the original size.

    ``max_side`` shrinks the result for thumbnails while keeping its aspect ratio.
    """
    base = to_uint8_image(pixels).convert("RGB")
    width, height = base.size
    if max_side is not None and max(width, height) > max_side:
        factor = max_side / max(width, height)
        width, height = max(1, round(width * factor)), max(1, round(height * factor))
        base = base.resize((width, height), Image.Resampling.BILINEAR)
    heat = colorize(resize_map(error_map, width, height), scale)
    return Image.alpha_composite(base.convert("RGBA"), heat).convert("RGB")


def heatmap_image(
    error_map: np.ndarray, width: int, height: int, scale: HeatmapScale
) -> Image.Image:
    """The coloured heatmap alone at the given size, on black."""
    heat = colorize(resize_map(error_map, width, height), scale)
    black = Image.new("RGBA", heat.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, heat).convert("RGB")
