"""The data of a comparative study: one split and one evaluation set for every method.

Protocol, the same for every method of the study:

- Training normals are the decodable images of ``train/good``, read in the
  order :func:`davae.dataset.load_images` reads them.
  :func:`davae.training.split_train_validation` with the DA-VAE's
  ``val_fraction`` and ``seed`` divides them into a fit part and a held-out
  calibration part. The DA-VAE trains on the fit part and calibrates its
  thresholds on the held-out part inside ``train_detector``. The
  conventional detectors are fitted on the same fit part and calibrated on
  the same held-out part.
- The random forest also needs labelled defects: from each ``test/<defect>``
  class it takes ``min(n, count // 2)`` images (``n`` =
  ``labelled_defects_per_class``, drawn with the seed), so that every class
  keeps at least half of its images for evaluation, and as many normals
  drawn from the fit part.
- The evaluation set is every decodable test image except those labelled
  defects, so every method is evaluated on exactly the same images.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from davae.baselines import features_of, image_features
from davae.config import InputLimits
from davae.dataset import MVTecDataset, TestImage, load_images
from davae.errors import DavaeError, TrainingCancelled
from davae.imageio import decode_image
from davae.training import split_train_validation

logger = logging.getLogger(__name__)


@dataclass
class StudyData:
    """Decoded training normals, features and the evaluation set of one study."""

    dataset: MVTecDataset
    train_pixels: list[np.ndarray]  # (H, W, C) in [0, 1], for DA-VAE training
    train_fingerprint: dict[str, object]
    fit_index: list[int]  # training normals the detectors are fitted on
    calibration_index: list[int]  # held-out training normals that set the thresholds
    train_features: np.ndarray  # (N_train, F), not standardised
    evaluation: list[TestImage]
    evaluation_sha256: list[str]
    evaluation_features: np.ndarray  # (N_eval, F)
    labelled_defects: list[TestImage]  # the random forest's defects, not evaluated
    labelled_defect_features: np.ndarray  # (N_defects, F)
    labelled_normal_index: list[int]  # the random forest's normals, within fit_index
    rejected: list[dict[str, str]]  # test files that could not be decoded

    @property
    def labels(self) -> np.ndarray:
        """Evaluation labels, 1 = anomalous, in evaluation order."""
        return np.array([int(image.is_anomalous) for image in self.evaluation])

    def relative_path(self, image: TestImage) -> str:
        return image.path.relative_to(self.dataset.root).as_posix()

    def evaluation_key(self) -> str:
        """Return a hash of the evaluation set's paths and contents, for the score cache."""
        digest = hashlib.sha256()
        for image, sha in zip(self.evaluation, self.evaluation_sha256, strict=True):
            digest.update(f"{self.relative_path(image)}\0{sha}\n".encode())
        return digest.hexdigest()[:16]


def load_study_data(
    dataset: MVTecDataset,
    channels: int,
    val_fraction: float,
    seed: int,
    labelled_defects_per_class: int,
    feature_size: int,
    limits: InputLimits | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> StudyData:
    """Decode the dataset once, split the normals and choose the labelled defects.

    Raises DavaeError when there are too few training normals, no decodable
    normal test image or no decodable defect image.
    """
    limits = limits or InputLimits()
    train = load_images([dataset.root / "train" / "good"], channels, limits)
    fit_index, calibration_index = split_train_validation(len(train.pixels), val_fraction, seed)
    train_features = features_of(train.pixels, feature_size)
    logger.info(
        "%d training normals: %d to fit, %d held out for thresholds",
        len(train.pixels),
        len(fit_index),
        len(calibration_index),
    )

    decoded: list[TestImage] = []
    hashes: list[str] = []
    features: list[np.ndarray] = []
    rejected: list[dict[str, str]] = []
    for test_image in dataset.test:
        if should_cancel is not None and should_cancel():
            raise TrainingCancelled()
        try:
            content = test_image.path.read_bytes()
            pixels = decode_image(content, str(test_image.path), channels, limits).pixels
        except (DavaeError, OSError) as error:
            logger.warning("rejected test image %s: %s", test_image.path, error)
            rejected.append({"path": str(test_image.path), "error": str(error)})
            continue
        decoded.append(test_image)
        hashes.append(hashlib.sha256(content).hexdigest())
        features.append(image_features(pixels, feature_size))

    labelled = choose_labelled_defects(decoded, labelled_defects_per_class, seed)
    rng = np.random.default_rng(seed)
    normal_count = min(len(labelled), len(fit_index))
    labelled_normals = sorted(rng.choice(fit_index, size=normal_count, replace=False).tolist())
    labelled_set = set(labelled)
    keep = [i for i in range(len(decoded)) if i not in labelled_set]
    data = StudyData(
        dataset=dataset,
        train_pixels=train.pixels,
        train_fingerprint=train.fingerprint(),
        fit_index=fit_index,
        calibration_index=calibration_index,
        train_features=train_features,
        evaluation=[decoded[i] for i in keep],
        evaluation_sha256=[hashes[i] for i in keep],
        evaluation_features=_stack([features[i] for i in keep], feature_size),
        labelled_defects=[decoded[i] for i in labelled],
        labelled_defect_features=_stack([features[i] for i in labelled], feature_size),
        labelled_normal_index=labelled_normals,
        rejected=rejected,
    )
    _check_evaluation_set(data)
    return data


def choose_labelled_defects(images: list[TestImage], per_class: int, seed: int) -> list[int]:
    """Pick ``min(per_class, count // 2)`` images of each defect class; return sorted indices."""
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for defect in sorted({image.defect for image in images if image.is_anomalous}):
        members = [i for i, image in enumerate(images) if image.defect == defect]
        count = min(per_class, len(members) // 2)
        chosen += rng.permutation(members)[:count].tolist()
    return sorted(chosen)


def _stack(rows: list[np.ndarray], feature_size: int) -> np.ndarray:
    if not rows:
        return np.zeros((0, feature_size * feature_size), dtype=np.float32)
    return np.stack(rows)


def _check_evaluation_set(data: StudyData) -> None:
    labels = data.labels
    for label, what in ((0, "normal images in test/good"), (1, "defect images in test/<defect>")):
        if not (labels == label).any():
            raise DavaeError(
                "dataset_layout",
                f"{data.dataset.root}: no decodable {what} to evaluate on",
                path=str(data.dataset.root),
                detail=f"no {what}",
            )


def imbalance_subset(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, float]:
    """Choose an evaluation subset whose defect share is ``share``; return indices and share.

    All normals are kept and defects are subsampled to
    ``round(share * normals / (1 - share))``, at least one and at most all of
    them, so the returned share can differ from ``share``. The defects for a
    seed are the first ones of a permutation drawn with that seed, so the
    subsets for smaller shares are contained in those for larger shares.
    """
    normals = np.flatnonzero(labels == 0)
    defects = np.flatnonzero(labels == 1)
    requested = round(share * len(normals) / (1.0 - share))
    count = min(max(1, requested), len(defects))
    chosen = np.random.default_rng(seed).permutation(defects)[:count]
    subset = np.sort(np.concatenate([normals, chosen]))
    return subset, count / len(subset)
