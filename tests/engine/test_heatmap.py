"""Heatmaps on the fixed calibration scale, overlays, and the stitched patch-mode map."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from engine_images import IMAGE_HEIGHT, IMAGE_WIDTH, normal_image, with_bright_square

from davae.calibration import HeatmapScale, heatmap_scale
from davae.heatmap import colorize, heatmap_image, normalized_map, overlay, resize_map
from davae.preprocess import prepare_scaled
from davae.scoring import analyze_large, smooth_error_maps, window_origins

SQUARE_TOP, SQUARE_LEFT, SQUARE_SIZE = 10, 14, 14


def alpha_at_original_size(detector, result, height=IMAGE_HEIGHT, width=IMAGE_WIDTH):
    full = resize_map(result.analysis.error_map, width, height)
    return np.asarray(colorize(full, detector.heatmap_scale))[..., 3]


def test_normal_image_heatmap_mostly_transparent(tiny):
    rng = np.random.default_rng(30)
    images = [normal_image(rng) for _ in range(6)]
    transparent = [
        float((alpha_at_original_size(tiny.detector, result) == 0).mean())
        for result in tiny.detector.score_pixels(images)
    ]

    assert np.median(transparent) >= 0.9
    assert min(transparent) >= 0.6


def test_bright_square_lights_up_where_it_is(tiny):
    rng = np.random.default_rng(31)
    clean = normal_image(rng)
    defective = with_bright_square(clean, SQUARE_TOP, SQUARE_LEFT, SQUARE_SIZE)
    clean_result, defect_result = tiny.detector.score_pixels([clean, defective])
    alpha = alpha_at_original_size(tiny.detector, defect_result)
    inside = np.zeros(alpha.shape, dtype=bool)
    inside[SQUARE_TOP : SQUARE_TOP + SQUARE_SIZE, SQUARE_LEFT : SQUARE_LEFT + SQUARE_SIZE] = True

    assert alpha[inside].mean() > 100
    assert alpha[inside].mean() > 3 * alpha[~inside].mean()
    assert alpha_at_original_size(tiny.detector, clean_result)[inside].mean() < 50
    assert defect_result.combined > clean_result.combined
    assert defect_result.anomalous


def test_scale_is_fixed_not_per_image():
    scale = HeatmapScale(low=0.1, high=0.5)
    quiet = np.full((8, 8), 0.05, dtype=np.float32)
    quiet[4, 4] = 0.09  # the maximum of this map, still below low
    loud = quiet * 5

    assert np.asarray(colorize(quiet, scale))[..., 3].max() == 0
    assert np.asarray(colorize(loud, scale))[..., 3].max() > 0
    assert not np.array_equal(
        np.asarray(colorize(loud, scale)), np.asarray(colorize(loud * 2, scale))
    )


def test_normalized_map_spans_low_to_high():
    scale = HeatmapScale(low=0.2, high=0.6)
    values = normalized_map(np.array([[0.0, 0.2, 0.4, 0.6, 5.0]]), scale)

    np.testing.assert_allclose(values, [[0.0, 0.0, 0.5, 1.0, 1.0]], atol=1e-6)


def test_heatmap_scale_from_calibration_maps():
    rng = np.random.default_rng(0)
    maps = [rng.random((16, 16)).astype(np.float32) * 0.1 for _ in range(5)]
    scale = heatmap_scale(maps, recon_threshold_max=0.3)

    assert 0.0 < scale.low < 0.1
    assert scale.high == pytest.approx(0.3)


def test_heatmap_scale_positive_span_for_zero_maps():
    scale = heatmap_scale([np.zeros((4, 4))], recon_threshold_max=0.0)

    assert scale.high > scale.low


def test_overlay_has_original_size(tiny):
    pixels = normal_image(np.random.default_rng(32), 50, 90)
    (result,) = tiny.detector.score_pixels([pixels])
    full = overlay(pixels, result.analysis.error_map, tiny.detector.heatmap_scale)
    thumb = overlay(pixels, result.analysis.error_map, tiny.detector.heatmap_scale, max_side=45)

    assert result.analysis.error_map.shape == (32, 32)
    assert full.size == (90, 50)
    assert full.mode == "RGB"
    assert thumb.size == (45, 25)


def test_overlay_leaves_clean_pixels_unchanged():
    pixels = np.full((10, 12, 1), 0.4, dtype=np.float32)
    error_map = np.zeros((10, 12), dtype=np.float32)
    image = np.asarray(overlay(pixels, error_map, HeatmapScale(0.1, 0.5)))

    assert (image == round(0.4 * 255)).all()


def test_heatmap_image_size():
    image = heatmap_image(np.zeros((32, 32)), 70, 30, HeatmapScale(0.1, 0.5))

    assert image.size == (70, 30)
    assert np.asarray(image).max() == 0


def test_resize_map_keeps_constant_values():
    resized = resize_map(np.full((32, 32), 0.3), 48, 40)

    assert resized.shape == (40, 48)
    np.testing.assert_allclose(resized, 0.3, rtol=1e-6)


def test_patch_map_has_scaled_image_shape(tiny_patch, normal_images):
    (large,) = normal_images(1, seed=40, height=100, width=130)
    (result,) = tiny_patch.detector.score_pixels([large])

    assert result.analysis.error_map.shape == (100, 130)
    assert result.analysis.reconstruction.shape == (100, 130, 1)
    assert np.isfinite(result.analysis.error_map).all()


def test_patch_scale_shrinks_map(tiny_patch, normal_images):
    (large,) = normal_images(1, seed=41, height=100, width=130)
    detector = tiny_patch.detector
    halved = dataclasses.replace(detector, config=detector.config.replace(train__patch_scale=0.5))
    (result,) = halved.score_pixels([large])

    assert result.analysis.error_map.shape == (50, 65)


def test_patch_map_smaller_than_window_keeps_image_shape(tiny_patch, normal_images):
    # Images smaller than one window are padded for the model; the map and
    # the scores must cover the image only.
    (small,) = normal_images(1, seed=42, height=20, width=100)
    (result,) = tiny_patch.detector.score_pixels([small])

    assert result.analysis.error_map.shape == (20, 100)
    assert result.analysis.reconstruction.shape == (20, 100, 1)
    assert result.raw.recon_max == pytest.approx(float(result.analysis.error_map.max()))


def test_patch_map_is_average_of_windows(tiny_patch, normal_images):
    (large,) = normal_images(1, seed=43, height=64, width=80)
    detector = tiny_patch.detector
    model, size = detector.model, detector.config.vae.image_size
    image = prepare_scaled(large, detector.config)
    stride, sigma = 16, detector.config.scoring.smoothing_sigma
    stitched = analyze_large(model, image, stride, sigma, batch_size=5)

    total, count = torch.zeros(64, 80), torch.zeros(64, 80)
    with torch.inference_mode():
        for top in window_origins(64, size, stride):
            for left in window_origins(80, size, stride):
                window = image[None, :, top : top + size, left : left + size]
                error = (model.decode(model.encode(window)[0]) - window).pow(2).mean(dim=1)[0]
                total[top : top + size, left : left + size] += error
                count[top : top + size, left : left + size] += 1
    expected = smooth_error_maps((total / count)[None, None], sigma)[0, 0]

    assert count.min() >= 1
    torch.testing.assert_close(stitched.error_map, expected, rtol=1e-4, atol=1e-7)
    assert stitched.window_latents.shape == (len(window_origins(64, size, stride)) * 4, 8)


def test_patch_map_has_no_seams(tiny_patch, normal_images):
    images = normal_images(3, seed=44, height=64, width=112)
    size, stride = 32, 16
    boundaries = sorted(
        {origin + size for origin in window_origins(112, size, stride)} | set(range(16, 112, 16))
    )
    for result in tiny_patch.detector.score_pixels(images):
        steps = np.abs(np.diff(result.analysis.error_map, axis=1)).mean(axis=0)  # (W - 1,)
        at_boundary = steps[[b - 1 for b in boundaries if b < 112]]
        elsewhere = np.delete(steps, [b - 1 for b in boundaries if b < 112])

        assert at_boundary.max() <= elsewhere.max()
