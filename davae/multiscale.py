"""Statistics of normal images that scores are measured against, per position.

Two per-position models, both fitted on the normal training images after
training:

- :class:`FeatureStats`, the multi-scale latent distance: the encoder's
  intermediate stage outputs are latent codes of local regions at several
  scales. They are pooled onto one grid, and each grid position gets its own
  Gaussian (mean and Ledoit-Wolf shrinkage covariance). An image's distance
  map holds the Mahalanobis distance of each position's features; its score
  is the largest. The idea of one Gaussian per position over stacked
  convolutional features follows PaDiM (Defard et al., "PaDiM: a Patch
  Distribution Modeling Framework for Anomaly Detection and Localization",
  2020), here on the VAE's own encoder rather than pretrained weights.
- :class:`ErrorStats`, per-pixel normalisation of error maps: the smoothed
  reconstruction error of each pixel is standardised by its mean and standard
  deviation over normal images, so places that are always hard to reconstruct
  (edges, texture) stop dominating the map.

Both assume that a given position means roughly the same place in every image,
which holds in whole-image mode (every image is resized to the model input).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Feature statistics are fitted on at most this many training images: the
# features of 2,000 images at 224 channels on a 16 x 16 grid already take
# about 460 MB.
MAX_FEATURE_FIT_IMAGES = 2000


def pooled_features(
    stages: list[torch.Tensor], indices: tuple[int, ...], grid: int
) -> torch.Tensor:
    """Stack the chosen encoder stages on a ``grid`` x ``grid`` map: (N, C_sum, G, G).

    Larger stages are average-pooled down; smaller ones are upsampled bilinearly.
    """
    maps = []
    for index in indices:
        stage = stages[index]
        if stage.shape[-1] > grid or stage.shape[-2] > grid:
            stage = F.adaptive_avg_pool2d(stage, grid)
        elif stage.shape[-2:] != (grid, grid):
            stage = F.interpolate(stage, size=(grid, grid), mode="bilinear", align_corners=False)
        maps.append(stage)
    return torch.cat(maps, dim=1)


@dataclass(frozen=True)
class FeatureStats:
    """One Gaussian per grid position over the pooled encoder features."""

    mean: torch.Tensor  # (P, C), P = grid * grid
    precision: torch.Tensor  # (P, C, C)
    grid: int
    stages: tuple[int, ...]

    @classmethod
    def fit(cls, features: np.ndarray, stages: tuple[int, ...]) -> FeatureStats:
        """Fit (N, C, G, G) features of normal images with a Ledoit-Wolf estimate per position.

        A small ridge keeps every precision matrix finite, also for one image
        or identical copies.
        """
        from sklearn.covariance import ledoit_wolf

        count, channels, grid, _ = features.shape
        by_position = features.transpose(2, 3, 0, 1).reshape(grid * grid, count, channels)
        means = by_position.mean(axis=1)
        precisions = np.empty((grid * grid, channels, channels), dtype=np.float32)
        identity = np.eye(channels)
        for position in range(grid * grid):
            samples = by_position[position].astype(np.float64)
            if count >= 2:
                covariance, _ = ledoit_wolf(samples)
            else:
                covariance = np.zeros((channels, channels))
            scale = float(np.trace(covariance)) / channels
            ridge = 1e-6 * scale + 1e-9
            precisions[position] = np.linalg.inv(covariance + ridge * identity)
        return cls(
            mean=torch.as_tensor(means, dtype=torch.float32),
            precision=torch.as_tensor(precisions),
            grid=grid,
            stages=tuple(stages),
        )

    def distance_maps(self, features: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance of each position of (N, C, G, G) features: (N, G, G)."""
        count, channels, grid, _ = features.shape
        delta = features.permute(2, 3, 0, 1).reshape(grid * grid, count, channels)
        delta = delta - self.mean[:, None, :]
        squared = torch.einsum("pnc,pcd,pnd->pn", delta, self.precision, delta)
        return squared.clamp_min(0.0).sqrt().T.reshape(count, grid, grid)

    def to_dict(self) -> dict[str, object]:
        return {
            "mean": self.mean,
            "precision": self.precision,
            "grid": self.grid,
            "stages": list(self.stages),
        }

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> FeatureStats:
        return cls(
            mean=data["mean"].float(),  # type: ignore[union-attr]
            precision=data["precision"].float(),  # type: ignore[union-attr]
            grid=int(data["grid"]),  # type: ignore[arg-type]
            stages=tuple(int(s) for s in data["stages"]),  # type: ignore[union-attr]
        )


@dataclass(frozen=True)
class ErrorStats:
    """Per-pixel mean and standard deviation of normal images' smoothed error maps."""

    mean: torch.Tensor  # (S, S)
    std: torch.Tensor  # (S, S)

    @classmethod
    def fit(cls, error_maps: torch.Tensor) -> ErrorStats:
        """Fit (N, S, S) error maps of normal images.

        The standard deviation is floored at a tenth of its median, so a pixel
        that happened to vary little in training cannot blow up the scores.
        """
        mean = error_maps.mean(dim=0)
        std = error_maps.std(dim=0, unbiased=False) if error_maps.shape[0] > 1 else mean.abs()
        floor = 0.1 * float(std.median()) + 1e-12
        return cls(mean=mean.float(), std=std.clamp_min(floor).float())

    def normalize(self, error_maps: torch.Tensor) -> torch.Tensor:
        """Standardise (N, S, S) maps: how many normal standard deviations each pixel is off."""
        return (error_maps - self.mean) / self.std

    def to_dict(self) -> dict[str, torch.Tensor]:
        return {"mean": self.mean, "std": self.std}

    @classmethod
    def from_dict(cls, data: dict[str, torch.Tensor]) -> ErrorStats:
        return cls(mean=data["mean"].float(), std=data["std"].float())
