"""Score history of a model over time, for control charts.

``score_history`` returns one point per scored image in scoring order,
``batch_score_summaries`` one subgroup per batch (count, mean, standard
deviation and range of the combined score, and the auto-label anomaly count),
the usual input of a Shewhart X-bar/S chart.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import Batch, Image, Score


class ScorePoint(NamedTuple):
    """One scored image of a model's history."""

    scored_at: datetime
    batch_id: int
    image_id: int
    recon_score: float
    latent_euclidean: float
    latent_mahalanobis: float
    latent_multiscale: float | None
    combined_score: float


@dataclass(frozen=True, slots=True)
class BatchScoreSummary:
    """The combined scores of one batch under a model, as a control-chart subgroup."""

    batch_id: int
    batch_name: str
    created_at: datetime
    count: int
    mean: float
    std: float  # sample standard deviation; 0.0 for a single image
    minimum: float
    maximum: float
    anomaly_count: int  # images whose latest auto label is anomalous


def score_history(
    session: Session,
    model_version_id: int,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    limit: int | None = None,
) -> list[ScorePoint]:
    """Return a model's scores in the order they were computed.

    ``since`` is inclusive and ``until`` exclusive. With ``limit``, the most
    recent ``limit`` points are returned, still oldest first.
    """
    statement = (
        select(
            Score.created_at,
            Image.batch_id,
            Score.image_id,
            Score.recon_score,
            Score.latent_euclidean,
            Score.latent_mahalanobis,
            Score.latent_multiscale,
            Score.combined_score,
        )
        .join(Image, Image.id == Score.image_id)
        .where(Score.model_version_id == model_version_id)
        .order_by(Score.created_at.desc(), Score.id.desc())
        .limit(limit)
    )
    if since is not None:
        statement = statement.where(Score.created_at >= since)
    if until is not None:
        statement = statement.where(Score.created_at < until)
    points = [ScorePoint(*row) for row in session.connection().execute(statement).all()]
    points.reverse()
    return points


def batch_score_summaries(session: Session, model_version_id: int) -> list[BatchScoreSummary]:
    """Return one summary per batch scored with the model, oldest batch first."""
    combined = Score.combined_score
    statement = (
        select(
            Batch.id,
            Batch.name,
            Batch.created_at,
            Batch.anomaly_count,
            func.count(combined),
            func.avg(combined),
            # SQLite has no stddev(), so the variance comes from the mean of squares.
            func.avg(combined * combined),
            func.min(combined),
            func.max(combined),
        )
        .join(Image, Image.batch_id == Batch.id)
        .join(Score, Score.image_id == Image.id)
        .where(Batch.model_version_id == model_version_id)
        .where(Score.model_version_id == model_version_id)
        .group_by(Batch.id, Batch.name, Batch.created_at, Batch.anomaly_count)
        .order_by(Batch.created_at, Batch.id)
    )
    summaries = []
    for (
        batch_id,
        name,
        created_at,
        anomalies,
        count,
        mean,
        mean_square,
        low,
        high,
    ) in session.execute(statement):
        mean, mean_square = float(mean), float(mean_square)
        # Bessel's correction turns the population variance into the sample variance.
        variance = max(mean_square - mean * mean, 0.0) * count / (count - 1) if count > 1 else 0.0
        summaries.append(
            BatchScoreSummary(
                batch_id=batch_id,
                batch_name=name,
                created_at=created_at,
                count=count,
                mean=mean,
                std=math.sqrt(variance),
                minimum=float(low),
                maximum=float(high),
                anomaly_count=anomalies,
            )
        )
    return summaries
