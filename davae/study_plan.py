"""Plan of a comparative study: its settings, its DA-VAE variants and their cache keys.

The study compares the DA-VAE with its own configuration, the same VAE
without augmentation and the conventional detectors of
:mod:`davae.baselines`, then varies the augmentation (which transforms, how
many copies per image) and the share of defects in the test set. Each row of
the results names its setting; rows that share a configuration share one
trained model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import davae
from davae.baselines import BASELINE_NAMES, BaselineConfig
from davae.config import DetectorConfig
from davae.errors import invalid_setting

TRANSFORMS = ("rotate90", "hflip", "vflip", "brightness", "contrast", "noise")
# Augmentation settings of the transform ablation: name -> transforms switched on.
TRANSFORM_SETS: dict[str, tuple[str, ...]] = {
    "none": (),
    **{name: (name,) for name in TRANSFORMS},
    "geometric": ("rotate90", "hflip", "vflip"),
    "photometric": ("brightness", "contrast", "noise"),
    "all": TRANSFORMS,
}
ITERATIONS = (0, 1, 2, 4, 8)
DEFECT_SHARES = (0.5, 0.1, 0.01)
VAE_METHODS = ("da_vae", "vae_no_augment")
METHODS = VAE_METHODS + BASELINE_NAMES
STUDIES = ("main", "ablation_transforms", "ablation_iterations", "imbalance")

# Settings of ``--quick`` smoke runs: a small model trained briefly. Their
# numbers show that the study runs, not how well the method detects.
QUICK_OVERRIDES: dict[str, Any] = {
    "vae__image_size": 64,
    "vae__width": 16,
    "vae__latent_dim": 32,
    "train__epochs": 3,
}
# Increment when a change to training or scoring makes cached models stale.
CACHE_FORMAT = 1


@dataclass(frozen=True)
class StudySettings:
    """Everything that defines a comparative study, apart from the dataset.

    ``config`` is the DA-VAE configuration of the main row; every other
    DA-VAE row changes only its augmentation. ``labelled_defects_per_class``
    is how many images of each defect class the random forest is trained
    on; those images leave the evaluation set of every method.
    """

    config: DetectorConfig = field(default_factory=DetectorConfig)
    baselines: BaselineConfig = field(default_factory=BaselineConfig)
    ablation: bool = True
    imbalance: bool = True
    seeds: int = 5  # subsampling seeds per defect share
    defect_shares: tuple[float, ...] = DEFECT_SHARES
    iterations: tuple[int, ...] = ITERATIONS
    labelled_defects_per_class: int = 10
    quick: bool = False  # recorded in the outputs so that smoke runs are labelled as such

    def validate(self) -> None:
        self.config.validate()
        self.baselines.validate()
        if not (1 <= self.seeds <= 1000):
            raise invalid_setting("seeds", self.seeds, "an integer from 1 to 1000")
        if not self.defect_shares or any(not (0.0 < s < 1.0) for s in self.defect_shares):
            raise invalid_setting(
                "defect_shares", self.defect_shares, "numbers strictly between 0 and 1"
            )
        if not self.iterations or any(not (0 <= k <= 64) for k in self.iterations):
            raise invalid_setting("iterations", self.iterations, "integers from 0 to 64")
        if not (1 <= self.labelled_defects_per_class <= 10_000):
            raise invalid_setting(
                "labelled_defects_per_class",
                self.labelled_defects_per_class,
                "an integer from 1 to 10000",
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "config": self.config.to_dict(),
            "baselines": dataclasses.asdict(self.baselines),
            "ablation": self.ablation,
            "imbalance": self.imbalance,
            "seeds": self.seeds,
            "defect_shares": list(self.defect_shares),
            "iterations": list(self.iterations),
            "labelled_defects_per_class": self.labelled_defects_per_class,
            "quick": self.quick,
        }


@dataclass(frozen=True)
class VaeRow:
    """One DA-VAE row of the results: its setting and the configuration it trains."""

    method: str  # "da_vae" or "vae_no_augment"
    study: str  # "main", "ablation_transforms" or "ablation_iterations"
    augment: str  # see augment_label
    iterations: int
    config: DetectorConfig


def quick_config(config: DetectorConfig | None = None) -> DetectorConfig:
    """Return ``config`` (default: the default configuration) shrunk for a smoke run."""
    return (config or DetectorConfig()).replace(**QUICK_OVERRIDES)


def augmentation_config(config: DetectorConfig, transforms: tuple[str, ...], iterations: int):
    """Return ``config`` with exactly ``transforms`` switched on and K = ``iterations``.

    With K = 0 no transform runs, so the switches are set to all-on: every
    configuration without augmentation then has one cache key and is
    trained once.
    """
    if iterations == 0:
        transforms = TRANSFORMS
    changes: dict[str, Any] = {f"augment__{name}": name in transforms for name in TRANSFORMS}
    changes["augment__iterations"] = iterations
    return config.replace(**changes)


def augment_label(config: DetectorConfig) -> str:
    """Name the transform set of ``config``.

    Returns "none" for K = 0, a TRANSFORM_SETS name when the switched-on
    transforms match one, else their names joined by "+" ("identity" when K
    copies are made with every transform switched off).
    """
    if config.augment.iterations == 0:
        return "none"
    enabled = tuple(config.augment.enabled_transforms)
    for name, transforms in TRANSFORM_SETS.items():
        if enabled == transforms and name != "none":
            return name
    return "+".join(enabled) if enabled else "identity"


def plan_vae_rows(settings: StudySettings) -> list[VaeRow]:
    """List the DA-VAE result rows of a study in output order.

    The transform ablation keeps the main configuration's K; when that K is
    0, it uses K = 4 so that the transforms have an effect.
    """
    base = settings.config
    no_augment = augmentation_config(base, (), 0)
    rows = [
        VaeRow("da_vae", "main", augment_label(base), base.augment.iterations, base),
        VaeRow("vae_no_augment", "main", "none", 0, no_augment),
    ]
    if not settings.ablation:
        return rows
    ablation_k = base.augment.iterations or 4
    for name, transforms in TRANSFORM_SETS.items():
        k = 0 if name == "none" else ablation_k
        config = augmentation_config(base, transforms, k)
        rows.append(VaeRow("da_vae", "ablation_transforms", name, k, config))
    for k in settings.iterations:
        config = augmentation_config(base, TRANSFORMS, k)
        rows.append(VaeRow("da_vae", "ablation_iterations", "all", k, config))
    return rows


def config_key(config: DetectorConfig, train_fingerprint: dict[str, Any]) -> str:
    """Return the cache key of a model: a hash of its configuration and training images.

    ``train_fingerprint`` is :meth:`davae.dataset.LoadedImages.fingerprint`
    of the training normals, which depends on their content only.
    """
    payload = {
        "cache_format": CACHE_FORMAT,
        "library_version": davae.__version__,
        "config": config.to_dict(),
        "train": train_fingerprint,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def config_changes(config: DetectorConfig) -> list[str]:
    """List the settings of ``config`` that differ from today's defaults, as "part.name=value"."""
    default = DetectorConfig().to_dict()
    changes = []
    for part, values in config.to_dict().items():
        for name, value in values.items():
            if default[part].get(name) != value:
                changes.append(f"{part}.{name}={value!r} (default {default[part].get(name)!r})")
    return changes
