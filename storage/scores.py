"""Scoring a batch in chunks, each committed on its own, so an interrupted job can resume.

Each chunk commits its scores, auto labels, image statuses and the batch's
counts in one transaction. A process killed mid-job therefore keeps every
chunk it committed, the batch counts show how far it got, and running
``score_pending`` again scores only the images that are still ``pending``. The
unique (image_id, model_version_id) constraint on scores backs this up: an
image can never get two scores from one model.

The model itself stays outside storage: ``score_pending`` calls a function
that turns a chunk of pending images into scores, and runs it outside any
database transaction so that no lock is held while the model works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Integer, any_, bindparam, insert, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

from storage import audit
from storage.batches import get_batch, lock_batch, set_batch_status
from storage.db import Database
from storage.models import (
    Batch,
    BatchStatus,
    Image,
    ImageStatus,
    Label,
    LabelSource,
    LabelValue,
    Score,
    utc_now,
)
from storage.thresholds import decide_label

logger = logging.getLogger(__name__)

DEFAULT_CHUNK_SIZE = 64


@dataclass(frozen=True)
class PendingImage:
    """An image waiting to be scored, with what a scorer needs to load it."""

    id: int
    position: int
    file_name: str
    folder: str
    sha256: str
    stored_path: str  # relative to DAVAE_HOME
    format: str | None


@dataclass(frozen=True)
class NewScore:
    """The scores of one image, as computed by the model."""

    image_id: int
    recon_score: float
    latent_euclidean: float
    latent_mahalanobis: float
    combined_score: float
    heatmap_path: str | None = None  # from FileStore.store_heatmap
    latent_multiscale: float | None = None  # for models with multi-scale statistics


@dataclass(frozen=True)
class ImageRejection:
    """An image that turned out unusable while scoring, with a davae.errors code."""

    image_id: int
    code: str
    message: str
    params: dict[str, Any] = field(default_factory=dict)


ScoreChunk = Callable[[list[PendingImage]], Sequence[NewScore | ImageRejection]]


@dataclass(frozen=True)
class BatchProgress:
    """How far the scoring of a batch got, from the counts committed so far."""

    batch_id: int
    status: BatchStatus
    image_count: int
    scored: int
    rejected: int
    anomalous: int  # latest auto label anomalous

    @property
    def done(self) -> int:
        return self.scored + self.rejected

    @property
    def pending(self) -> int:
        return self.image_count - self.done

    @classmethod
    def of(cls, batch: Batch) -> BatchProgress:
        return cls(
            batch_id=batch.id,
            status=batch.status,
            image_count=batch.image_count,
            scored=batch.scored_count,
            rejected=batch.rejected_count,
            anomalous=batch.anomaly_count,
        )


def ids_in(session: Session, column: Any, ids: Sequence[int]) -> Any:
    """Return ``column IN ids``, as ``= ANY(array)`` on PostgreSQL.

    One array parameter replaces thousands of IN parameters, which PostgreSQL
    parses and plans noticeably slower for a chunk of 10,000 images.
    """
    if session.get_bind().dialect.name == "postgresql":
        return column == any_(bindparam(None, list(ids), type_=ARRAY(Integer)))
    return column.in_(ids)


def pending_images(
    session: Session, batch_id: int, *, limit: int | None = None, after_position: int = -1
) -> list[PendingImage]:
    """Return a batch's pending images in upload order, after ``after_position``."""
    statement = (
        select(
            Image.id,
            Image.position,
            Image.file_name,
            Image.folder,
            Image.sha256,
            Image.stored_path,
            Image.format,
        )
        .where(
            Image.batch_id == batch_id,
            Image.status == ImageStatus.PENDING,
            Image.position > after_position,
        )
        .order_by(Image.position)
        .limit(limit)
    )
    return [PendingImage(*row) for row in session.execute(statement).all()]


