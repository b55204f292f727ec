"""Run a comparative study: DA-VAE against conventional detectors, ablations, imbalance.

:func:`run_study` trains and evaluates every method on one split of an
MVTec-style dataset (the protocol is in :mod:`davae.study_data`), writes the
results into a folder and returns them; :func:`davae.study_report.load_study`
reads such a folder back. Trained DA-VAE models are cached by configuration
and training images (:func:`davae.study_plan.config_key`), with their test
scores, so running a study again trains and scores only what changed. The
conventional detectors take seconds and are refitted on every run.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from davae.baselines import (
    BASELINE_NAMES,
    SUPERVISED_BASELINES,
    UNSUPERVISED_BASELINES,
    fit_baseline,
    fit_scaler,
)
from davae.bundle import load_bundle, save_bundle
from davae.config import DetectorConfig, InputLimits
from davae.dataset import MVTecDataset, open_mvtec
from davae.detector import choose_device
from davae.errors import DavaeError, TrainingCancelled
from davae.evaluation import score_test_set
from davae.study_data import StudyData, load_study_data
from davae.study_plan import StudySettings, config_key, plan_vae_rows
from davae.study_report import StudyResult, load_study, write_study
from davae.study_rows import build_result
from davae.training import TrainProgress, train_detector

logger = logging.getLogger(__name__)

# load_study is re-exported so that a page can import everything from here.
__all__ = ["MethodScores", "StudyResult", "load_study", "run_study"]

StudyProgress = Callable[[int, int, str], None]  # (step, total, message)
CancelCheck = Callable[[], bool]

_LOAD_STEPS = 1
_REPORT_STEPS = 1


@dataclass
class MethodScores:
    """Scores of one trained method on the evaluation set, with its threshold."""

    scores: np.ndarray  # one per evaluation image, higher = more anomalous
    threshold: float  # calibrated on held-out training normals; over it = anomalous
    train_seconds: float
    cached: bool  # True when this run trained nothing for it
    model_key: str = ""  # cache key of a DA-VAE model
    epochs_run: int | None = None


class _Tracker:
    """Turns work done into (step, total, message) reports and checks for cancellation."""

    def __init__(
        self, total: int, progress: StudyProgress | None, should_cancel: CancelCheck | None
    ):
        self.total = total
        self.step = 0
        self.progress = progress
        self.should_cancel = should_cancel

    def check_cancel(self) -> None:
        if self.should_cancel is not None and self.should_cancel():
            raise TrainingCancelled()

    def report(self, step: int, message: str) -> None:
        self.check_cancel()
        self.step = max(self.step, min(step, self.total))
        logger.info("step %d/%d: %s", self.step, self.total, message)
        if self.progress is not None:
            self.progress(self.step, self.total, message)


def run_study(
    dataset: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    settings: StudySettings | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    progress: StudyProgress | None = None,
    should_cancel: CancelCheck | None = None,
    limits: InputLimits | None = None,
) -> StudyResult:
    """Run the comparative study on an MVTec-style ``dataset`` and write it to ``out_dir``.

    ``cache_dir`` (default ``out_dir/cache``) keeps trained models as
    ``<key>.pt`` and their test scores beside them. ``progress`` receives
    ``(step, total, message)`` after each epoch and phase. ``should_cancel``
    is polled as often, and when it returns True the study raises
    TrainingCancelled and writes nothing, but the models trained so far stay
    in the cache. Raises DavaeError for an invalid dataset or invalid
    settings before any training starts.
    """
    settings = settings or StudySettings()
    settings.validate()
    started, started_at = time.perf_counter(), datetime.now(UTC)
    out_path = Path(out_dir)
    cache_path = Path(cache_dir) if cache_dir is not None else out_path / "cache"
    mvtec = open_mvtec(dataset)

    vae_rows = plan_vae_rows(settings)
    configs = _unique_configs([row.config for row in vae_rows])
    total = (
        _LOAD_STEPS
        + sum(config.train.epochs + 1 for config in configs.values())
        + len(BASELINE_NAMES)
        + _REPORT_STEPS
    )
    tracker = _Tracker(total, progress, should_cancel)
    tracker.report(0, f"loading images from {mvtec.root}")
    config = settings.config
    data = load_study_data(
        mvtec,
        config.vae.channels,
        config.train.val_fraction,
        config.train.seed,
        settings.labelled_defects_per_class,
        settings.baselines.feature_size,
        limits,
        should_cancel,
    )
    step = _LOAD_STEPS
    tracker.report(step, f"{len(data.evaluation)} test images to evaluate on")

    vae_scores: dict[str, MethodScores] = {}
    for number, (identity, vae_config) in enumerate(configs.items(), start=1):
        label = f"DA-VAE model {number}/{len(configs)}"
        vae_scores[identity] = _vae_scores(
            vae_config, data, cache_path, tracker, step, label, limits
        )
        step += vae_config.train.epochs + 1
        tracker.report(step, f"{label} scored")

    baseline_scores = _baseline_scores(data, settings, tracker, step)
    step += len(BASELINE_NAMES)

    tracker.report(step, "writing the report")
    result = build_result(
        out_path,
        settings,
        data,
        [(row, vae_scores[_identity(row.config)]) for row in vae_rows],
        baseline_scores,
        {
            "dataset": str(mvtec.root.resolve()),
            "cache_dir": str(cache_path),
            "started_at": started_at.isoformat(timespec="seconds"),
            "duration_s": time.perf_counter() - started,
        },
    )
    write_study(result)
    tracker.report(total, f"study written to {out_path}")
    return result


def _identity(config: DetectorConfig) -> str:
    return json.dumps(config.to_dict(), sort_keys=True, default=str)


def _unique_configs(configs: list[DetectorConfig]) -> dict[str, DetectorConfig]:
    unique: dict[str, DetectorConfig] = {}
    for config in configs:
        unique.setdefault(_identity(config), config)
    return unique


def _vae_scores(
    config: DetectorConfig,
    data: StudyData,
    cache_path: Path,
    tracker: _Tracker,
    first_step: int,
    label: str,
    limits: InputLimits | None,
) -> MethodScores:
    """Return a model's test scores from the cache, or train and score it and cache both."""
    key = config_key(config, data.train_fingerprint)
    bundle_path = cache_path / f"{key}.pt"
    scores_path = cache_path / f"{key}.scores-{data.evaluation_key()}.json"
    cached = _read_scores(scores_path, data)
    if cached is not None:
        logger.info("%s: model %s and its scores found in the cache", label, key)
        return cached

    detector, trained = None, False
    if bundle_path.is_file():
        try:
            detector = load_bundle(bundle_path, device=choose_device(config.train.device))
        except DavaeError as error:
            logger.warning("%s: cached model unusable, training again: %s", label, error)
    if detector is None:

        def on_train(report: TrainProgress) -> None:
            if report.phase == "training":
                message = f"training {label}: epoch {report.epoch}/{report.epochs}"
                tracker.report(first_step + report.epoch, message)

        tracker.report(first_step, f"training {label}")
        detector = train_detector(
            data.train_pixels,
            config,
            progress=on_train,
            should_cancel=tracker.should_cancel,
            fingerprint=data.train_fingerprint,
        )
        save_bundle(detector, bundle_path)
        trained = True

    tracker.report(first_step + config.train.epochs, f"scoring the test images with {label}")
    evaluation_set = MVTecDataset(data.dataset.root, data.dataset.train_good, data.evaluation)
    test_scores = score_test_set(
        detector,
        evaluation_set,
        limits,
        progress=lambda done, total: tracker.check_cancel(),
        with_pixels=False,
    )
    if [image.path for image in test_scores.images] != [image.path for image in data.evaluation]:
        raise DavaeError(
            "dataset_layout",
            f"{data.dataset.root}: test images changed while the study ran; run it again",
            path=str(data.dataset.root),
            detail="test images changed",
        )
    result = MethodScores(
        scores=np.asarray(test_scores.combined, dtype=np.float64),
        threshold=1.0,  # the combined score is 1.0 exactly at the calibrated decision boundary
        train_seconds=float(detector.metadata.get("train_seconds", 0.0)),
        cached=not trained,
        model_key=key,
        epochs_run=len(detector.history),
    )
    _write_scores(scores_path, data, result)
    return result


