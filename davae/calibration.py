"""Thresholds and the heatmap colour scale, from held-out normal images."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

# Thresholds are divided by scores, so they must stay positive even when every
# held-out image scores 0 (constant images reconstruct exactly).
_MIN_THRESHOLD = 1e-12
# Share of normal pixels drawn transparent. A median would tint half of every
# clean image.
HEATMAP_LOW_QUANTILE = 0.99


@dataclass(frozen=True)
class Thresholds:
    """The two decision thresholds and which score reductions they apply to."""

    recon: float
    latent: float
    recon_reduction: str
    latent_metric: str
    target_fpr: float

    def to_dict(self) -> dict[str, float | str]:
        return asdict(self)

    def is_anomalous(self, recon: float, latent: float) -> bool:
        return recon > self.recon or latent > self.latent

    def combined(self, recon: float, latent: float) -> float:
        """max(recon / t_recon, latent / t_latent), 1.0 at the decision boundary."""
        return max(recon / self.recon, latent / self.latent)


def quantile_threshold(scores: np.ndarray, quantile: float) -> float:
    """The ``quantile`` of held-out normal scores, linearly interpolated."""
    value = float(np.quantile(np.asarray(scores, dtype=np.float64), quantile))
    return max(value, _MIN_THRESHOLD)


def calibrate_thresholds(
    recon_scores: np.ndarray,
    latent_scores: np.ndarray,
    target_fpr: float,
    recon_reduction: str,
    latent_metric: str,
) -> Thresholds:
    """Set both thresholds so the "either over" rule aims at ``target_fpr``.

    Each score gets the (1 - target_fpr / 2) quantile of the held-out normals,
    so by the union bound the rule flags at most about ``target_fpr`` of them.
    With n held-out images the quantile moves in steps of 1 / n; below about
    2 / target_fpr images the thresholds sit near the largest normal score.
    """
    quantile = 1.0 - target_fpr / 2.0
    return Thresholds(
        recon=quantile_threshold(recon_scores, quantile),
        latent=quantile_threshold(latent_scores, quantile),
        recon_reduction=recon_reduction,
        latent_metric=latent_metric,
        target_fpr=target_fpr,
    )


def false_positive_rate(
    recon_scores: np.ndarray, latent_scores: np.ndarray, thresholds: Thresholds
) -> float:
    """Share of the given (normal) images the "either over" rule flags."""
    flagged = (np.asarray(recon_scores) > thresholds.recon) | (
        np.asarray(latent_scores) > thresholds.latent
    )
    return float(flagged.mean()) if flagged.size else 0.0


@dataclass(frozen=True)
class HeatmapScale:
    """Fixed colour range for heatmaps, in the units of the error map.

    The map is the smoothed squared error, or its per-pixel z-score when
    ``ScoringConfig.error_normalization`` is ``"pixel"``.

    Values at or below ``low`` are drawn transparent, values at ``high`` or
    above at full colour. The same range applies to every image, so a clean
    image looks clean.
    """

    low: float
    high: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def heatmap_scale(error_maps: list[np.ndarray], recon_threshold_max: float) -> HeatmapScale:
    """Choose the colour range from the held-out normals' error maps.

    ``low`` is the ``HEATMAP_LOW_QUANTILE`` quantile of the normals' pixel
    errors, so a normal image is transparent almost everywhere. ``high`` is
    the threshold on the map's maximum, so a pixel reaches full colour
    exactly where it would flag the image on its own.
    """
    pixels = np.concatenate([np.asarray(m, dtype=np.float32).ravel() for m in error_maps])
    low = float(np.quantile(pixels, HEATMAP_LOW_QUANTILE))
    high = max(float(recon_threshold_max), low * 1.5, low + 1e-9)
    return HeatmapScale(low=low, high=high)
