"""Scores: finite on degenerate input, deterministic, calibrated, combined at the boundary."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from engine_images import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    asymmetric_array,
    encode,
    tiny_config,
    with_orientation,
)
from PIL import Image

from davae.calibration import (
    Thresholds,
    calibrate_thresholds,
    false_positive_rate,
    quantile_threshold,
)
from davae.detector import ScoredFile
from davae.errors import TrainingCancelled
from davae.inputs import Ignored, Rejected, Upload, iter_inputs
from davae.scoring import LatentStats, combined_score, smooth_error_maps, window_origins
from davae.training import train_detector


def assert_finite(result) -> None:
    values = [
        result.raw.recon_mean,
        result.raw.recon_max,
        result.raw.latent_euclidean,
        result.raw.latent_mahalanobis,
        result.recon_score,
        result.latent_score,
        result.combined,
    ]
    assert all(math.isfinite(v) for v in values), values
    assert np.isfinite(result.analysis.error_map).all()


@pytest.fixture(scope="module")
def identical_detector(normal_images):
    """A detector trained on 12 copies of one image: zero spread in every statistic."""
    image = normal_images(1, seed=3)[0]
    config = tiny_config(train__epochs=1, augment__iterations=0)
    return train_detector([image] * 12, config), image


@pytest.mark.parametrize("value", [0.0, 0.5, 1.0])
def test_constant_image_scores_finite(tiny, value):
    (result,) = tiny.detector.score_pixels([np.full((40, 48, 1), value, dtype=np.float32)])

    assert_finite(result)


@pytest.mark.parametrize("shape", [(1, 1, 1), (1, 300, 1), (300, 2, 1), (32, 32, 1)])
def test_odd_sizes_score_finite(tiny, shape):
    pixels = np.random.default_rng(0).random(shape).astype(np.float32)
    (result,) = tiny.detector.score_pixels([pixels])

    assert_finite(result)
    assert result.analysis.error_map.shape == (32, 32)


def test_batch_of_one_matches_batch(tiny, normal_images):
    images = normal_images(5, seed=20)
    together = tiny.detector.score_pixels(images)
    alone = [tiny.detector.score_pixels([image])[0] for image in images]

    for batched, single in zip(together, alone, strict=True):
        assert_finite(single)
        assert single.combined == pytest.approx(batched.combined, rel=1e-4)
        assert single.raw.latent_mahalanobis == pytest.approx(
            batched.raw.latent_mahalanobis, rel=1e-4
        )


def test_identical_copies_score_identically(tiny, normal_images):
    image = normal_images(1, seed=21)[0]
    results = tiny.detector.score_pixels([image] * 5)

    # Convolution kernels block the batch differently per position, so copies
    # agree to float rounding (about 1e-6), not bit for bit.
    for result in results:
        assert_finite(result)
        assert result.combined == pytest.approx(results[0].combined, rel=1e-5)


def test_scores_repeat_exactly(tiny, normal_images):
    images = normal_images(3, seed=22)
    first = [r.raw for r in tiny.detector.score_pixels(images)]
    second = [r.raw for r in tiny.detector.score_pixels(images)]

    assert first == second


def test_identical_training_copies_give_finite_scores(identical_detector, normal_images):
    detector, image = identical_detector
    other = normal_images(1, seed=4)[0]
    same, different = detector.score_pixels([image, other])

    assert_finite(same)
    assert_finite(different)
    assert detector.thresholds.recon > 0
    assert detector.thresholds.latent > 0
    assert math.isfinite(detector.heatmap_scale.low)
    assert math.isfinite(detector.heatmap_scale.high)
    assert different.raw.latent_euclidean > same.raw.latent_euclidean


@pytest.mark.parametrize("mode", ["whole", "patch"])
def test_flatfield_scores_finite(normal_images, mode):
    config = tiny_config(
        preprocess__normalize="flatfield", train__mode=mode, train__epochs=1, augment__iterations=0
    )
    detector = train_detector(normal_images(12, seed=6), config)
    constant = np.full((40, 48, 1), 0.3, dtype=np.float32)
    results = detector.score_pixels([constant, normal_images(1, seed=7)[0]])

    for result in results:
        assert_finite(result)
        assert result.analysis.model_input.min() >= 0.0
        assert result.analysis.model_input.max() <= 1.0
    # A constant image is as bright as its surroundings everywhere: 0.5 after flat-fielding.
    np.testing.assert_allclose(results[0].analysis.model_input, 0.5, atol=1e-4)


def test_combined_is_one_at_boundary(tiny, normal_images):
    (result,) = tiny.detector.score_pixels(normal_images(1, seed=23))
    at_recon = tiny.detector.with_thresholds(result.recon_score, result.latent_score * 10)
    (on_boundary,) = at_recon.score_pixels(normal_images(1, seed=23))
    below = at_recon.with_thresholds(result.recon_score * 0.999, result.latent_score * 10)
    (over,) = below.score_pixels(normal_images(1, seed=23))

    assert on_boundary.combined == 1.0
    assert not on_boundary.anomalous
    assert over.combined > 1.0
    assert over.anomalous


def test_combined_takes_larger_ratio():
    thresholds = Thresholds(2.0, 10.0, "max", "mahalanobis", 0.01)

    assert thresholds.combined(1.0, 8.0) == pytest.approx(0.8)
    assert thresholds.combined(3.0, 8.0) == pytest.approx(1.5)
    assert combined_score(1.0, 8.0, 2.0, 10.0) == thresholds.combined(1.0, 8.0)
    assert thresholds.is_anomalous(1.0, 10.5)
    assert not thresholds.is_anomalous(2.0, 10.0)


def test_decision_agrees_with_combined(tiny, normal_images):
    for result in tiny.detector.score_pixels(normal_images(8, seed=24)):
        assert result.anomalous == (result.combined > 1.0)


@pytest.mark.parametrize("target_fpr", [0.01, 0.05, 0.2])
def test_thresholds_hit_target_rate(target_fpr):
    rng = np.random.default_rng(0)
    recon, latent = rng.gamma(2.0, size=40_000), rng.normal(size=40_000) ** 2
    thresholds = calibrate_thresholds(recon, latent, target_fpr, "max", "mahalanobis")

    # Each score alone flags target / 2; the union of two independent ones a bit less than target.
    assert np.mean(recon > thresholds.recon) == pytest.approx(target_fpr / 2, rel=0.05)
    assert np.mean(latent > thresholds.latent) == pytest.approx(target_fpr / 2, rel=0.05)
    rate = false_positive_rate(recon, latent, thresholds)
    assert target_fpr * 0.85 <= rate <= target_fpr * 1.01


def test_thresholds_on_calibration_scores(tiny):
    detector = tiny.detector
    recon = detector.calibration[f"recon_{detector.thresholds.recon_reduction}"]
    latent = detector.calibration[f"latent_{detector.thresholds.latent_metric}"]
    count = len(recon)

    # With n held-out images each threshold sits near the largest score, so
    # at most one image per score is over it.
    assert false_positive_rate(recon, latent, detector.thresholds) <= 2 / count
    assert detector.thresholds.recon >= np.sort(recon)[-2]
    assert detector.thresholds.latent >= np.sort(latent)[-2]


def test_threshold_stays_positive_for_zero_scores():
    assert quantile_threshold(np.zeros(10), 0.99) > 0


def test_with_thresholds_rejects_non_positive(tiny):
    with pytest.raises(ValueError):
        tiny.detector.with_thresholds(0.0, 1.0)


def test_mahalanobis_normalises_each_axis():
    rng = np.random.default_rng(1)
    latents = rng.normal(size=(4000, 3)) * np.array([3.0, 1.0, 0.5])
    stats = LatentStats.fit(latents)
    probes = torch.tensor([[3.0, 0, 0], [0, 1.0, 0], [0, 0, 0.5]])
    expected_euclidean = torch.tensor([3.0, 1.0, 0.5])

    # One standard deviation along any axis is distance 1, whatever its scale.
    torch.testing.assert_close(stats.mahalanobis(probes), torch.ones(3), atol=0.05, rtol=0)
    torch.testing.assert_close(stats.euclidean(probes), expected_euclidean, atol=0.1, rtol=0)


def test_latent_stats_finite_for_one_or_identical_latents():
    for latents in (np.ones((1, 4)), np.ones((20, 4))):
        stats = LatentStats.fit(latents)
        distance = stats.mahalanobis(torch.zeros(1, 4))

        assert torch.isfinite(stats.precision).all()
        assert torch.isfinite(distance).all()
        assert float(stats.mahalanobis(torch.ones(1, 4))) == 0.0


def test_window_origins_cover_length():
    assert window_origins(100, 32, 16) == [0, 16, 32, 48, 64, 68]
    assert window_origins(64, 32, 16) == [0, 16, 32]
    assert window_origins(20, 32, 16) == [0]
    for length in range(32, 120, 7):
        origins = window_origins(length, 32, 12)
        assert origins[0] == 0
        assert origins[-1] == length - 32
        assert all(b - a <= 12 for a, b in itertools.pairwise(origins))


def test_smoothing_keeps_constant_maps_and_tiny_maps():
    constant = torch.full((1, 1, 20, 30), 0.25)

    torch.testing.assert_close(smooth_error_maps(constant, 2.0), constant)
    assert smooth_error_maps(torch.ones(1, 1, 1, 1), 2.0).shape == (1, 1, 1, 1)
    assert smooth_error_maps(constant, 0.0) is constant


def test_score_items_passes_every_outcome_through(tiny, input_zoo):
    items = list(iter_inputs([input_zoo]))
    reports = []
    outcomes = list(tiny.detector.score_items(items, progress=reports.append))
    scored = [o for o in outcomes if isinstance(o, ScoredFile)]
    rejected = [o for o in outcomes if isinstance(o, Rejected)]

    assert len(outcomes) == len(items)
    assert sum(isinstance(o, Ignored) for o in outcomes) == sum(
        isinstance(i, Ignored) for i in items
    )
    assert {o.relative_path for o in rejected} >= {"truncated.jpg", "text_as_image.png"}
    for outcome in scored:
        assert_finite(outcome.result)
    assert reports[-1].done == len(items)
    assert reports[-1].scored == len(scored)
    assert reports[-1].rejected == len(rejected)


def test_score_items_can_be_cancelled(tiny, input_zoo):
    with pytest.raises(TrainingCancelled):
        list(tiny.detector.score_items(iter_inputs([input_zoo]), should_cancel=lambda: True))


def test_exif_orientation_reaches_model_input(tiny):
    # One file stores the pixels rotated with an EXIF tag, the other stores
    # them upright: the model must see the same image.
    upright = np.kron(asymmetric_array(), np.ones((4, 4), dtype=np.uint8))
    stored = np.rot90(upright, k=1)  # orientation 6 turns this back by 90 degrees clockwise
    tagged_image = Image.fromarray(stored)
    uploads = [
        Upload("tagged.png", encode(tagged_image, "PNG", exif=with_orientation(tagged_image, 6))),
        Upload("upright.png", encode(Image.fromarray(upright), "PNG")),
    ]
    tagged, plain = tiny.detector.score_items(iter_inputs(uploads))

    assert tagged.image.pixels.shape == plain.image.pixels.shape
    np.testing.assert_array_equal(tagged.image.pixels, plain.image.pixels)
    np.testing.assert_array_equal(
        tagged.result.analysis.model_input, plain.result.analysis.model_input
    )
    assert tagged.result.combined == plain.result.combined


def test_decoded_size_is_original(tiny, png_bytes):
    (outcome,) = tiny.detector.score_items(iter_inputs([Upload("a.png", png_bytes)]))

    assert (outcome.image.height, outcome.image.width) == (IMAGE_HEIGHT, IMAGE_WIDTH)
