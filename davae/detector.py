"""A trained detector: the VAE with its latent statistics, thresholds and heatmap scale."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from davae.calibration import HeatmapScale, Thresholds
from davae.config import DetectorConfig, InputLimits
from davae.errors import DavaeError, TrainingCancelled
from davae.imageio import DecodedImage, decode_image
from davae.inputs import Ignored, InputFile, Rejected
from davae.model import ConvVAE
from davae.multiscale import ErrorStats, FeatureStats
from davae.preprocess import prepare
from davae.scoring import LatentStats, RawScores, analyze_batch, analyze_large, raw_scores

logger = logging.getLogger(__name__)

# Names of the raw scores kept for each held-out calibration image.
RAW_SCORE_NAMES = (
    "recon_mean",
    "recon_max",
    "latent_euclidean",
    "latent_mahalanobis",
    "latent_multiscale",
)


@dataclass
class Analysis:
    """What the model saw and produced for one image, before thresholds."""

    raw: RawScores
    error_map: np.ndarray  # (h, w) smoothed squared error in model-input space
    reconstruction: np.ndarray  # (h, w, C) in [0, 1], model-input space
    model_input: np.ndarray  # (h, w, C) in [0, 1]
    distance_map: np.ndarray | None = None  # (G, G) multi-scale latent distances, if fitted


@dataclass
class ImageResult:
    """Scores and decision for one image."""

    raw: RawScores
    recon_score: float  # the configured reduction of the error map
    latent_score: float  # the configured latent distance
    combined: float  # max(recon / t_recon, latent / t_latent)
    anomalous: bool
    analysis: Analysis = field(repr=False)


@dataclass
class ScoredFile:
    """An input file that decoded and was scored."""

    file: InputFile
    image: DecodedImage = field(repr=False)
    result: ImageResult

    @property
    def relative_path(self) -> str:
        return self.file.relative_path


@dataclass(frozen=True)
class ScoringProgress:
    done: int  # files handled so far, rejected ones included
    scored: int
    rejected: int
    elapsed_s: float

    @property
    def images_per_second(self) -> float:
        return self.scored / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Detector:
    """Everything needed to score an image, as saved in a model bundle."""

    model: ConvVAE
    config: DetectorConfig
    stats: LatentStats
    thresholds: Thresholds
    heatmap_scale: HeatmapScale
    calibration: dict[str, np.ndarray]  # held-out normal scores, by RAW_SCORE_NAMES
    history: list[dict[str, float]] = field(default_factory=list)
    fingerprint: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    error_stats: ErrorStats | None = None  # per-pixel error normalisation, if configured
    feature_stats: FeatureStats | None = None  # multi-scale latent statistics, if configured

    def __post_init__(self) -> None:
        # Channels-last weights let oneDNN pick faster convolution kernels. On 2
        # CPU threads the default model scored 17-44 % more images per CPU-second
        # in A/B runs of benchmarks/bench_engine.py. Scores change by about 1e-6.
        self.model.to(memory_format=torch.channels_last)

    @property
    def score_names(self) -> tuple[str, ...]:
        """The raw scores this detector computes (multi-scale only with its statistics)."""
        if self.feature_stats is None:
            return tuple(name for name in RAW_SCORE_NAMES if name != "latent_multiscale")
        return RAW_SCORE_NAMES

    @property
    def channels(self) -> int:
        return self.config.vae.channels

    def with_thresholds(self, recon: float, latent: float) -> Detector:
        """A copy deciding with other thresholds; the scores do not change."""
        if recon <= 0 or latent <= 0:
            raise DavaeError(
                "invalid_setting",
                f"thresholds must be positive, got recon={recon}, latent={latent}",
                setting="thresholds",
                value=f"{recon}, {latent}",
                expected="positive numbers",
            )
        thresholds = dataclasses.replace(self.thresholds, recon=recon, latent=latent)
        return dataclasses.replace(self, thresholds=thresholds)

    # -- analysis --------------------------------------------------------------

    def analyze(self, images: list[np.ndarray]) -> list[Analysis]:
        """Run decoded (H, W, C) images through the model; no thresholds applied."""
        device = next(self.model.parameters()).device
        sigma = self.config.scoring.smoothing_sigma
        tensors = [prepare(pixels, self.config) for pixels in images]
        if self.config.train.mode == "patch":
            stride = max(
                1, round(self.config.vae.image_size * self.config.scoring.patch_stride_fraction)
            )
            scale = self.config.train.patch_scale
            analyses = []
            for pixels, tensor in zip(images, tensors, strict=True):
                large = analyze_large(
                    self.model, tensor.to(device), stride, sigma, self.config.scoring.batch_size
                )
                # prepare_scaled pads an image smaller than one window up to the
                # window size, so crop back: the map and the scores cover the image only.
                height = min(tensor.shape[-2], max(1, round(pixels.shape[0] * scale)))
                width = min(tensor.shape[-1], max(1, round(pixels.shape[1] * scale)))
                analyses.append(
                    self._to_analysis(
                        large.error_map[:height, :width],
                        large.window_latents,
                        large.reconstruction[:, :height, :width],
                        tensor[:, :height, :width],
                    )
                )
            return analyses

        analyses = []
        batch_size = self.config.scoring.batch_size
        for start in range(0, len(tensors), batch_size):
            batch = torch.stack(tensors[start : start + batch_size]).to(device)
            analyses.extend(self.analyze_tensors(batch))
        return analyses

    def analyze_tensors(self, batch: torch.Tensor) -> list[Analysis]:
        """Run a (N, C, S, S) batch of whole-image model inputs through the model."""
        feature_stats = self.feature_stats
        out = analyze_batch(
            self.model,
            batch,
            self.config.scoring.smoothing_sigma,
            feature_stats.stages if feature_stats else None,
            feature_stats.grid if feature_stats else 16,
        )
        error_maps = out.error_maps.float().cpu()
        if self.error_stats is not None:
            error_maps = self.error_stats.normalize(error_maps)
        distance_maps = None
        if feature_stats is not None and out.features is not None:
            distance_maps = feature_stats.distance_maps(out.features.float().cpu())
        return [
            self._to_analysis(
                error_maps[i],
                out.latents[i : i + 1],
                out.reconstructions[i],
                batch[i],
                None if distance_maps is None else distance_maps[i],
            )
            for i in range(batch.shape[0])
        ]

    def _to_analysis(
        self,
        error_map: torch.Tensor,
        latents: torch.Tensor,
        recon: torch.Tensor,
        model_input: torch.Tensor,
        distance_map: torch.Tensor | None = None,
    ) -> Analysis:
        error_map, latents = error_map.float().cpu(), latents.float().cpu()
        return Analysis(
            raw=raw_scores(error_map, latents, self.stats, distance_map),
            error_map=error_map.numpy(),
            reconstruction=recon.float().cpu().permute(1, 2, 0).numpy(),
            model_input=model_input.float().cpu().permute(1, 2, 0).numpy(),
            distance_map=None if distance_map is None else distance_map.numpy(),
        )

    def decide(self, analysis: Analysis) -> ImageResult:
        """Apply the thresholds to one analysis."""
        recon = analysis.raw.recon(self.thresholds.recon_reduction)
        latent = analysis.raw.latent(self.thresholds.latent_metric)
        return ImageResult(
            raw=analysis.raw,
            recon_score=recon,
            latent_score=latent,
            combined=self.thresholds.combined(recon, latent),
            anomalous=self.thresholds.is_anomalous(recon, latent),
            analysis=analysis,
        )

    def score_pixels(self, images: list[np.ndarray]) -> list[ImageResult]:
        """Score decoded (H, W, C) images."""
        return [self.decide(analysis) for analysis in self.analyze(images)]

    # -- files -----------------------------------------------------------------

    def score_items(
        self,
        items: Iterable[InputFile | Rejected | Ignored],
        limits: InputLimits | None = None,
        progress: Callable[[ScoringProgress], None] | None = None,
        should_cancel: Callable[[], bool] | None = None,
    ) -> Iterator[ScoredFile | Rejected | Ignored]:
        """Decode and score input items in mini-batches, yielding each outcome.

        Rejected and ignored items pass through; a file that fails to decode
        becomes a Rejected and the batch goes on. Only one mini-batch of
        decoded images is held in memory at a time.
        """
        limits = limits or InputLimits()
        batch_size = self.config.scoring.batch_size
        pending: list[tuple[InputFile, DecodedImage]] = []
        start = time.perf_counter()
        counts = {"done": 0, "scored": 0, "rejected": 0}

        def report() -> None:
            if progress is not None:
                progress(
                    ScoringProgress(
                        counts["done"],
                        counts["scored"],
                        counts["rejected"],
                        time.perf_counter() - start,
                    )
                )

        def flush() -> Iterator[ScoredFile]:
            results = self.score_pixels([image.pixels for _, image in pending])
            for (file, image), result in zip(pending, results, strict=True):
                counts["done"] += 1
                counts["scored"] += 1
                yield ScoredFile(file, image, result)
            pending.clear()
            report()

        for item in items:
            if should_cancel is not None and should_cancel():
                raise TrainingCancelled()
            if not isinstance(item, InputFile):
                counts["done"] += 1
                counts["rejected"] += isinstance(item, Rejected)
                yield item
                continue
            try:
                decoded = decode_image(item.data, item.relative_path, self.channels, limits)
            except DavaeError as error:
                counts["done"] += 1
                counts["rejected"] += 1
                logger.info("rejected %s: %s", item.relative_path, error)
                yield Rejected.from_error(error, item.name, item.folder, item.source)
                continue
            pending.append((item, decoded))
            if len(pending) >= batch_size:
                yield from flush()
        if pending:
            yield from flush()
        report()


def choose_device(requested: str = "auto") -> torch.device:
    """CUDA when requested or available under "auto", else the CPU."""
    if requested == "cuda" or (requested == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise DavaeError(
                "invalid_setting",
                "device 'cuda' was requested but no CUDA GPU is available; use 'auto' or 'cpu'",
                setting="device",
                value=requested,
                expected="auto or cpu on this machine",
            )
        return torch.device("cuda")
    return torch.device("cpu")