def _read_scores(path: Path, data: StudyData) -> MethodScores | None:
    """Return cached scores when they cover exactly this evaluation set, else None."""
    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        images = [data.relative_path(image) for image in data.evaluation]
        if stored["images"] != images or stored["sha256"] != data.evaluation_sha256:
            return None
        return MethodScores(
            scores=np.asarray(stored["scores"], dtype=np.float64),
            threshold=float(stored["threshold"]),
            train_seconds=float(stored["train_seconds"]),
            cached=True,
            model_key=str(stored["model_key"]),
            epochs_run=int(stored["epochs_run"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        logger.warning("ignoring unreadable score cache %s: %s", path, error)
        return None


def _write_scores(path: Path, data: StudyData, scores: MethodScores) -> None:
    payload = {
        "model_key": scores.model_key,
        "threshold": scores.threshold,
        "train_seconds": scores.train_seconds,
        "epochs_run": scores.epochs_run,
        "images": [data.relative_path(image) for image in data.evaluation],
        "sha256": data.evaluation_sha256,
        "scores": scores.scores.tolist(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(payload), encoding="utf-8")
    os.replace(temporary, path)


def _baseline_scores(
    data: StudyData, settings: StudySettings, tracker: _Tracker, first_step: int
) -> dict[str, MethodScores]:
    """Fit every conventional detector on standardised features; return their test scores.

    The random forest is left out, with a warning, when no defect class has
    the two images needed to label one and still evaluate on the other.
    """
    scaler = fit_scaler(data.train_features[data.fit_index])
    fit = scaler.transform(data.train_features[data.fit_index])
    calibration = scaler.transform(data.train_features[data.calibration_index])
    evaluation = scaler.transform(data.evaluation_features)
    target_fpr = settings.config.scoring.target_fpr
    seed = settings.config.train.seed
    results: dict[str, MethodScores] = {}
    for offset, name in enumerate(UNSUPERVISED_BASELINES + SUPERVISED_BASELINES):
        tracker.report(first_step + offset, f"fitting {name}")
        if name == "random_forest":
            if not data.labelled_defects:
                logger.warning("random forest left out: no defect class has 2 or more images")
                continue
            fitted = fit_baseline(
                name,
                scaler.transform(data.train_features[data.labelled_normal_index]),
                calibration,
                target_fpr,
                settings.baselines,
                labelled_defects=scaler.transform(data.labelled_defect_features),
                seed=seed,
            )
        else:
            fitted = fit_baseline(name, fit, calibration, target_fpr, settings.baselines, seed=seed)
        results[name] = MethodScores(
            scores=fitted.score(evaluation),
            threshold=fitted.threshold,
            train_seconds=fitted.fit_seconds,
            cached=False,
        )
    return results
