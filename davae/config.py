"""Configuration: one frozen dataclass per concern, stored in every model bundle.

Each ``validate`` raises :class:`~davae.errors.DavaeError` with code
``invalid_setting`` naming the setting, the value and what is allowed, so a
bad value fails before any work starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from davae.errors import invalid_setting

# Training needs images for both the training split and the validation split
# that calibrates thresholds; below this count the split leaves too few of each.
MIN_TRAINING_IMAGES = 10


def _check_range(name: str, value: float, low: float, high: float) -> None:
    if not (low <= value <= high):
        raise invalid_setting(name, value, f"a number from {low} to {high}")


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise invalid_setting(name, value, "one of " + ", ".join(choices))


@dataclass(frozen=True)
class InputLimits:
    """Limits applied to every uploaded file and archive before decoding."""

    max_pixels: int = 80_000_000  # width * height, about 9000 x 9000
    max_file_bytes: int = 512 * 1024**2
    zip_max_members: int = 100_000
    zip_max_total_bytes: int = 16 * 1024**3  # sum of uncompressed member sizes

    def validate(self) -> None:
        for name in ("max_pixels", "max_file_bytes", "zip_max_members", "zip_max_total_bytes"):
            if getattr(self, name) < 1:
                raise invalid_setting(name, getattr(self, name), "a positive integer")


@dataclass(frozen=True)
class PreprocessConfig:
    """How a decoded image becomes model input.

    ``normalize`` is ``"none"`` or ``"flatfield"``. Flat-field normalisation
    divides out the slowly varying illumination (a wide Gaussian blur of the
    image) and standardises the result, so that lighting and sheen, which vary
    most between normal parts, do not dominate the reconstruction error.
    """

    normalize: str = "flatfield"
    flatfield_sigma: float = 0.08  # Gaussian sigma as a fraction of the image's shorter side

    def validate(self) -> None:
        _check_choice("normalize", self.normalize, ("none", "flatfield"))
        _check_range("flatfield_sigma", self.flatfield_sigma, 0.005, 1.0)


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation of normal training images.

    ``iterations`` (K) is the number of augmented copies of each training image
    per epoch, drawn anew every epoch; K = 0 trains on the originals only.
    Rotation and flip strengths are probabilities; brightness and contrast
    strengths s draw a factor from [1 - s, 1 + s]; ``noise_sigma`` is the
    standard deviation of additive Gaussian noise on the [0, 1] pixel scale.
    """

    iterations: int = 4
    rotate90: bool = True
    rotate90_p: float = 0.75  # chance of one of 90, 180 or 270 degrees
    hflip: bool = True
    hflip_p: float = 0.5
    vflip: bool = True
    vflip_p: float = 0.5
    brightness: bool = True
    brightness_strength: float = 0.2
    contrast: bool = True
    contrast_strength: float = 0.2
    noise: bool = True
    noise_sigma: float = 0.02

    def validate(self) -> None:
        if not (0 <= self.iterations <= 64):
            raise invalid_setting("augment_iterations", self.iterations, "an integer from 0 to 64")
        for name in ("rotate90_p", "hflip_p", "vflip_p"):
            _check_range(name, getattr(self, name), 0.0, 1.0)
        _check_range("brightness_strength", self.brightness_strength, 0.0, 0.9)
        _check_range("contrast_strength", self.contrast_strength, 0.0, 0.9)
        _check_range("noise_sigma", self.noise_sigma, 0.0, 0.5)

    @property
    def enabled_transforms(self) -> list[str]:
        names = ("rotate90", "hflip", "vflip", "brightness", "contrast", "noise")
        return [name for name in names if getattr(self, name)]


