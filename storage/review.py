"""The review page's queries: every image of a batch with scores and labels, and label counts."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, func, select, true
from sqlalchemy.orm import Session

from storage.batches import get_batch
from storage.labels import latest_labels
from storage.models import Batch, Image, ImageStatus, LabelValue, Score

logger = logging.getLogger(__name__)


class ImageRow(NamedTuple):
    """One row of the review table. Score and label fields are None where absent."""

    image_id: int
    position: int
    file_name: str
    folder: str
    sha256: str | None
    width: int | None
    height: int | None
    format: str | None
    stored_path: str | None
    status: ImageStatus
    rejection_code: str | None
    rejection_message: str | None
    recon_score: float | None
    latent_euclidean: float | None
    latent_mahalanobis: float | None
    latent_multiscale: float | None
    combined_score: float | None
    heatmap_path: str | None
    auto_label: LabelValue | None
    human_label: LabelValue | None
    final_label: LabelValue | None  # the human label if any, else the auto label
    reviewer: str | None  # who set the latest human label
    reviewed_at: datetime | None
    comment: str | None  # of the latest human label


def image_rows_statement(
    batch: Batch, dialect_name: str, *, with_auto_thresholds: bool = False
) -> Select[Any]:
    """Build the SELECT behind ``batch_table`` for the given database dialect.

    With ``with_auto_thresholds``, one more column holds the thresholds stored
    with each image's latest auto label.
    """
    latest = latest_labels(batch.id, dialect_name)
    auto, human = latest.auto, latest.human
    score, join_score = _batch_scores(batch, dialect_name)
    extra = [auto.c.thresholds.label("auto_thresholds")] if with_auto_thresholds else []
    statement = select(
        Image.id.label("image_id"),
        Image.position,
        Image.file_name,
        Image.folder,
        Image.sha256,
        Image.width,
        Image.height,
        Image.format,
        Image.stored_path,
        Image.status,
        Image.rejection_code,
        Image.rejection_message,
        score.c.recon_score,
        score.c.latent_euclidean,
        score.c.latent_mahalanobis,
        score.c.latent_multiscale,
        score.c.combined_score,
        score.c.heatmap_path,
        auto.c.value.label("auto_label"),
        human.c.value.label("human_label"),
        func.coalesce(human.c.value, auto.c.value).label("final_label"),
        human.c.reviewer.label("reviewer"),
        human.c.created_at.label("reviewed_at"),
        human.c.comment.label("comment"),
        *extra,
    ).select_from(Image)
    statement = join_score(latest.join(statement))
    return statement.where(Image.batch_id == batch.id).order_by(Image.position)


def _batch_scores(batch: Batch, dialect_name: str) -> tuple[Any, Callable[[Any], Any]]:
    """Return each image's score under the batch's model, and the function that joins it.

    On PostgreSQL a LATERAL lookup by the (image_id, model_version_id) index
    keeps the cost proportional to the batch. With a plain join, PostgreSQL 15
    hashed every score of the model once statistics existed, so a read grew
    with the size of the whole database.
    """
    if dialect_name == "postgresql":
        score = (
            select(*Score.__table__.c)
            .where(Score.image_id == Image.id, Score.model_version_id == batch.model_version_id)
            .limit(1)
            .lateral("batch_score")
        )
        return score, lambda statement: statement.outerjoin(score, true())
    score = Score.__table__
    on = and_(score.c.image_id == Image.id, score.c.model_version_id == batch.model_version_id)
    return score, lambda statement: statement.outerjoin(score, on)


def batch_table(session: Session, batch_id: int) -> list[ImageRow]:
    """Return every image of a batch in upload order with scores and current labels.

    ``pandas.DataFrame(rows)`` turns the result into a table. Raises
    ``batch_not_found`` for an unknown batch.
    """
    batch = get_batch(session, batch_id)
    # Core execution through the session's connection skips the ORM result
    # layer, and fetching all rows at once avoids one driver call per row.
    # Both stood out in a profile of a 10,000-row read.
    connection = session.connection()
    rows = connection.execute(image_rows_statement(batch, connection.dialect.name)).all()
    return [ImageRow(*row) for row in rows]


@dataclass(frozen=True)
class LabelCounts:
    """The images of a batch by current label and review state."""

    normal: int  # current label normal
    anomalous: int  # current label anomalous
    unlabelled: int  # scored, no label yet
    pending: int  # not scored yet
    rejected: int
    human_reviewed: int  # images with at least one human label
    total: int


def label_counts(session: Session, batch_id: int) -> LabelCounts:
    """Count a batch's images by current label, in one query."""
    get_batch(session, batch_id)
    latest = latest_labels(batch_id, session.get_bind().dialect.name)
    final = func.coalesce(latest.human.c.value, latest.auto.c.value)
    reviewed = latest.human.c.id.is_not(None)
    statement = latest.join(select(Image.status, final, reviewed, func.count()).select_from(Image))
    statement = statement.where(Image.batch_id == batch_id).group_by(Image.status, final, reviewed)
    counts = dict.fromkeys(("normal", "anomalous", "unlabelled", "pending", "rejected"), 0)
    human_reviewed = total = 0
    for status, value, is_reviewed, count in session.execute(statement):
        total += count
        human_reviewed += count if is_reviewed else 0
        if status == ImageStatus.REJECTED:
            counts["rejected"] += count
        elif value is not None:
            counts[str(value)] += count
        elif status == ImageStatus.PENDING:
            counts["pending"] += count
        else:
            counts["unlabelled"] += count
    return LabelCounts(**counts, human_reviewed=human_reviewed, total=total)
