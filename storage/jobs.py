"""The job queue: long work that survives page refreshes and is run by background workers.

A page enqueues a job; a worker claims it, reports progress and a heartbeat,
and finishes or fails it. Claiming is atomic, so two workers never run the
same job: PostgreSQL uses SELECT ... FOR UPDATE SKIP LOCKED, SQLite an UPDATE
guarded by ``status = 'queued'``. Calls that change a running job take the
worker's id and return False once the job is no longer that worker's (it was
cancelled or handed to another worker after its heartbeat went stale).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from davae.errors import DavaeError
from storage import audit
from storage.audit import AuditAction
from storage.models import Job, JobKind, JobStatus, utc_now

logger = logging.getLogger(__name__)

FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


def get_job(session: Session, job_id: int) -> Job:
    """Return a job; raise ``job_not_found`` if there is none with this id."""
    job = session.get(Job, job_id)
    if job is None:
        raise DavaeError("job_not_found", f"job {job_id} does not exist", job_id=job_id)
    return job


def enqueue_job(
    session: Session,
    kind: JobKind,
    params: Mapping[str, Any],
    created_by: str,
    *,
    batch_id: int | None = None,
    model_version_id: int | None = None,
) -> Job:
    """Add a queued job and its audit entry; ``params`` must be JSON-serialisable."""
    created_by = audit.check_actor(created_by, "created_by")
    job = Job(
        kind=JobKind(kind),
        status=JobStatus.QUEUED,
        params=dict(params),
        progress={},
        created_by=created_by,
        created_at=utc_now(),
        cancel_requested=False,
        attempts=0,
        batch_id=batch_id,
        model_version_id=model_version_id,
    )
    session.add(job)
    session.flush()
    audit.record(
        session,
        actor=created_by,
        action=AuditAction.JOB_ENQUEUE,
        entity_type="job",
        entity_id=job.id,
        batch_id=batch_id,
        details={
            "kind": job.kind.value,
            "params": job.params,
            "model_version_id": model_version_id,
        },
    )
    logger.info("job %s (%s) queued by %s", job.id, job.kind.value, created_by)
    return job


def claim_next_job(
    session: Session, worker_id: str, *, kinds: Iterable[JobKind] | None = None
) -> Job | None:
    """Mark the oldest queued job as running for ``worker_id`` and return it, or None."""
    candidates = select(Job.id).where(Job.status == JobStatus.QUEUED).order_by(Job.id)
    if kinds is not None:
        candidates = candidates.where(Job.kind.in_([JobKind(kind) for kind in kinds]))

    if session.get_bind().dialect.name == "postgresql":
        job_id = session.scalar(candidates.limit(1).with_for_update(skip_locked=True))
        return None if job_id is None else _mark_claimed(session, job_id, worker_id)

    # Without SKIP LOCKED: try candidates in order; the guard in the UPDATE
    # makes a claim fail harmlessly when another worker took the job first.
    for job_id in session.scalars(candidates.limit(10)).all():
        claimed = _mark_claimed(session, job_id, worker_id)
        if claimed is not None:
            return claimed
    return None


def _mark_claimed(session: Session, job_id: int, worker_id: str) -> Job | None:
    now = utc_now()
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
        .values(
            status=JobStatus.RUNNING,
            worker_id=worker_id,
            started_at=now,
            heartbeat_at=now,
            attempts=Job.attempts + 1,
        ),
        execution_options={"synchronize_session": False},
    )
    if result.rowcount != 1:
        return None
    job = session.scalars(
        select(Job).where(Job.id == job_id).execution_options(populate_existing=True)
    ).one()
    logger.info("job %s (%s) claimed by worker %s", job_id, job.kind.value, worker_id)
    return job


def _owned(job_id: int, worker_id: str) -> Any:
    return (Job.id == job_id) & (Job.status == JobStatus.RUNNING) & (Job.worker_id == worker_id)


def update_progress(
    session: Session, job_id: int, worker_id: str, progress: Mapping[str, Any]
) -> bool:
    """Store a running job's progress and heartbeat.

    ``progress`` contains ``done``, ``total`` and ``message`` and anything else
    the page shows. Returns False when the worker should stop: the job is no
    longer its own, or a cancel was requested.
    """
    result = session.execute(
        update(Job)
        .where(_owned(job_id, worker_id))
        .values(progress=dict(progress), heartbeat_at=utc_now())
        .returning(Job.cancel_requested),
        execution_options={"synchronize_session": False},
    ).first()
    return result is not None and not result.cancel_requested


def heartbeat(session: Session, job_id: int, worker_id: str) -> bool:
    """Refresh a running job's heartbeat; return False when the worker should stop."""
    result = session.execute(
        update(Job)
        .where(_owned(job_id, worker_id))
        .values(heartbeat_at=utc_now())
        .returning(Job.cancel_requested),
        execution_options={"synchronize_session": False},
    ).first()
    return result is not None and not result.cancel_requested


