"""Batches and the image files recorded in them.

A scoring job first records every uploaded file: the original goes to the
file store and gets an image row with status ``pending``, or the file gets a
``rejected`` row with the reason. Rows are numbered by their position in the
upload, so a job that was interrupted while recording can continue from
``next_image_position``. Scoring the pending images is in ``storage.scores``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from davae.errors import DavaeError, invalid_setting
from storage import audit
from storage.audit import AuditAction
from storage.models import NAME_LENGTH, Batch, BatchStatus, Image, ImageStatus, utc_now
from storage.registry import get_model_version
from storage.thresholds import validate_thresholds

logger = logging.getLogger(__name__)

# Allowed status changes of a batch, by current status. A batch that failed,
# was cancelled, or whose worker died while "running" can be started again.
_TRANSITIONS: dict[BatchStatus, tuple[BatchStatus, ...]] = {
    BatchStatus.PENDING: (BatchStatus.RUNNING, BatchStatus.CANCELLED, BatchStatus.FAILED),
    BatchStatus.RUNNING: (
        BatchStatus.RUNNING,
        BatchStatus.DONE,
        BatchStatus.FAILED,
        BatchStatus.CANCELLED,
    ),
    BatchStatus.FAILED: (BatchStatus.RUNNING, BatchStatus.CANCELLED),
    BatchStatus.CANCELLED: (BatchStatus.RUNNING,),
    BatchStatus.DONE: (),
}


@dataclass(frozen=True)
class NewImage:
    """An uploaded file to record in a batch, as ``pending`` or ``rejected``."""

    position: int  # 0-based order in the upload
    file_name: str
    folder: str  # POSIX path inside the upload, "" at the top level
    status: ImageStatus
    sha256: str | None = None
    size_bytes: int | None = None
    width: int | None = None
    height: int | None = None
    format: str | None = None
    stored_path: str | None = None  # relative to DAVAE_HOME, from storage.files
    rejection_code: str | None = None  # a davae.errors code
    rejection_message: str | None = None  # its English message
    rejection_params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status == ImageStatus.PENDING and not (self.stored_path and self.sha256):
            raise ValueError(f"pending image {self.file_name!r} needs stored_path and sha256")
        if self.status == ImageStatus.REJECTED and not self.rejection_code:
            raise ValueError(f"rejected image {self.file_name!r} needs a rejection_code")
        if self.status == ImageStatus.SCORED:
            raise ValueError("images are recorded as pending or rejected, then scored")


def batch_not_found(batch_id: int) -> DavaeError:
    return DavaeError("batch_not_found", f"batch {batch_id} does not exist", batch_id=batch_id)


def get_batch(session: Session, batch_id: int) -> Batch:
    """Return a batch; raise ``batch_not_found`` if there is none with this id."""
    batch = session.get(Batch, batch_id)
    if batch is None:
        raise batch_not_found(batch_id)
    return batch


def lock_batch(session: Session, batch_id: int) -> Batch:
    """Return a batch with its row locked until the transaction ends.

    On PostgreSQL this is SELECT ... FOR UPDATE, which serialises writers that
    update the batch's counts. SQLite has one writer at a time anyway.
    """
    batch = session.scalars(
        select(Batch)
        .where(Batch.id == batch_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if batch is None:
        raise batch_not_found(batch_id)
    return batch


def create_batch(
    session: Session,
    *,
    name: str,
    model_version_id: int,
    created_by: str,
    thresholds: Mapping[str, Any] | None = None,
) -> Batch:
    """Create a pending batch for one model version and record it in the audit log.

    ``thresholds`` defaults to the model version's own thresholds.
    """
    created_by = audit.check_actor(created_by, "created_by")
    name = name.strip()
    if not name or len(name) > NAME_LENGTH:
        raise invalid_setting("batch name", name, f"1 to {NAME_LENGTH} characters")
    model = get_model_version(session, model_version_id)
    checked = validate_thresholds(thresholds if thresholds is not None else model.thresholds)
    batch = Batch(
        name=name,
        model_version_id=model_version_id,
        created_at=utc_now(),
        created_by=created_by,
        status=BatchStatus.PENDING,
        thresholds=checked,
    )
    session.add(batch)
    session.flush()
    audit.record(
        session,
        actor=created_by,
        action=AuditAction.BATCH_CREATE,
        entity_type="batch",
        entity_id=batch.id,
        batch_id=batch.id,
        details={"name": name, "model_version_id": model_version_id, "thresholds": checked},
    )
    logger.info("batch %s %r created by %s", batch.id, name, created_by)
    return batch


def list_batches(
    session: Session, *, model_version_id: int | None = None, limit: int = 100
) -> list[Batch]:
    """Return batches, newest first."""
    statement = select(Batch).order_by(Batch.id.desc()).limit(limit)
    if model_version_id is not None:
        statement = statement.where(Batch.model_version_id == model_version_id)
    return list(session.scalars(statement))


def set_batch_status(
    session: Session,
    batch_id: int,
    status: BatchStatus,
    actor: str,
    *,
    error: BaseException | None = None,
) -> Batch:
    """Move a batch to ``status`` and record the change in the audit log.

    Raises ``batch_status_conflict`` for a move the batch's current status does
    not allow, such as restarting a batch that is done. With the status
    ``failed``, ``error`` is stored: its code if it is a ``DavaeError``, and its message.
    """
    batch = lock_batch(session, batch_id)
    previous = batch.status
    if status not in _TRANSITIONS[previous]:
        raise DavaeError(
            "batch_status_conflict",
            f"batch {batch_id} is {previous.value} and cannot be set to {status.value}",
            batch_id=batch_id,
            status=previous.value,
            action=status.value,
        )
    now = utc_now()
    batch.status = status
    if status == BatchStatus.RUNNING:
        batch.started_at = batch.started_at or now
        batch.finished_at = None
        batch.error_code = batch.error_message = None
    else:
        batch.finished_at = now
    if status == BatchStatus.FAILED and error is not None:
        batch.error_code = getattr(error, "code", None)
        batch.error_message = str(error) or type(error).__name__
    audit.record(
        session,
        actor=actor,
        action=AuditAction.BATCH_STATUS,
        entity_type="batch",
        entity_id=batch_id,
        batch_id=batch_id,
        details={
            "from": previous.value,
            "to": status.value,
            "error_code": batch.error_code if status == BatchStatus.FAILED else None,
        },
    )
    session.flush()
    logger.info("batch %s: %s -> %s (%s)", batch_id, previous.value, status.value, actor)
    return batch


def record_images(session: Session, batch_id: int, images: Sequence[NewImage]) -> list[int]:
    """Insert image rows for uploaded files in one statement; return their ids in order.

    Store each original with ``FileStore.store_original`` before recording it,
    so a row never points at a missing file. The batch's image and rejected
    counts grow by what was inserted.
    """
    if not images:
        return []
    batch = lock_batch(session, batch_id)
    rows = [
        {
            "batch_id": batch_id,
            "position": image.position,
            "file_name": image.file_name,
            "folder": image.folder,
            "sha256": image.sha256,
            "size_bytes": image.size_bytes,
            "width": image.width,
            "height": image.height,
            "format": image.format,
            "stored_path": image.stored_path,
            "status": image.status,
            "rejection_code": image.rejection_code,
            "rejection_message": image.rejection_message,
            "rejection_params": image.rejection_params
            if image.status == ImageStatus.REJECTED
            else None,
            "created_at": utc_now(),
        }
        for image in images
    ]
    ids = list(
        session.scalars(insert(Image).returning(Image.id, sort_by_parameter_order=True), rows)
    )
    # The batch row is locked, so reading and writing the counts here is safe.
    batch.image_count += len(images)
    batch.rejected_count += sum(image.status == ImageStatus.REJECTED for image in images)
    session.flush()
    return ids


def next_image_position(session: Session, batch_id: int) -> int:
    """Return the upload position after the last recorded file (0 for a new batch)."""
    last = session.scalar(select(func.max(Image.position)).where(Image.batch_id == batch_id))
    return 0 if last is None else last + 1


def get_image(session: Session, image_id: int) -> Image:
    """Return one image row; raise ``image_not_found`` if there is none with this id."""
    image = session.get(Image, image_id)
    if image is None:
        raise DavaeError("image_not_found", f"image {image_id} does not exist", image_id=image_id)
    return image
