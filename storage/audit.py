"""The audit log: who changed what, and when.

Human labels, threshold applications, batch creation and status changes,
jobs (training runs included), model changes and exports each write one
entry in the same transaction as the change, so an entry exists exactly when
the change was committed. The auto labels that scoring writes chunk by chunk
are covered by the batch's status entries.
"""

from __future__ import annotations

import enum
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from davae.errors import invalid_setting
from storage.models import NAME_LENGTH, AuditEntry, utc_now

logger = logging.getLogger(__name__)

DEFAULT_LIMIT = 200


class AuditAction(enum.StrEnum):
    LABEL_SET = "label.set"  # a reviewer labelled an image
    THRESHOLDS_APPLY = "thresholds.apply"  # new auto labels for a batch
    BATCH_CREATE = "batch.create"
    BATCH_STATUS = "batch.status"  # running, done, failed, cancelled
    JOB_ENQUEUE = "job.enqueue"  # training, scoring or evaluation requested
    JOB_CANCEL_REQUEST = "job.cancel_request"
    JOB_FINISH = "job.finish"  # done, failed or cancelled; the status is in the details
    JOB_REQUEUE = "job.requeue"  # a stale job handed back to the queue
    MODEL_REGISTER = "model.register"
    MODEL_SET_DEFAULT = "model.set_default"
    MODEL_METRICS = "model.metrics"
    EXPORT = "export"


def check_actor(actor: str, setting: str = "actor") -> str:
    """Return ``actor`` stripped; raise ``invalid_setting`` if it is empty or too long."""
    stripped = actor.strip() if isinstance(actor, str) else ""
    if not stripped or len(stripped) > NAME_LENGTH:
        raise invalid_setting(setting, actor, f"a user name of 1 to {NAME_LENGTH} characters")
    return stripped


def record(
    session: Session,
    *,
    actor: str,
    action: AuditAction,
    entity_type: str,
    entity_id: int | None,
    details: dict[str, Any] | None = None,
    batch_id: int | None = None,
) -> AuditEntry:
    """Add one audit entry to the session's transaction and return it."""
    entry = AuditEntry(
        created_at=utc_now(),
        actor=check_actor(actor),
        action=str(action),
        entity_type=entity_type,
        entity_id=entity_id,
        batch_id=batch_id,
        details=details or {},
    )
    session.add(entry)
    session.flush()
    logger.debug("audit %s by %s on %s %s", entry.action, entry.actor, entity_type, entity_id)
    return entry


def list_entries(
    session: Session,
    *,
    batch_id: int | None = None,
    actor: str | None = None,
    action: AuditAction | str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    before_id: int | None = None,
    limit: int = DEFAULT_LIMIT,
) -> list[AuditEntry]:
    """Return audit entries, newest first, matching every filter given.

    ``since`` is inclusive and ``until`` exclusive. For the next page, pass
    the smallest id of the previous page as ``before_id``.
    """
    statement = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
    if batch_id is not None:
        statement = statement.where(AuditEntry.batch_id == batch_id)
    if actor is not None:
        statement = statement.where(AuditEntry.actor == actor)
    if action is not None:
        statement = statement.where(AuditEntry.action == str(action))
    if since is not None:
        statement = statement.where(AuditEntry.created_at >= since)
    if until is not None:
        statement = statement.where(AuditEntry.created_at < until)
    if before_id is not None:
        statement = statement.where(AuditEntry.id < before_id)
    return list(session.scalars(statement))


def list_actors(session: Session, *, batch_id: int | None = None) -> list[str]:
    """Return the distinct actors in the audit log, sorted, for a filter menu."""
    statement = select(AuditEntry.actor).distinct().order_by(AuditEntry.actor)
    if batch_id is not None:
        statement = statement.where(AuditEntry.batch_id == batch_id)
    return list(session.scalars(statement))
