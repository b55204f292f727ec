"""Conventional detectors from scikit-learn, the reference points for DA-VAE.

Feature set, the same for every detector here:

1. the decoded image in [0, 1], converted to grayscale (ITU-R BT.601 luma
   weights for RGB input);
2. resized to ``feature_size`` x ``feature_size`` pixels (default 32) with
   bilinear interpolation and antialiasing, the resize the VAE's input uses,
   so non-square images are squashed to a square as they are for the VAE;
3. flattened to a vector of ``feature_size ** 2`` values;
4. standardised per feature with a ``StandardScaler`` fitted on the
   training normals only (:func:`fit_scaler`).

Detectors and their anomaly scores (higher = more anomalous):

- ``one_class_svm``: ``OneClassSVM`` with an RBF kernel (``gamma="scale"``);
  the score is minus its decision function.
- ``isolation_forest``: ``IsolationForest``; the score is minus
  ``score_samples``.
- ``pca_reconstruction``: ``PCA`` fitted on the training normals with at most
  ``pca_components`` components; the score is the squared reconstruction
  error summed over features.
- ``random_forest``: ``RandomForestClassifier`` trained on labelled normals
  and labelled defects, as a supervised reference. The score is the
  predicted probability of "defect", the share of trees voting for it.

Every threshold is the (1 - ``target_fpr``) quantile of the scores of
held-out training normals that no detector was fitted on, the same
false-alarm target the DA-VAE calibrates its thresholds at.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest, RandomForestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import OneClassSVM

from davae.calibration import quantile_threshold
from davae.errors import invalid_setting
from davae.preprocess import resize, to_tensor

logger = logging.getLogger(__name__)

UNSUPERVISED_BASELINES = ("one_class_svm", "isolation_forest", "pca_reconstruction")
SUPERVISED_BASELINES = ("random_forest",)
BASELINE_NAMES = UNSUPERVISED_BASELINES + SUPERVISED_BASELINES

# ITU-R BT.601 luma weights, the same conversion as Pillow's "L" mode.
_LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)


@dataclass(frozen=True)
class BaselineConfig:
    """Feature size and hyperparameters of the conventional detectors."""

    feature_size: int = 32  # side of the square grayscale image, in pixels
    ocsvm_nu: float = 0.1  # upper bound on the share of training normals outside the boundary
    isolation_trees: int = 200
    pca_components: int = 50  # at most; fewer when there are fewer training normals
    forest_trees: int = 200

    def validate(self) -> None:
        if not (4 <= self.feature_size <= 256):
            raise invalid_setting("feature_size", self.feature_size, "an integer from 4 to 256")
        if not (0.001 <= self.ocsvm_nu <= 1.0):
            raise invalid_setting("ocsvm_nu", self.ocsvm_nu, "a number from 0.001 to 1.0")
        for name in ("isolation_trees", "forest_trees"):
            if not (1 <= getattr(self, name) <= 10_000):
                raise invalid_setting(name, getattr(self, name), "an integer from 1 to 10000")
        if self.pca_components < 1:
            raise invalid_setting("pca_components", self.pca_components, "a positive integer")


def image_features(pixels: np.ndarray, size: int) -> np.ndarray:
    """Return the (size * size,) grayscale feature vector of one (H, W, C) image in [0, 1]."""
    gray = pixels @ _LUMA_WEIGHTS if pixels.shape[2] == 3 else pixels[:, :, 0]
    small = resize(to_tensor(gray[:, :, None]), size, size)  # (1, size, size)
    return small.reshape(-1).numpy().astype(np.float32)


def fit_scaler(training_normals: np.ndarray) -> StandardScaler:
    """Fit the per-feature standardisation on (N, F) training-normal features."""
    return StandardScaler().fit(training_normals)


@dataclass
class FittedBaseline:
    """A fitted conventional detector with its calibrated threshold."""

    name: str
    estimator: BaseEstimator
    threshold: float  # score above it = anomalous
    calibration_scores: np.ndarray  # scores of the held-out training normals
    fit_seconds: float
    details: dict[str, float | int] = field(default_factory=dict)

    def score(self, features: np.ndarray) -> np.ndarray:
        """Return anomaly scores (higher = more anomalous) of standardised (N, F) features."""
        return baseline_scores(self.name, self.estimator, features)


def baseline_scores(name: str, estimator: BaseEstimator, features: np.ndarray) -> np.ndarray:
    """Return the anomaly scores of a fitted detector, higher = more anomalous."""
    if name == "one_class_svm":
        return -estimator.decision_function(features)
    if name == "isolation_forest":
        return -estimator.score_samples(features)
    if name == "pca_reconstruction":
        restored = estimator.inverse_transform(estimator.transform(features))
        return ((features - restored) ** 2).sum(axis=1)
    if name == "random_forest":
        return estimator.predict_proba(features)[:, list(estimator.classes_).index(1)]
    raise invalid_setting("baseline", name, "one of " + ", ".join(BASELINE_NAMES))


def fit_baseline(
    name: str,
    training_normals: np.ndarray,
    calibration_normals: np.ndarray,
    target_fpr: float,
    config: BaselineConfig | None = None,
    labelled_defects: np.ndarray | None = None,
    seed: int = 0,
) -> FittedBaseline:
    """Fit detector ``name`` on standardised features and calibrate its threshold.

    The unsupervised detectors fit on ``training_normals`` alone. The random
    forest fits on ``training_normals`` (label 0) and ``labelled_defects``
    (label 1), which the caller chooses; see the study's protocol. The
    threshold is the (1 - ``target_fpr``) quantile of the scores of
    ``calibration_normals``. ``seed`` drives the two forests.
    """
    config = config or BaselineConfig()
    config.validate()
    started = time.perf_counter()
    details: dict[str, float | int] = {"fit_normals": int(training_normals.shape[0])}
    if name == "one_class_svm":
        estimator = OneClassSVM(kernel="rbf", gamma="scale", nu=config.ocsvm_nu)
        estimator.fit(training_normals)
    elif name == "isolation_forest":
        estimator = IsolationForest(n_estimators=config.isolation_trees, random_state=seed)
        estimator.fit(training_normals)
    elif name == "pca_reconstruction":
        components = min(config.pca_components, training_normals.shape[0] - 1)
        components = max(1, min(components, training_normals.shape[1]))
        estimator = PCA(n_components=components, svd_solver="full")
        estimator.fit(training_normals)
        details["components"] = components
        details["explained_variance"] = float(estimator.explained_variance_ratio_.sum())
    elif name == "random_forest":
        if labelled_defects is None or labelled_defects.shape[0] == 0:
            raise invalid_setting(
                "labelled_defects", 0, "at least one labelled defect image for the random forest"
            )
        features = np.concatenate([training_normals, labelled_defects])
        labels = np.concatenate(
            [np.zeros(training_normals.shape[0], int), np.ones(labelled_defects.shape[0], int)]
        )
        estimator = RandomForestClassifier(
            n_estimators=config.forest_trees, random_state=seed, n_jobs=1
        )
        estimator.fit(features, labels)
        details["fit_defects"] = int(labelled_defects.shape[0])
    else:
        raise invalid_setting("baseline", name, "one of " + ", ".join(BASELINE_NAMES))

    calibration_scores = baseline_scores(name, estimator, calibration_normals)
    threshold = quantile_threshold(calibration_scores, 1.0 - target_fpr)
    fit_seconds = time.perf_counter() - started
    logger.info("fitted %s in %.1f s, threshold %.6g", name, fit_seconds, threshold)
    return FittedBaseline(
        name=name,
        estimator=estimator,
        threshold=threshold,
        calibration_scores=calibration_scores,
        fit_seconds=fit_seconds,
        details=details,
    )


def features_of(images: list[np.ndarray], size: int) -> np.ndarray:
    """Stack the feature vectors of decoded images into an (N, size * size) array."""
    if not images:
        return np.zeros((0, size * size), dtype=np.float32)
    with torch.inference_mode():
        return np.stack([image_features(pixels, size) for pixels in images])
