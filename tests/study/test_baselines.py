"""The conventional detectors: features, scores, thresholds and their input checks."""

from __future__ import annotations

import numpy as np
import pytest

from davae.baselines import (
    UNSUPERVISED_BASELINES,
    BaselineConfig,
    features_of,
    fit_baseline,
    fit_scaler,
    image_features,
)
from davae.errors import DavaeError

FEATURES = 64


def _gaussian(rng: np.random.Generator, count: int, shift: float = 0.0) -> np.ndarray:
    return rng.normal(size=(count, FEATURES)) + shift


@pytest.mark.parametrize("name", UNSUPERVISED_BASELINES)
def test_unsupervised_scores_outliers_higher(name: str) -> None:
    rng = np.random.default_rng(0)
    fitted = fit_baseline(name, _gaussian(rng, 120), _gaussian(rng, 60), target_fpr=0.05)
    normal_scores = fitted.score(_gaussian(rng, 60))
    outlier_scores = fitted.score(_gaussian(rng, 20, shift=6.0))

    assert outlier_scores.min() > np.median(normal_scores)
    assert (outlier_scores > fitted.threshold).all()


@pytest.mark.parametrize("name", UNSUPERVISED_BASELINES)
def test_threshold_is_calibration_quantile(name: str) -> None:
    rng = np.random.default_rng(1)
    fitted = fit_baseline(name, _gaussian(rng, 100), _gaussian(rng, 50), target_fpr=0.1)

    assert fitted.threshold == pytest.approx(np.quantile(fitted.calibration_scores, 0.9))
    assert (fitted.calibration_scores > fitted.threshold).mean() <= 0.1


def test_random_forest_learns_labelled_defects() -> None:
    rng = np.random.default_rng(2)
    fitted = fit_baseline(
        "random_forest",
        _gaussian(rng, 20),
        _gaussian(rng, 40),
        target_fpr=0.05,
        labelled_defects=_gaussian(rng, 20, shift=3.0),
    )
    defect_scores = fitted.score(_gaussian(rng, 20, shift=3.0))
    normal_scores = fitted.score(_gaussian(rng, 20))

    assert fitted.details["fit_defects"] == 20
    assert defect_scores.mean() > normal_scores.mean()
    assert ((defect_scores >= 0) & (defect_scores <= 1)).all()


def test_random_forest_without_defects_rejected() -> None:
    rng = np.random.default_rng(3)
    with pytest.raises(DavaeError) as caught:
        fit_baseline("random_forest", _gaussian(rng, 20), _gaussian(rng, 10), target_fpr=0.05)
    assert caught.value.code == "invalid_setting"


def test_unknown_baseline_rejected() -> None:
    rng = np.random.default_rng(4)
    with pytest.raises(DavaeError) as caught:
        fit_baseline("knn", _gaussian(rng, 20), _gaussian(rng, 10), target_fpr=0.05)
    assert caught.value.code == "invalid_setting"
    assert "one_class_svm" in str(caught.value)


def test_pca_components_capped_by_images() -> None:
    rng = np.random.default_rng(5)
    fitted = fit_baseline(
        "pca_reconstruction", _gaussian(rng, 12), _gaussian(rng, 10), target_fpr=0.05
    )
    assert fitted.details["components"] == 11


def test_features_grayscale_square_vector() -> None:
    gray = np.full((40, 60, 1), 0.25, dtype=np.float32)
    color = np.zeros((40, 60, 3), dtype=np.float32)
    color[:, :, 1] = 1.0  # pure green: luma 0.587

    assert image_features(gray, 32).shape == (1024,)
    np.testing.assert_allclose(image_features(gray, 32), 0.25, atol=1e-6)
    np.testing.assert_allclose(image_features(color, 16), 0.587, atol=1e-5)
    assert features_of([gray, gray], 8).shape == (2, 64)
    assert features_of([], 8).shape == (0, 64)


def test_scaler_standardises_training_features() -> None:
    rng = np.random.default_rng(6)
    training = rng.normal(3.0, 2.0, size=(200, 5))
    scaled = fit_scaler(training).transform(training)

    np.testing.assert_allclose(scaled.mean(axis=0), 0.0, atol=1e-9)
    np.testing.assert_allclose(scaled.std(axis=0), 1.0, atol=1e-9)


@pytest.mark.parametrize(
    "change",
    [{"feature_size": 2}, {"ocsvm_nu": 0.0}, {"forest_trees": 0}, {"pca_components": 0}],
)
def test_baseline_config_rejects_invalid(change: dict) -> None:
    with pytest.raises(DavaeError) as caught:
        BaselineConfig(**change).validate()
    assert caught.value.code == "invalid_setting"
