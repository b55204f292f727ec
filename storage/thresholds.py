"""Decision thresholds: validation, and the rule that turns scores into an auto label.

A thresholds object is stored as JSON with batches and labels, for example
``{"recon": 0.012, "latent": 9.3, "recon_reduction": "max",
"latent_metric": "mahalanobis", "review_low": null, "review_high": null}``.
An image is anomalous when its reconstruction score exceeds ``recon`` or its
latent distance (the metric named in ``latent_metric``) exceeds ``latent``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ColumnElement, func, or_

from davae.errors import invalid_setting
from storage.models import LabelValue, Score

RECON_REDUCTIONS = ("max", "mean")
LATENT_METRICS = ("mahalanobis", "euclidean", "multiscale")


def validate_thresholds(thresholds: Mapping[str, Any]) -> dict[str, Any]:
    """Check a thresholds object and return it as a plain dict.

    Required: ``recon`` and ``latent`` (positive numbers), ``recon_reduction``
    ("max" or "mean") and ``latent_metric`` ("mahalanobis", "euclidean" or
    "multiscale").
    Optional: ``review_low`` and ``review_high``, a band of combined scores
    the UI marks for review (numbers or None, low <= high). Other keys, such as
    ``target_fpr``, are kept as given.
    """
    checked = dict(thresholds)
    for key in ("recon", "latent"):
        value = checked.get(key)
        if not _is_number(value) or not math.isfinite(value) or value <= 0:
            raise invalid_setting(f"thresholds.{key}", value, "a positive number")
        checked[key] = float(value)
    if checked.get("recon_reduction") not in RECON_REDUCTIONS:
        raise invalid_setting(
            "thresholds.recon_reduction",
            checked.get("recon_reduction"),
            " or ".join(RECON_REDUCTIONS),
        )
    if checked.get("latent_metric") not in LATENT_METRICS:
        raise invalid_setting(
            "thresholds.latent_metric", checked.get("latent_metric"), " or ".join(LATENT_METRICS)
        )
    for key in ("review_low", "review_high"):
        value = checked.setdefault(key, None)
        if value is not None and (not _is_number(value) or not math.isfinite(value)):
            raise invalid_setting(f"thresholds.{key}", value, "a number or null")
    low, high = checked["review_low"], checked["review_high"]
    if low is not None and high is not None and low > high:
        raise invalid_setting("thresholds.review_low", low, f"at most review_high ({high})")
    return checked


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def latent_value(
    metric: str,
    latent_euclidean: float | None,
    latent_mahalanobis: float | None,
    latent_multiscale: float | None = None,
) -> float | None:
    """Pick the latent distance that ``metric`` names."""
    return {
        "mahalanobis": latent_mahalanobis,
        "euclidean": latent_euclidean,
        "multiscale": latent_multiscale,
    }[metric]


def decide_label(
    thresholds: Mapping[str, Any],
    recon: float,
    latent_euclidean: float,
    latent_mahalanobis: float,
    latent_multiscale: float | None = None,
) -> LabelValue:
    """Return the auto label: anomalous when either score exceeds its threshold.

    A missing latent distance (a multi-scale metric on a row scored without
    it) cannot exceed its threshold, so only the reconstruction score decides.
    """
    latent = latent_value(
        thresholds["latent_metric"], latent_euclidean, latent_mahalanobis, latent_multiscale
    )
    if recon > thresholds["recon"] or (latent is not None and latent > thresholds["latent"]):
        return LabelValue.ANOMALOUS
    return LabelValue.NORMAL


def anomalous_condition(thresholds: Mapping[str, Any]) -> ColumnElement[bool]:
    """Return the SQL form of ``decide_label`` over the ``scores`` table."""
    latent = {
        "mahalanobis": Score.latent_mahalanobis,
        "euclidean": Score.latent_euclidean,
        "multiscale": Score.latent_multiscale,
    }[thresholds["latent_metric"]]
    # NULL > x is NULL in SQL, and OR with NULL keeps a true recon comparison
    # true; coalesce makes the whole condition false rather than NULL otherwise.
    return or_(
        Score.recon_score > thresholds["recon"],
        func.coalesce(latent > thresholds["latent"], False),
    )
