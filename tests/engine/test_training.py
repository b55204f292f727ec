"""Training: minimum data, split, seed, progress, cancellation, early stopping, devices."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from engine_images import tiny_config

import davae.training as training
from davae.config import MIN_TRAINING_IMAGES
from davae.detector import choose_device
from davae.errors import DavaeError, TrainingCancelled
from davae.training import _epoch_batches, split_train_validation, train_detector

# One epoch without augmentation: the fastest real training run.
QUICK = {"train__epochs": 1, "augment__iterations": 0}


def state_dicts_equal(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_too_few_images_rejected_before_training(normal_images):
    calls = []
    with pytest.raises(DavaeError) as caught:
        train_detector(normal_images(MIN_TRAINING_IMAGES - 1), tiny_config(), progress=calls.append)

    assert caught.value.code == "too_few_images"
    assert caught.value.params == {"count": MIN_TRAINING_IMAGES - 1, "minimum": MIN_TRAINING_IMAGES}
    assert calls == []


def test_no_images_rejected():
    with pytest.raises(DavaeError) as caught:
        train_detector([], tiny_config())

    assert caught.value.code == "too_few_images"


def test_minimum_image_count_trains(normal_images):
    detector = train_detector(normal_images(MIN_TRAINING_IMAGES), tiny_config(**QUICK))

    assert detector.metadata["train_count"] + detector.metadata["val_count"] == MIN_TRAINING_IMAGES
    assert all(math.isfinite(v) for v in detector.history[0].values())


def test_last_batch_of_one_trains(normal_images):
    config = tiny_config(train__batch_size=9, **QUICK)
    train_index, _ = split_train_validation(12, config.train.val_fraction, config.train.seed)
    base = torch.zeros(len(train_index), 1, 4, 4)
    sizes = [len(b) for b in _epoch_batches(base, config, None, torch.Generator())]
    detector = train_detector(normal_images(12), config)

    assert sizes == [9, 1]
    assert math.isfinite(detector.history[0]["train_loss"])


def test_split_is_disjoint_and_seeded():
    train_a, val_a = split_train_validation(50, 0.2, seed=3)
    train_b, val_b = split_train_validation(50, 0.2, seed=3)
    _, val_c = split_train_validation(50, 0.2, seed=4)

    assert set(train_a).isdisjoint(val_a)
    assert sorted(train_a + val_a) == list(range(50))
    assert len(val_a) == 10
    assert (train_a, val_a) == (train_b, val_b)
    assert val_c != val_a


def test_split_holds_out_at_least_two():
    _, validation = split_train_validation(MIN_TRAINING_IMAGES, 0.05, seed=0)

    assert len(validation) == 2


def test_calibration_uses_held_out_images(tiny):
    detector = tiny.detector
    _, val_index = split_train_validation(
        len(tiny.train_images), detector.config.train.val_fraction, detector.config.train.seed
    )
    held_out = detector.score_pixels([tiny.train_images[i] for i in val_index])

    assert detector.metadata["val_count"] == len(val_index)
    np.testing.assert_allclose(
        np.sort(detector.calibration["recon_max"]),
        np.sort([r.raw.recon_max for r in held_out]),
        rtol=1e-5,
    )


def test_seed_repeats_exactly(normal_images):
    images = normal_images(12, seed=1)
    config = tiny_config(train__epochs=1, augment__iterations=1, train__seed=7)
    first = train_detector(images, config)
    second = train_detector(images, config)
    other = train_detector(images, tiny_config(train__epochs=1, augment__iterations=1))

    assert state_dicts_equal(first.model.state_dict(), second.model.state_dict())
    assert not state_dicts_equal(first.model.state_dict(), other.model.state_dict())
    probe = normal_images(3, seed=99)
    scores_first = [r.combined for r in first.score_pixels(probe)]
    scores_second = [r.combined for r in second.score_pixels(probe)]
    assert scores_first == scores_second
    assert first.thresholds == second.thresholds


def test_progress_reports_phases_epochs_and_eta(tiny):
    reports = tiny.progress
    epochs = tiny.detector.config.train.epochs
    training_reports = [r for r in reports if r.phase == "training"]

    assert [r.phase for r in reports] == ["preparing"] + ["training"] * epochs + [
        "calibrating",
        "done",
    ]
    assert [r.epoch for r in training_reports] == list(range(1, epochs + 1))
    assert all(r.epochs == epochs for r in reports)
    for report in training_reports:
        assert math.isfinite(report.train_loss)
        assert math.isfinite(report.val_loss)
        assert report.eta_s >= 0
        assert report.images_per_second > 0
    assert training_reports[0].eta_s > 0
    assert training_reports[-1].eta_s == 0


def test_history_records_each_epoch(tiny):
    history = tiny.detector.history

    assert [entry["epoch"] for entry in history] == [1.0, 2.0]
    for entry in history:
        assert set(entry) >= {"train_loss", "val_loss", "recon", "kl", "elapsed_s"}
        assert all(math.isfinite(value) for value in entry.values())


def test_augmentation_iterations_multiply_samples(normal_images, monkeypatch):
    seen: list[int] = []

    def counting(base, config, transform, generator):
        for batch in _epoch_batches(base, config, transform, generator):
            seen.append(batch.shape[0])
            yield batch

    monkeypatch.setattr(training, "_epoch_batches", counting)
    config = tiny_config(train__epochs=1, augment__iterations=2)
    detector = train_detector(normal_images(12), config)

    assert sum(seen) == detector.metadata["train_count"] * 3


def test_cancel_raises_training_cancelled(normal_images):
    checks = []

    def should_cancel() -> bool:
        checks.append(1)
        return len(checks) >= 2

    with pytest.raises(TrainingCancelled) as caught:
        train_detector(normal_images(12), tiny_config(), should_cancel=should_cancel)

    assert caught.value.code == "cancelled"
    assert len(checks) == 2


def test_early_stopping_keeps_best_epoch(normal_images, monkeypatch):
    # Validation loss only rises after epoch 1, so training stops after
    # 1 + patience epochs and restores the weights of epoch 1.
    snapshots: list[dict] = []

    def rising_loss(model, samples, config, device):
        snapshots.append(copy.deepcopy(model.state_dict()))
        return float(len(snapshots))

    monkeypatch.setattr(training, "_validation_loss", rising_loss)
    config = tiny_config(train__epochs=10, train__patience=2, augment__iterations=0)
    detector = train_detector(normal_images(12), config)

    assert len(detector.history) == 3
    assert state_dicts_equal(detector.model.state_dict(), snapshots[0])
    assert not state_dicts_equal(snapshots[0], snapshots[-1])


def test_three_channel_training(normal_images):
    images = [np.repeat(image, 3, axis=2) for image in normal_images(12)]
    detector = train_detector(images, tiny_config(vae__channels=3, **QUICK))
    (result,) = detector.score_pixels(images[:1])

    assert result.analysis.model_input.shape == (32, 32, 3)
    assert math.isfinite(result.combined)


def test_channel_mismatch_rejected(normal_images):
    images = [np.repeat(image, 3, axis=2) for image in normal_images(12)]

    with pytest.raises(DavaeError) as caught:
        train_detector(images, tiny_config(**QUICK))

    assert "image 0" in str(caught.value)


def test_invalid_setting_rejected_before_training(normal_images):
    with pytest.raises(DavaeError) as caught:
        train_detector(normal_images(12), tiny_config(train__epochs=0))

    assert caught.value.code == "invalid_setting"
    assert caught.value.params["setting"] == "epochs"


def test_auto_device_matches_availability():
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert choose_device("auto").type == expected
    assert choose_device("cpu").type == "cpu"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_request_without_gpu_rejected():
    with pytest.raises(DavaeError) as caught:
        choose_device("cuda")

    assert caught.value.code == "invalid_setting"
    assert caught.value.params["setting"] == "device"
