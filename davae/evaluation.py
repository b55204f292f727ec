"""Evaluate a trained detector on the test split of an MVTec-style dataset."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from davae.config import InputLimits
from davae.dataset import MVTecDataset, TestImage, open_mvtec
from davae.detector import Detector
from davae.errors import DavaeError
from davae.heatmap import resize_map
from davae.imageio import decode_image
from davae.metrics import pixel_auroc, score_metrics

logger = logging.getLogger(__name__)

# Pixel AUROC compares maps and masks resized to at most this long side, which
# keeps memory bounded on large images while keeping small defects visible.
PIXEL_EVAL_MAX_SIDE = 256


@dataclass
class TestScores:
    """Scores of every test image, in dataset order."""

    images: list[TestImage] = field(default_factory=list)
    raw: dict[str, list[float]] = field(default_factory=dict)
    combined: list[float] = field(default_factory=list)
    anomalous: list[bool] = field(default_factory=list)
    masks: list[np.ndarray] = field(default_factory=list)
    maps: list[np.ndarray] = field(default_factory=list)
    rejected: list[dict[str, str]] = field(default_factory=list)

    @property
    def labels(self) -> np.ndarray:
        return np.array([int(t.is_anomalous) for t in self.images])


def score_test_set(
    detector: Detector,
    dataset: MVTecDataset,
    limits: InputLimits | None = None,
    progress: Callable[[int, int], None] | None = None,
    with_pixels: bool = True,
) -> TestScores:
    """Score every test image; keep downscaled maps and masks for pixel AUROC."""
    limits = limits or InputLimits()
    has_masks = with_pixels and any(t.mask_path for t in dataset.test)
    out = TestScores(raw={name: [] for name in detector.score_names})
    batch_size = detector.config.scoring.batch_size
    total = len(dataset.test)
    for start in range(0, total, batch_size):
        chunk = dataset.test[start : start + batch_size]
        decoded, kept = [], []
        for test_image in chunk:
            try:
                image = decode_image(
                    test_image.path.read_bytes(), str(test_image.path), detector.channels, limits
                )
            except (DavaeError, OSError) as error:
                out.rejected.append({"path": str(test_image.path), "error": str(error)})
                continue
            decoded.append(image)
            kept.append(test_image)
        results = detector.score_pixels([image.pixels for image in decoded])
        for test_image, image, result in zip(kept, decoded, results, strict=True):
            out.images.append(test_image)
            for name in detector.score_names:
                out.raw[name].append(getattr(result.raw, name))
            out.combined.append(result.combined)
            out.anomalous.append(result.anomalous)
            if has_masks and (test_image.mask_path or not test_image.is_anomalous):
                mask, heat = _pixel_pair(
                    test_image, image.width, image.height, result.analysis.error_map
                )
                out.masks.append(mask)
                out.maps.append(heat)
        if progress is not None:
            progress(min(start + batch_size, total), total)
    return out


def _pixel_pair(test_image: TestImage, width: int, height: int, error_map: np.ndarray):
    factor = min(1.0, PIXEL_EVAL_MAX_SIDE / max(width, height))
    small_w, small_h = max(1, round(width * factor)), max(1, round(height * factor))
    if test_image.mask_path is not None:
        with Image.open(test_image.mask_path) as mask_image:
            mask_image = mask_image.convert("L").resize(
                (small_w, small_h), Image.Resampling.BILINEAR
            )
            mask = np.asarray(mask_image) >= 128
    else:
        mask = np.zeros((small_h, small_w), dtype=bool)
    return mask, resize_map(error_map, small_w, small_h)


def single_score_threshold(detector: Detector, name: str) -> float:
    """Threshold for one score used alone: its calibration quantile at the target rate."""
    if name == f"recon_{detector.thresholds.recon_reduction}":
        return detector.thresholds.recon
    if name == f"latent_{detector.thresholds.latent_metric}":
        return detector.thresholds.latent
    return float(np.quantile(detector.calibration[name], 1.0 - detector.thresholds.target_fpr))


def build_report(detector: Detector, scores: TestScores) -> dict[str, Any]:
    """Assemble the evaluation report: combined, each score, each defect class, pixels."""
    labels = scores.labels
    combined = score_metrics(labels, np.array(scores.combined), 1.0)
    per_score = {
        name: score_metrics(
            labels, np.array(scores.raw[name]), single_score_threshold(detector, name)
        )
        for name in detector.score_names
    }
    per_class: dict[str, Any] = {}
    defects = np.array([t.defect for t in scores.images])
    for defect in sorted(set(defects) - {"good"}):
        keep = (defects == "good") | (defects == defect)
        per_class[defect] = {
            "count": int((defects == defect).sum()),
            "combined": score_metrics(labels[keep], np.array(scores.combined)[keep], 1.0),
            "scores": {
                name: score_metrics(
                    labels[keep],
                    np.array(scores.raw[name])[keep],
                    single_score_threshold(detector, name),
                )
                for name in detector.score_names
            },
        }
    return {
        "counts": {
            "test_good": int((labels == 0).sum()),
            "test_anomalous": int((labels == 1).sum()),
            "rejected": len(scores.rejected),
        },
        "thresholds": detector.thresholds.to_dict(),
        "combined": combined,
        "scores": per_score,
        "per_class": per_class,
        "pixel_auroc": pixel_auroc(scores.masks, scores.maps) if scores.masks else math.nan,
        "rejected": scores.rejected,
    }


def evaluate(
    detector: Detector,
    dataset_root: str | os.PathLike[str],
    limits: InputLimits | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Score the test split of ``dataset_root`` and return the metrics report."""
    dataset = open_mvtec(dataset_root, require_train=False)
    logger.info("evaluating on %d test images from %s", len(dataset.test), dataset_root)
    scores = score_test_set(detector, dataset, limits, progress)
    report = build_report(detector, scores)
    report["dataset"] = str(Path(dataset_root))
    return report
