"""Error maps, latent distances and the two anomaly scores.

Everything here is deterministic: the model runs in eval mode and the latent
mean is used, never a sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from davae.model import ConvVAE
from davae.multiscale import pooled_features


@dataclass(frozen=True)
class LatentStats:
    """Mean and precision matrix of the normal training latents."""

    mean: torch.Tensor  # (D,)
    precision: torch.Tensor  # (D, D)

    @classmethod
    def fit(cls, latents: np.ndarray) -> LatentStats:
        """Fit a Ledoit-Wolf shrinkage covariance to (N, D) latents.

        A small ridge keeps the precision finite even when every latent is
        identical (one image, or copies of one image).
        """
        from sklearn.covariance import LedoitWolf

        latents = np.asarray(latents, dtype=np.float64)
        mean = latents.mean(axis=0)
        if latents.shape[0] >= 2:
            covariance = LedoitWolf(assume_centered=False).fit(latents).covariance_
        else:
            covariance = np.zeros((latents.shape[1], latents.shape[1]))
        scale = float(np.trace(covariance)) / covariance.shape[0]
        ridge = 1e-3 * scale + 1e-6
        precision = np.linalg.inv(covariance + ridge * np.eye(covariance.shape[0]))
        return cls(
            torch.as_tensor(mean, dtype=torch.float32),
            torch.as_tensor(precision, dtype=torch.float32),
        )

    def euclidean(self, mu: torch.Tensor) -> torch.Tensor:
        """Euclidean distance of each row of (N, D) ``mu`` from the mean, shape (N,)."""
        return (mu - self.mean).norm(dim=1)

    def mahalanobis(self, mu: torch.Tensor) -> torch.Tensor:
        """Mahalanobis distance sqrt(d^T P d) of each row of ``mu``, shape (N,)."""
        delta = mu - self.mean
        squared = ((delta @ self.precision) * delta).sum(dim=1)
        return squared.clamp_min(0.0).sqrt()


def smooth_error_maps(error: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth (N, 1, H, W) error maps with a Gaussian of ``sigma`` pixels."""
    if sigma <= 0:
        return error
    kernel = 2 * math.ceil(3 * sigma) + 1
    height, width = error.shape[-2:]
    pad = min(kernel // 2, height - 1, width - 1)
    if pad <= 0:
        return error
    padded = F.pad(error, (pad, pad, pad, pad), mode="reflect")
    blurred = TF.gaussian_blur(padded, [kernel, kernel], [sigma, sigma])
    return blurred[..., pad : pad + height, pad : pad + width]


@dataclass
class BatchAnalysis:
    """Model outputs for a batch: what scores and heatmaps are computed from."""

    error_maps: torch.Tensor  # (N, H, W) smoothed squared error, mean over channels
    latents: torch.Tensor  # (N, D) latent means
    reconstructions: torch.Tensor  # (N, C, H, W)
    features: torch.Tensor | None = None  # (N, C_sum, G, G) pooled encoder stages, if asked


@torch.inference_mode()
def analyze_batch(
    model: ConvVAE,
    images: torch.Tensor,
    smoothing_sigma: float,
    feature_stages: tuple[int, ...] | None = None,
    feature_grid: int = 16,
) -> BatchAnalysis:
    """Run (N, C, S, S) images through the model in eval mode, from the latent mean.

    With ``feature_stages``, also return those encoder stages pooled onto a
    ``feature_grid`` square grid (see :func:`davae.multiscale.pooled_features`).
    """
    model.eval()
    stages = model.stage_features(images)
    mu, _ = model.latent_from_bottom(stages[-1])
    reconstructions = model.decode(mu)
    error = (reconstructions - images).pow(2).mean(dim=1, keepdim=True)  # (N, 1, S, S)
    error_maps = smooth_error_maps(error, smoothing_sigma)[:, 0]
    features = None
    if feature_stages:
        features = pooled_features(stages, feature_stages, feature_grid)
    return BatchAnalysis(error_maps, mu, reconstructions, features)


def window_origins(length: int, window: int, stride: int) -> list[int]:
    """Start offsets of sliding windows covering ``length``, the last flush with the end."""
    if length <= window:
        return [0]
    origins = list(range(0, length - window + 1, stride))
    if origins[-1] != length - window:
        origins.append(length - window)
    return origins


@dataclass
class LargeImageAnalysis:
    """Sliding-window outputs for one large image."""

    error_map: torch.Tensor  # (H, W) stitched, then smoothed
    window_latents: torch.Tensor  # (P, D) one latent mean per window
    reconstruction: torch.Tensor  # (C, H, W) stitched


@torch.inference_mode()
def analyze_large(
    model: ConvVAE,
    image: torch.Tensor,
    stride: int,
    smoothing_sigma: float,
    batch_size: int,
) -> LargeImageAnalysis:
    """Score (C, H, W) with a sliding window of the model's input size.

    Overlapping windows are averaged, then the stitched map is smoothed once,
    so window borders leave no seams.
    """
    model.eval()
    size = model.config.image_size
    channels, height, width = image.shape
    boxes = [
        (top, left)
        for top in window_origins(height, size, stride)
        for left in window_origins(width, size, stride)
    ]
    # On the image's device: error maps computed on a GPU are added into these.
    error_sum = torch.zeros(height, width, device=image.device)
    recon_sum = torch.zeros(channels, height, width, device=image.device)
    counts = torch.zeros(height, width, device=image.device)
    latents = []
    for start in range(0, len(boxes), batch_size):
        chunk = boxes[start : start + batch_size]
        windows = torch.stack(
            [image[:, top : top + size, left : left + size] for top, left in chunk]
        )
        mu, _ = model.encode(windows)
        recon = model.decode(mu)
        error = (recon - windows).pow(2).mean(dim=1)  # (P, S, S)
        for (top, left), err, rec in zip(chunk, error, recon, strict=True):
            error_sum[top : top + size, left : left + size] += err
            recon_sum[:, top : top + size, left : left + size] += rec
            counts[top : top + size, left : left + size] += 1
        latents.append(mu)
    error_map = error_sum / counts
    smoothed = smooth_error_maps(error_map[None, None], smoothing_sigma)[0, 0]
    return LargeImageAnalysis(smoothed, torch.cat(latents), recon_sum / counts)


@dataclass(frozen=True)
class RawScores:
    """Both reductions of the error map and the latent distances for one image.

    ``latent_multiscale`` is None for a detector without feature statistics.
    """

    recon_mean: float
    recon_max: float
    latent_euclidean: float
    latent_mahalanobis: float
    latent_multiscale: float | None = None

    def recon(self, reduction: str) -> float:
        return self.recon_max if reduction == "max" else self.recon_mean

    def latent(self, metric: str) -> float:
        value = getattr(self, f"latent_{metric}")
        if value is None:
            raise ValueError(f"latent metric {metric!r} was not computed for this detector")
        return value


def raw_scores(
    error_map: torch.Tensor,
    latents: torch.Tensor,
    stats: LatentStats,
    distance_map: torch.Tensor | None = None,
) -> RawScores:
    """Reduce one image's (H, W) error map, (P, D) latents and optional distance map.

    With several latents (one per sliding window) the largest distance counts,
    as a defect shows in the window that contains it; likewise the largest
    value of the per-position ``distance_map``.
    """
    return RawScores(
        recon_mean=float(error_map.mean()),
        recon_max=float(error_map.max()),
        latent_euclidean=float(stats.euclidean(latents).max()),
        latent_mahalanobis=float(stats.mahalanobis(latents).max()),
        latent_multiscale=None if distance_map is None else float(distance_map.max()),
    )


def combined_score(recon: float, latent: float, t_recon: float, t_latent: float) -> float:
    """max(recon / t_recon, latent / t_latent): 1.0 exactly at the decision boundary."""
    return max(recon / t_recon, latent / t_latent)
