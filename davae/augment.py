"""Augmentation of normal images with ``torchvision.transforms.v2``.

Only transforms that cannot create defect-like artefacts are used: exact
rotations by multiples of 90 degrees, flips, global brightness and contrast,
and mild additive Gaussian noise.
"""

from __future__ import annotations

import torch
from torchvision.transforms import v2

from davae.config import AugmentConfig


def build_augmentation(config: AugmentConfig) -> v2.Transform | None:
    """Build the transform pipeline for one image tensor (C, H, W) in [0, 1].

    Returns None when every transform is switched off. Rotations by 90 and 270
    degrees swap height and width, so inputs must be square (model inputs and
    patches are).
    """
    steps: list[v2.Transform] = []
    if config.rotate90 and config.rotate90_p > 0:
        # torchvision's rotate is exact for multiples of 90 degrees (no interpolation).
        quarter_turns = v2.RandomChoice(
            [v2.RandomRotation(degrees=(angle, angle)) for angle in (90, 180, 270)]
        )
        steps.append(v2.RandomApply([quarter_turns], p=config.rotate90_p))
    if config.hflip and config.hflip_p > 0:
        steps.append(v2.RandomHorizontalFlip(p=config.hflip_p))
    if config.vflip and config.vflip_p > 0:
        steps.append(v2.RandomVerticalFlip(p=config.vflip_p))

    brightness = config.brightness_strength if config.brightness else 0.0
    contrast = config.contrast_strength if config.contrast else 0.0
    if brightness > 0 or contrast > 0:
        steps.append(v2.ColorJitter(brightness=brightness or None, contrast=contrast or None))
    if config.noise and config.noise_sigma > 0:
        steps.append(v2.GaussianNoise(mean=0.0, sigma=config.noise_sigma, clip=True))

    if not steps:
        return None
    return v2.Compose(steps)


def augment_batch(images: torch.Tensor, transform: v2.Transform | None) -> torch.Tensor:
    """Apply ``transform`` to each image of a (N, C, H, W) batch independently."""
    if transform is None:
        return images
    return torch.stack([transform(image) for image in images])
