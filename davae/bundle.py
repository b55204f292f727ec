"""Model bundles: one file holding everything a trained detector needs.

A bundle is a dict of tensors and plain Python values saved with
``torch.save`` and read with ``torch.load(weights_only=True)``, which
unpickles only tensors and built-in containers, so a bundle can never run code.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

import davae
from davae.calibration import HeatmapScale, Thresholds
from davae.config import DetectorConfig
from davae.detector import RAW_SCORE_NAMES, Detector
from davae.errors import DavaeError
from davae.model import ConvVAE
from davae.multiscale import ErrorStats, FeatureStats
from davae.scoring import LatentStats

BUNDLE_FORMAT = "davae-bundle"
BUNDLE_VERSION = 1
_REQUIRED_KEYS = (
    "format",
    "format_version",
    "library_version",
    "config",
    "state_dict",
    "latent_mean",
    "latent_precision",
    "thresholds",
    "heatmap_scale",
    "calibration",
    "history",
    "fingerprint",
    "metadata",
)


def detector_to_dict(detector: Detector) -> dict[str, Any]:
    """Flatten a detector into the bundle's dict of tensors and plain values."""
    return {
        "format": BUNDLE_FORMAT,
        "format_version": BUNDLE_VERSION,
        "library_version": davae.__version__,
        "config": detector.config.to_dict(),
        "state_dict": {k: v.detach().cpu() for k, v in detector.model.state_dict().items()},
        "latent_mean": detector.stats.mean.cpu(),
        "latent_precision": detector.stats.precision.cpu(),
        "thresholds": detector.thresholds.to_dict(),
        "heatmap_scale": detector.heatmap_scale.to_dict(),
        "calibration": {
            name: torch.as_tensor(np.asarray(detector.calibration[name], dtype=np.float64))
            for name in detector.score_names
        },
        "error_stats": None if detector.error_stats is None else detector.error_stats.to_dict(),
        "feature_stats": (
            None if detector.feature_stats is None else detector.feature_stats.to_dict()
        ),
        "history": [dict(entry) for entry in detector.history],
        "fingerprint": dict(detector.fingerprint),
        "metadata": dict(detector.metadata),
    }


def save_bundle(detector: Detector, path: str | os.PathLike[str]) -> str:
    """Write the bundle atomically (temporary file, then rename); return its SHA-256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".bundle-", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            torch.save(detector_to_dict(detector), stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return file_sha256(path)


def file_sha256(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_bundle(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> Detector:
    """Load a bundle into a :class:`Detector` in eval mode on ``device``.

    Raises :class:`DavaeError` (code ``bundle_invalid`` or ``bundle_version``)
    for a missing, corrupt or foreign file; nothing in the file is executed.
    """
    path = Path(path)
    if not path.is_file():
        raise DavaeError(
            "bundle_invalid", f"{path}: model file not found", path=str(path), detail="not found"
        )
    _check_archive(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for corrupt or unsafe pickles
        raise DavaeError(
            "bundle_invalid",
            f"{path}: not a readable DA-VAE model bundle ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else 'no detail'})",
            path=str(path),
            detail=type(exc).__name__,
        ) from exc
    return detector_from_dict(data, str(path), device)


def _check_archive(path: Path) -> None:
    """Reject a file that is not an intact ZIP archive, before anything is unpickled.

    torch.save writes a ZIP archive with a CRC-32 per member, but torch.load
    (checked with torch 2.14) does not verify them: a damaged weight tensor
    would load silently and change every score.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, RuntimeError, zlib.error) as exc:
        raise DavaeError(
            "bundle_invalid",
            f"{path}: not a DA-VAE model bundle (not an intact ZIP archive: {exc})",
            path=str(path),
            detail="not a ZIP archive",
        ) from exc
    if damaged is not None:
        raise DavaeError(
            "bundle_invalid",
            f"{path}: the model file is damaged ({damaged} fails its CRC-32 check); "
            "copy it again or retrain",
            path=str(path),
            detail=f"CRC-32 mismatch in {damaged}",
        )


def detector_from_dict(
    data: Any, source: str = "bundle", device: str | torch.device = "cpu"
) -> Detector:
    """Rebuild a detector from a loaded bundle dict, checking every part."""
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise DavaeError(
            "bundle_invalid",
            f"{source}: not a DA-VAE model bundle",
            path=source,
            detail="wrong format marker",
        )
    missing = [key for key in _REQUIRED_KEYS if key not in data]
    if missing:
        raise DavaeError(
            "bundle_invalid",
            f"{source}: bundle is missing {', '.join(missing)}",
            path=source,
            detail="missing " + ", ".join(missing),
        )
    if data["format_version"] != BUNDLE_VERSION:
        raise DavaeError(
            "bundle_version",
            f"{source}: bundle format {data['format_version']} is not supported "
            f"(this version reads {BUNDLE_VERSION}); retrain the model",
            path=source,
            found=data["format_version"],
            supported=BUNDLE_VERSION,
        )
    try:
        config = DetectorConfig.from_dict(data["config"])
        config.validate()
        model = ConvVAE(config.vae)
        model.load_state_dict(data["state_dict"])
        stats = LatentStats(data["latent_mean"].float(), data["latent_precision"].float())
        if stats.mean.shape != (config.vae.latent_dim,):
            raise ValueError("latent statistics do not match the latent size")
        thresholds = Thresholds(**data["thresholds"])
        scale = HeatmapScale(**data["heatmap_scale"])
        error_stats = feature_stats = None
        if data.get("error_stats") is not None:
            error_stats = ErrorStats.from_dict(data["error_stats"])
        if data.get("feature_stats") is not None:
            feature_stats = FeatureStats.from_dict(data["feature_stats"])
        if config.scoring.error_normalization == "pixel" and error_stats is None:
            raise ValueError(
                "per-pixel error normalisation is configured but its statistics are missing"
            )
        if config.scoring.uses_features and feature_stats is None:
            raise ValueError(
                "the multi-scale latent distance is configured but its statistics are missing"
            )
        names = [n for n in RAW_SCORE_NAMES if n != "latent_multiscale" or feature_stats]
        calibration = {name: data["calibration"][name].numpy() for name in names}
    except DavaeError as exc:
        # A stored setting outside the allowed values means the file is at fault, not the user.
        raise DavaeError(
            "bundle_invalid",
            f"{source}: the bundle's settings are invalid ({exc})",
            path=source,
            detail=str(exc),
        ) from exc
    except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as exc:
        raise DavaeError(
            "bundle_invalid",
            f"{source}: the bundle is damaged or inconsistent ({exc})",
            path=source,
            detail=str(exc),
        ) from exc
    model.to(device).eval()
    return Detector(
        model=model,
        config=config,
        stats=stats,
        thresholds=thresholds,
        heatmap_scale=scale,
        calibration=calibration,
        history=list(data["history"]),
        fingerprint=dict(data["fingerprint"]),
        metadata={**data["metadata"], "library_version": data["library_version"]},
        error_stats=error_stats,
        feature_stats=feature_stats,
    )
