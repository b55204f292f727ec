"""Training a detector on normal images: split, augment, fit, calibrate."""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from davae.augment import augment_batch, build_augmentation
from davae.calibration import HeatmapScale, Thresholds, calibrate_thresholds, heatmap_scale
from davae.config import MIN_TRAINING_IMAGES, DetectorConfig
from davae.detector import Detector, choose_device
from davae.errors import DavaeError, TrainingCancelled
from davae.model import ConvVAE, vae_loss
from davae.multiscale import MAX_FEATURE_FIT_IMAGES, ErrorStats, FeatureStats
from davae.preprocess import prepare
from davae.scoring import LatentStats, analyze_batch, window_origins

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainProgress:
    """One progress report, sent after each epoch and at each phase change."""

    phase: str  # "preparing", "training", "calibrating" or "done"
    epoch: int
    epochs: int
    train_loss: float = math.nan
    val_loss: float = math.nan
    recon: float = math.nan
    kl: float = math.nan
    elapsed_s: float = 0.0
    eta_s: float = math.nan  # estimated seconds left, from the mean epoch time so far
    images_per_second: float = math.nan


ProgressCallback = Callable[[TrainProgress], None]
CancelCheck = Callable[[], bool]


def split_train_validation(
    count: int, val_fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Shuffle indices with ``seed`` and hold out ``val_fraction`` of them, at least 2."""
    if count < MIN_TRAINING_IMAGES:
        raise DavaeError(
            "too_few_images",
            f"{count} usable normal images; training needs at least {MIN_TRAINING_IMAGES}",
            count=count,
            minimum=MIN_TRAINING_IMAGES,
        )
    order = np.random.default_rng(seed).permutation(count)
    val_count = max(2, round(val_fraction * count))
    return sorted(order[val_count:].tolist()), sorted(order[:val_count].tolist())


class _SampleSource:
    """Model-input samples for one split: whole images, or crops in patch mode."""

    def __init__(self, tensors: list[torch.Tensor], config: DetectorConfig) -> None:
        self.config = config
        self.patch_mode = config.train.mode == "patch"
        self.size = config.vae.image_size
        self.tensors = tensors if self.patch_mode else [torch.stack(tensors)]

    def random_samples(self, generator: torch.Generator) -> torch.Tensor:
        """The base samples of one epoch, shape (M, C, S, S)."""
        if not self.patch_mode:
            return self.tensors[0]
        crops = []
        for image in self.tensors:
            height, width = image.shape[-2:]
            for _ in range(self.config.train.patches_per_image):
                top = int(torch.randint(0, height - self.size + 1, (1,), generator=generator))
                left = int(torch.randint(0, width - self.size + 1, (1,), generator=generator))
                crops.append(image[:, top : top + self.size, left : left + self.size])
        return torch.stack(crops)

    def fixed_samples(self, limit: int = 2048) -> torch.Tensor:
        """Deterministic samples for the validation loss and latent statistics."""
        if not self.patch_mode:
            return self.tensors[0]
        stride = max(1, round(self.size * self.config.scoring.patch_stride_fraction))
        windows = []
        for image in self.tensors:
            height, width = image.shape[-2:]
            for top in window_origins(height, self.size, stride):
                for left in window_origins(width, self.size, stride):
                    windows.append(image[:, top : top + self.size, left : left + self.size])
        if len(windows) > limit:
            keep = np.linspace(0, len(windows) - 1, limit).round().astype(int)
            windows = [windows[i] for i in keep]
        return torch.stack(windows)


def _epoch_batches(base: torch.Tensor, config: DetectorConfig, transform, generator):
    """Yield the shuffled mini-batches of one epoch: originals plus K augmented copies."""
    copies = [base] + [augment_batch(base, transform) for _ in range(config.augment.iterations)]
    samples = torch.cat(copies) if len(copies) > 1 else base
    order = torch.randperm(samples.shape[0], generator=generator)
    for start in range(0, samples.shape[0], config.train.batch_size):
        yield samples[order[start : start + config.train.batch_size]]


@torch.inference_mode()
def _validation_loss(
    model: ConvVAE, samples: torch.Tensor, config: DetectorConfig, device
) -> float:
    model.eval()
    total, count = 0.0, 0
    for start in range(0, samples.shape[0], config.scoring.batch_size):
        batch = samples[start : start + config.scoring.batch_size].to(device)
        mu, logvar = model.encode(batch)
        loss, _, _ = vae_loss(
            batch, model.decode(mu), mu, logvar, config.train.recon_sigma, config.train.beta
        )
        total += float(loss) * batch.shape[0]
        count += batch.shape[0]
    return total / max(count, 1)


def fit_model(
    train: _SampleSource,
    validation: _SampleSource,
    config: DetectorConfig,
    device: torch.device,
    progress: ProgressCallback | None,
    should_cancel: CancelCheck | None,
) -> tuple[ConvVAE, list[dict[str, float]]]:
    """Fit the VAE with Adam and early stopping; return the best model and the history."""
    torch.manual_seed(config.train.seed)
    generator = torch.Generator().manual_seed(config.train.seed)
    model = ConvVAE(config.vae).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.train.learning_rate)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.train.epochs)
    transform = build_augmentation(config.augment) if config.augment.iterations > 0 else None
    val_samples = validation.fixed_samples()

    history: list[dict[str, float]] = []
    best_loss, best_state, stale_epochs = math.inf, None, 0
    start = time.perf_counter()
    for epoch in range(1, config.train.epochs + 1):
        model.train()
        sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0}
        seen = 0
        base = train.random_samples(generator)
        for batch in _epoch_batches(base, config, transform, generator):
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled()
            batch = batch.to(device)
            reconstruction, mu, logvar = model(batch)
            loss, recon, kl = vae_loss(
                batch, reconstruction, mu, logvar, config.train.recon_sigma, config.train.beta
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
            optimizer.step()
            size = batch.shape[0]
            sums["loss"] += loss.item() * size
            sums["recon"] += recon.item() * size
            sums["kl"] += kl.item() * size
            seen += size
        scheduler.step()

        val_loss = _validation_loss(model, val_samples, config, device)
        elapsed = time.perf_counter() - start
        entry = {
            "epoch": float(epoch),
            "train_loss": sums["loss"] / seen,
            "recon": sums["recon"] / seen,
            "kl": sums["kl"] / seen,
            "val_loss": val_loss,
            "elapsed_s": elapsed,
        }
        history.append(entry)
        if not math.isfinite(entry["train_loss"]):
            raise DavaeError(
                "invalid_setting",
                f"training diverged at epoch {epoch} (loss {entry['train_loss']}); "
                "lower the learning rate",
                setting="learning_rate",
                value=config.train.learning_rate,
                expected="a smaller value",
            )
        if val_loss < best_loss:
            best_loss, best_state, stale_epochs = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            stale_epochs += 1
        if progress is not None:
            progress(
                TrainProgress(
                    phase="training",
                    epoch=epoch,
                    epochs=config.train.epochs,
                    train_loss=entry["train_loss"],
                    val_loss=val_loss,
                    recon=entry["recon"],
                    kl=entry["kl"],
                    elapsed_s=elapsed,
                    eta_s=elapsed / epoch * (config.train.epochs - epoch),
                    images_per_second=seen * epoch / elapsed if elapsed > 0 else math.nan,
                )
            )
        logger.info(
            "epoch %d/%d train %.2f val %.2f",
            epoch,
            config.train.epochs,
            entry["train_loss"],
            val_loss,
        )
        if stale_epochs >= config.train.patience:
            logger.info(
                "early stop after epoch %d: no better validation loss in %d epochs",
                epoch,
                stale_epochs,
            )
            break

    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, history


def train_detector(
    images: list[np.ndarray],
    config: DetectorConfig | None = None,
    progress: ProgressCallback | None = None,
    should_cancel: CancelCheck | None = None,
    fingerprint: dict | None = None,
) -> Detector:
    """Train a detector on decoded normal images (H, W, C) in [0, 1].

    A held-out validation split is never trained on: it drives early stopping
    and calibrates the thresholds and the heatmap scale. Raises DavaeError
    before any training if the settings are invalid or there are too few images.
    """
    config = (config or DetectorConfig()).effective()
    config.validate()
    for index, pixels in enumerate(images):
        if pixels.ndim != 3 or pixels.shape[2] != config.vae.channels:
            raise DavaeError(
                "bundle_mismatch",
                f"image {index} has shape {pixels.shape}; expected (H, W, {config.vae.channels})",
                detail=f"image shape {pixels.shape}",
            )
    train_index, val_index = split_train_validation(
        len(images), config.train.val_fraction, config.train.seed
    )
    device = choose_device(config.train.device)
    started = time.perf_counter()
    if progress is not None:
        progress(TrainProgress("preparing", 0, config.train.epochs))
    logger.info("preparing %d training and %d validation images", len(train_index), len(val_index))
    tensors = [prepare(pixels, config) for pixels in images]
    train = _SampleSource([tensors[i] for i in train_index], config)
    validation = _SampleSource([tensors[i] for i in val_index], config)

    model, history = fit_model(train, validation, config, device, progress, should_cancel)

    if progress is not None:
        progress(
            TrainProgress(
                "calibrating",
                len(history),
                config.train.epochs,
                elapsed_s=time.perf_counter() - started,
            )
        )
    logger.info("calibrating thresholds on %d held-out images", len(val_index))
    stats, error_stats, feature_stats = fit_normal_statistics(model, train, config, device)
    detector = Detector(
        model=model,
        config=config,
        stats=stats,
        error_stats=error_stats,
        feature_stats=feature_stats,
        # Placeholders until calibrate() below replaces them from held-out images.
        thresholds=Thresholds(
            1.0,
            1.0,
            config.scoring.recon_reduction,
            config.scoring.latent_metric,
            config.scoring.target_fpr,
        ),
        heatmap_scale=HeatmapScale(0.0, 1.0),
        calibration={},
        history=history,
        fingerprint=dict(fingerprint or {}),
        metadata={
            "train_count": len(train_index),
            "val_count": len(val_index),
            "train_seconds": time.perf_counter() - started,
        },
    )
    calibrate(detector, [images[i] for i in val_index])
    detector.metadata["train_seconds"] = time.perf_counter() - started
    if progress is not None:
        progress(
            TrainProgress(
                "done",
                len(history),
                config.train.epochs,
                elapsed_s=detector.metadata["train_seconds"],
            )
        )
    return detector


@torch.inference_mode()
def fit_normal_statistics(
    model: ConvVAE, train: _SampleSource, config: DetectorConfig, device: torch.device
) -> tuple[LatentStats, ErrorStats | None, FeatureStats | None]:
    """Fit what scores are measured against, on the (unaugmented) training images.

    Returns the latent-vector statistics, and per the scoring configuration the
    per-pixel error statistics and the multi-scale feature statistics.
    """
    scoring = config.scoring
    samples = train.fixed_samples(limit=20_000)
    latents, error_maps, features = [], [], []
    feature_stages = scoring.multiscale_stages if scoring.uses_features else None
    feature_limit = min(samples.shape[0], MAX_FEATURE_FIT_IMAGES)
    for start in range(0, samples.shape[0], scoring.batch_size):
        batch = samples[start : start + scoring.batch_size].to(device)
        want_features = feature_stages is not None and start < feature_limit
        out = analyze_batch(
            model,
            batch,
            scoring.smoothing_sigma,
            feature_stages if want_features else None,
            scoring.multiscale_grid,
        )
        latents.append(out.latents.float().cpu())
        if scoring.error_normalization == "pixel":
            error_maps.append(out.error_maps.float().cpu())
        if out.features is not None:
            features.append(out.features.float().cpu())

    stats = LatentStats.fit(torch.cat(latents).numpy())
    error_stats = ErrorStats.fit(torch.cat(error_maps)) if error_maps else None
    feature_stats = None
    if features:
        logger.info("fitting multi-scale statistics on %d images", feature_limit)
        stacked = torch.cat(features)[:feature_limit].numpy()
        feature_stats = FeatureStats.fit(stacked, tuple(scoring.multiscale_stages))
    return stats, error_stats, feature_stats


def calibrate(detector: Detector, normal_images: list[np.ndarray]) -> None:
    """Set thresholds, heatmap scale and calibration scores from held-out normals."""
    analyses = detector.analyze(normal_images)
    calibration = {
        name: np.array([getattr(a.raw, name) for a in analyses], dtype=np.float64)
        for name in detector.score_names
    }
    scoring = detector.config.scoring
    thresholds = calibrate_thresholds(
        calibration[f"recon_{scoring.recon_reduction}"],
        calibration[f"latent_{scoring.latent_metric}"],
        scoring.target_fpr,
        scoring.recon_reduction,
        scoring.latent_metric,
    )
    max_quantile = 1.0 - scoring.target_fpr / 2.0
    recon_max_threshold = float(np.quantile(calibration["recon_max"], max_quantile))
    detector.calibration = calibration
    detector.thresholds = thresholds
    detector.heatmap_scale = heatmap_scale([a.error_map for a in analyses], recon_max_threshold)