@dataclass(frozen=True)
class VAEConfig:
    """Architecture of the convolutional VAE.

    The encoder halves the input ``depth`` times, so ``image_size`` must be a
    multiple of 2 ** depth. Channel widths double per stage from ``width``.
    """

    image_size: int = 128
    channels: int = 1
    latent_dim: int = 64
    width: int = 16
    depth: int = 4
    # The encoder's log-variance is squashed into this range: unbounded, it
    # drifted to -186 in trials with augmentation and the KL term exploded.
    logvar_min: float = -6.0
    logvar_max: float = 3.0

    def validate(self) -> None:
        if self.channels not in (1, 3):
            raise invalid_setting("channels", self.channels, "1 (grayscale) or 3 (RGB)")
        if not (1 <= self.depth <= 6):
            raise invalid_setting("depth", self.depth, "an integer from 1 to 6")
        step = 2**self.depth
        if self.image_size < 2 * step or self.image_size % step or self.image_size > 1024:
            raise invalid_setting(
                "image_size", self.image_size, f"a multiple of {step} from {2 * step} to 1024"
            )
        if not (2 <= self.latent_dim <= 1024):
            raise invalid_setting("latent_dim", self.latent_dim, "an integer from 2 to 1024")
        if not (4 <= self.width <= 256):
            raise invalid_setting("width", self.width, "an integer from 4 to 256")
        if self.logvar_min >= self.logvar_max:
            raise invalid_setting("logvar_min", self.logvar_min, "less than logvar_max")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, data split and the whole-image or patch mode.

    In ``"patch"`` mode the model sees ``image_size`` crops of the image after
    scaling it by ``patch_scale``; scoring then slides a window with
    ``patch_stride`` over the whole image and stitches the error maps.
    """

    epochs: int = 30
    batch_size: int = 32
    learning_rate: float = 5e-4
    beta: float = 1.0  # weight of the KL term
    recon_sigma: float = 0.1  # Gaussian decoder std on the [0, 1] scale
    grad_clip: float = 5.0
    val_fraction: float = 0.2
    patience: int = 8  # epochs without a better validation loss before stopping
    seed: int = 0
    mode: str = "whole"
    patch_scale: float = 1.0
    patches_per_image: int = 8  # random crops per training image and epoch
    device: str = "auto"

    def validate(self) -> None:
        if not (1 <= self.epochs <= 10_000):
            raise invalid_setting("epochs", self.epochs, "an integer from 1 to 10000")
        if not (1 <= self.batch_size <= 4096):
            raise invalid_setting("batch_size", self.batch_size, "an integer from 1 to 4096")
        _check_range("learning_rate", self.learning_rate, 1e-6, 1.0)
        _check_range("beta", self.beta, 0.0, 100.0)
        _check_range("recon_sigma", self.recon_sigma, 1e-3, 10.0)
        _check_range("val_fraction", self.val_fraction, 0.05, 0.5)
        if self.patience < 1:
            raise invalid_setting("patience", self.patience, "a positive integer")
        _check_choice("mode", self.mode, ("whole", "patch"))
        _check_range("patch_scale", self.patch_scale, 0.05, 4.0)
        if not (1 <= self.patches_per_image <= 256):
            raise invalid_setting("patches_per_image", self.patches_per_image, "1 to 256")
        _check_choice("device", self.device, ("auto", "cpu", "cuda"))


@dataclass(frozen=True)
class ScoringConfig:
    """How error maps and latents become the two scores and the decision.

    ``error_normalization="pixel"`` standardises each pixel of the smoothed
    error map by its mean and standard deviation over the normal training
    images. ``latent_metric`` picks the thresholded latent distance:
    ``"mahalanobis"`` or ``"euclidean"`` on the latent vector, or
    ``"multiscale"``, the largest per-position Mahalanobis distance of the
    encoder stages ``multiscale_stages`` pooled onto a ``multiscale_grid``
    square grid. The per-position options apply in whole-image mode; patch
    mode trains with ``"none"`` and ``"mahalanobis"`` instead.
    """

    smoothing_sigma: float = 2.0  # Gaussian sigma in model-input pixels
    recon_reduction: str = "max"  # which reduction of the error map is thresholded
    error_normalization: str = "pixel"
    latent_metric: str = "multiscale"
    multiscale_stages: tuple[int, ...] = (1, 2, 3)
    multiscale_grid: int = 16
    target_fpr: float = 0.01  # false-alarm rate the thresholds aim at on held-out normals
    batch_size: int = 32
    patch_stride_fraction: float = 0.5  # sliding-window stride as a fraction of the patch

    def validate(self) -> None:
        _check_range("smoothing_sigma", self.smoothing_sigma, 0.0, 32.0)
        _check_choice("recon_reduction", self.recon_reduction, ("max", "mean"))
        _check_choice("error_normalization", self.error_normalization, ("none", "pixel"))
        _check_choice(
            "latent_metric", self.latent_metric, ("mahalanobis", "euclidean", "multiscale")
        )
        stages = self.multiscale_stages
        if not stages or len(set(stages)) != len(stages) or min(stages) < 0:
            raise invalid_setting(
                "multiscale_stages", stages, "distinct encoder stage numbers from 0"
            )
        if not (1 <= self.multiscale_grid <= 64):
            raise invalid_setting("multiscale_grid", self.multiscale_grid, "1 to 64")
        _check_range("target_fpr", self.target_fpr, 0.0001, 0.5)
        if not (1 <= self.batch_size <= 4096):
            raise invalid_setting("scoring batch_size", self.batch_size, "1 to 4096")
        _check_range("patch_stride_fraction", self.patch_stride_fraction, 0.1, 1.0)

    @property
    def uses_features(self) -> bool:
        return self.latent_metric == "multiscale"


@dataclass(frozen=True)
class DetectorConfig:
    """Everything that defines a trained detector, stored in its bundle."""

    vae: VAEConfig = field(default_factory=VAEConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)

    def validate(self) -> None:
        for part in (self.vae, self.train, self.augment, self.preprocess, self.scoring):
            part.validate()
        if self.scoring.uses_features and max(self.scoring.multiscale_stages) >= self.vae.depth:
            raise invalid_setting(
                "multiscale_stages",
                self.scoring.multiscale_stages,
                f"stage numbers below the encoder depth ({self.vae.depth})",
            )

    def effective(self) -> DetectorConfig:
        """The configuration training actually uses.

        Patch mode slides windows over images of any size, so a position in
        a window is not the same place in every image: per-position
        statistics do not apply there, and the per-position options fall
        back to plain error maps and the latent-vector Mahalanobis distance.
        """
        if self.train.mode != "patch":
            return self
        return self.replace(
            scoring__error_normalization="none", scoring__latent_metric="mahalanobis"
        )

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dicts, with tuples as lists so the result round-trips through JSON."""
        return {
            part: {
                name: list(value) if isinstance(value, tuple) else value
                for name, value in fields.items()
            }
            for part, fields in dataclasses.asdict(self).items()
        }

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> DetectorConfig:
        """Rebuild a config from ``to_dict`` output; unknown keys are ignored.

        Keys missing from an older bundle take today's defaults.
        """
        parts = {}
        for part in dataclasses.fields(cls):
            part_cls = part.default_factory  # type: ignore[misc]
            known = {f.name for f in dataclasses.fields(part_cls)}
            values = {k: v for k, v in (data.get(part.name) or {}).items() if k in known}
            for name, value in values.items():
                # JSON and some stores turn tuples into lists; the dataclasses want tuples.
                if isinstance(value, list):
                    values[name] = tuple(value)
            parts[part.name] = part_cls(**values)
        return cls(**parts)

    def replace(self, **changes: Any) -> DetectorConfig:
        """Return a copy with fields changed, named as ``part__field``.

        Example: ``config.replace(augment__iterations=0, train__epochs=5)``.
        """
        grouped: dict[str, dict[str, Any]] = {}
        for key, value in changes.items():
            part, _, name = key.partition("__")
            if not name or part not in {f.name for f in dataclasses.fields(self)}:
                raise KeyError(f"expected part__field, got {key!r}")
            grouped.setdefault(part, {})[name] = value
        updated = {
            part: dataclasses.replace(getattr(self, part), **values)
            for part, values in grouped.items()
        }
        return dataclasses.replace(self, **updated)