def commit_scored_chunk(
    session: Session,
    batch_id: int,
    results: Sequence[NewScore | ImageRejection],
    *,
    actor: str,
) -> BatchProgress:
    """Store one chunk's scores, auto labels and rejections; return the batch's progress.

    Auto labels use the thresholds in force for the batch at commit time.
    Results for images that are no longer pending (scored by an earlier run)
    are skipped with a warning, so a repeated chunk never scores twice.
    """
    requested_ids = [result.image_id for result in results]
    if len(set(requested_ids)) != len(requested_ids):
        repeated = sorted({i for i in requested_ids if requested_ids.count(i) > 1})
        raise ValueError(f"more than one result for images {repeated}; give one per image")
    batch = lock_batch(session, batch_id)
    still_pending = set(
        session.scalars(
            select(Image.id).where(
                Image.batch_id == batch_id,
                ids_in(session, Image.id, requested_ids),
                Image.status == ImageStatus.PENDING,
            )
        )
    )
    skipped = [image_id for image_id in requested_ids if image_id not in still_pending]
    if skipped:
        logger.warning("batch %s: images %s are not pending; results skipped", batch_id, skipped)
    scores = [r for r in results if isinstance(r, NewScore) and r.image_id in still_pending]
    rejections = [
        r for r in results if isinstance(r, ImageRejection) and r.image_id in still_pending
    ]

    now = utc_now()
    anomalous = 0
    if scores:
        session.execute(
            insert(Score),
            [
                {
                    "image_id": score.image_id,
                    "model_version_id": batch.model_version_id,
                    "recon_score": score.recon_score,
                    "latent_euclidean": score.latent_euclidean,
                    "latent_mahalanobis": score.latent_mahalanobis,
                    "latent_multiscale": score.latent_multiscale,
                    "combined_score": score.combined_score,
                    "heatmap_path": score.heatmap_path,
                    "created_at": now,
                }
                for score in scores
            ],
        )
        labels = []
        for score in scores:
            value = decide_label(
                batch.thresholds,
                score.recon_score,
                score.latent_euclidean,
                score.latent_mahalanobis,
                score.latent_multiscale,
            )
            anomalous += value == LabelValue.ANOMALOUS
            labels.append(
                {
                    "image_id": score.image_id,
                    "value": value,
                    "source": LabelSource.AUTO,
                    "reviewer": actor,
                    "created_at": now,
                    "thresholds": batch.thresholds,
                }
            )
        session.execute(insert(Label), labels)
        session.execute(
            update(Image)
            .where(ids_in(session, Image.id, [score.image_id for score in scores]))
            .values(status=ImageStatus.SCORED),
            execution_options={"synchronize_session": False},
        )
    for rejection in rejections:
        session.execute(
            update(Image)
            .where(Image.id == rejection.image_id)
            .values(
                status=ImageStatus.REJECTED,
                rejection_code=rejection.code,
                rejection_message=rejection.message,
                rejection_params=rejection.params,
            ),
            execution_options={"synchronize_session": False},
        )

    # The batch row is locked, so reading and writing the counts here is safe.
    batch.scored_count += len(scores)
    batch.rejected_count += len(rejections)
    batch.anomaly_count += anomalous
    session.flush()
    return BatchProgress.of(batch)


def batch_progress(session: Session, batch_id: int) -> BatchProgress:
    """Return the committed progress of a batch."""
    return BatchProgress.of(get_batch(session, batch_id))


def score_pending(
    database: Database,
    batch_id: int,
    score_chunk: ScoreChunk,
    *,
    actor: str,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    on_progress: Callable[[BatchProgress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
) -> BatchProgress:
    """Score every pending image of a batch, committing after each chunk.

    Use it for a first run and for a resume alike: it marks the batch
    ``running``, calls ``score_chunk`` with up to ``chunk_size`` pending
    images at a time, and commits its results. ``score_chunk`` must return a
    ``NewScore`` or an ``ImageRejection`` for every image it is given. The
    batch ends ``done``; ``cancelled`` when ``should_cancel`` returns True
    between chunks; ``failed`` when ``score_chunk`` or a commit raises, and the
    exception is raised again. Raises ``batch_status_conflict`` for a batch
    that is already done.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be at least 1, got {chunk_size}")
    actor = audit.check_actor(actor)
    database.run_write(
        lambda session: set_batch_status(session, batch_id, BatchStatus.RUNNING, actor),
        action=f"start scoring batch {batch_id}",
    )
    with database.read() as session:
        progress = batch_progress(session, batch_id)
    logger.info("batch %s: scoring %d pending images", batch_id, progress.pending)

    after_position = -1
    try:
        while True:
            if should_cancel is not None and should_cancel():
                return _finish(database, batch_id, BatchStatus.CANCELLED, actor)
            with database.read() as session:
                chunk = pending_images(
                    session, batch_id, limit=chunk_size, after_position=after_position
                )
            if not chunk:
                break
            after_position = chunk[-1].position
            results = list(score_chunk(chunk))
            _check_complete(chunk, results)
            progress = database.run_write(
                lambda session, results=results: commit_scored_chunk(
                    session, batch_id, results, actor=actor
                ),
                action=f"save scores of batch {batch_id}",
            )
            if on_progress is not None:
                on_progress(progress)
    except Exception as error:
        _mark_failed(database, batch_id, actor, error)
        raise
    return _finish(database, batch_id, BatchStatus.DONE, actor)


def _check_complete(
    chunk: list[PendingImage], results: Sequence[NewScore | ImageRejection]
) -> None:
    missing = {image.id for image in chunk} - {result.image_id for result in results}
    if missing:
        raise ValueError(
            f"score_chunk returned no result for images {sorted(missing)}; "
            "return a NewScore or an ImageRejection for every image"
        )


def _finish(database: Database, batch_id: int, status: BatchStatus, actor: str) -> BatchProgress:
    batch = database.run_write(
        lambda session: set_batch_status(session, batch_id, status, actor),
        action=f"finish batch {batch_id}",
    )
    progress = BatchProgress.of(batch)
    logger.info(
        "batch %s %s: %d scored, %d rejected, %d anomalous",
        batch_id,
        status.value,
        progress.scored,
        progress.rejected,
        progress.anomalous,
    )
    return progress


def _mark_failed(database: Database, batch_id: int, actor: str, error: Exception) -> None:
    try:
        database.run_write(
            lambda session: set_batch_status(
                session, batch_id, BatchStatus.FAILED, actor, error=error
            ),
            action=f"mark batch {batch_id} failed",
        )
    except Exception:
        # The database may be the reason scoring failed; the batch then stays
        # "running" and can still be resumed. The original error is raised.
        logger.exception("batch %s: could not record the failure", batch_id)