def request_cancel(session: Session, job_id: int, actor: str) -> Job:
    """Cancel a queued job at once, or ask the worker of a running job to stop.

    A finished job is returned unchanged.
    """
    job = get_job(session, job_id)
    if job.status in FINISHED:
        return job
    if job.status == JobStatus.QUEUED:
        job.status = JobStatus.CANCELLED
        job.finished_at = utc_now()
    job.cancel_requested = True
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=AuditAction.JOB_CANCEL_REQUEST,
        entity_type="job",
        entity_id=job.id,
        batch_id=job.batch_id,
        details={"kind": job.kind.value, "status": job.status.value},
    )
    return job


def finish_job(
    session: Session,
    job_id: int,
    worker_id: str,
    status: JobStatus,
    *,
    result: Mapping[str, Any] | None = None,
    error: BaseException | None = None,
) -> bool:
    """End a running job as done, failed or cancelled; return False if it was not the worker's.

    With ``failed``, ``error`` is stored: its code if it is a ``DavaeError``, and its message.
    """
    if status not in FINISHED:
        raise ValueError(f"finish_job needs one of {[s.value for s in FINISHED]}, got {status!r}")
    job = session.scalars(
        select(Job)
        .where(_owned(job_id, worker_id))
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if job is None:
        logger.warning("job %s is no longer run by worker %s; result dropped", job_id, worker_id)
        return False
    job.status = status
    job.finished_at = utc_now()
    job.result = dict(result) if result is not None else None
    if error is not None:
        job.error_code = getattr(error, "code", None)
        job.error_message = str(error) or type(error).__name__
    session.flush()
    audit.record(
        session,
        actor=job.created_by,
        action=AuditAction.JOB_FINISH,
        entity_type="job",
        entity_id=job.id,
        batch_id=job.batch_id,
        details={
            "kind": job.kind.value,
            "status": status.value,
            "worker_id": worker_id,
            "error_code": job.error_code,
        },
    )
    logger.info("job %s %s (worker %s)", job_id, status.value, worker_id)
    return True


def list_recent_jobs(
    session: Session,
    *,
    limit: int = 50,
    kinds: Iterable[JobKind] | None = None,
    statuses: Iterable[JobStatus] | None = None,
    batch_id: int | None = None,
) -> list[Job]:
    """Return jobs, newest first."""
    statement = select(Job).order_by(Job.id.desc()).limit(limit)
    if kinds is not None:
        statement = statement.where(Job.kind.in_([JobKind(kind) for kind in kinds]))
    if statuses is not None:
        statement = statement.where(Job.status.in_([JobStatus(status) for status in statuses]))
    if batch_id is not None:
        statement = statement.where(Job.batch_id == batch_id)
    return list(session.scalars(statement))


def find_stale_jobs(
    session: Session, older_than: timedelta, *, now: datetime | None = None
) -> list[Job]:
    """Return running jobs whose heartbeat is older than ``older_than``: their worker died."""
    return list(session.scalars(_stale_jobs_query(older_than, now)))


def _stale_jobs_query(older_than: timedelta, now: datetime | None) -> Any:
    cutoff = (now or utc_now()) - older_than
    return (
        select(Job)
        .where(Job.status == JobStatus.RUNNING, Job.heartbeat_at < cutoff)
        .order_by(Job.id)
    )


def recover_stale_jobs(
    session: Session,
    older_than: timedelta,
    actor: str,
    *,
    requeue: bool,
    max_attempts: int = 3,
    now: datetime | None = None,
) -> list[Job]:
    """Fail or re-queue the running jobs whose worker stopped sending heartbeats.

    With ``requeue``, a job goes back to the queue unless it was cancelled or
    already claimed ``max_attempts`` times; otherwise it fails with ``worker_lost``.
    Returns the jobs changed.
    """
    # Locking the rows (PostgreSQL) makes a heartbeat that commits first win:
    # the row is checked again after the lock and no longer counts as stale.
    stale = _stale_jobs_query(older_than, now).with_for_update(skip_locked=True)
    changed = []
    for job in session.scalars(stale.execution_options(populate_existing=True)).all():
        lost_heartbeat = job.heartbeat_at.isoformat() if job.heartbeat_at else ""
        if requeue and not job.cancel_requested and job.attempts < max_attempts:
            job.status = JobStatus.QUEUED
            job.worker_id = None
            job.started_at = job.heartbeat_at = None
            action = AuditAction.JOB_REQUEUE
        else:
            job.status = JobStatus.CANCELLED if job.cancel_requested else JobStatus.FAILED
            job.finished_at = utc_now()
            if job.status == JobStatus.FAILED:
                job.error_code = "worker_lost"
                job.error_message = (
                    f"job {job.id} stopped: its worker sent no heartbeat since {lost_heartbeat}"
                )
            action = AuditAction.JOB_FINISH
        session.flush()
        audit.record(
            session,
            actor=actor,
            action=action,
            entity_type="job",
            entity_id=job.id,
            batch_id=job.batch_id,
            details={
                "kind": job.kind.value,
                "status": job.status.value,
                "last_heartbeat": lost_heartbeat,
                "attempts": job.attempts,
            },
        )
        logger.warning(
            "stale job %s (heartbeat %s) -> %s", job.id, lost_heartbeat, job.status.value
        )
        changed.append(job)
    return changed
