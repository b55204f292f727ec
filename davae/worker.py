"""Background worker: runs the training, scoring and evaluation jobs queued in ``storage.jobs``.

A page enqueues a job with parameters from ``davae.worker_io``; a
:class:`Worker` claims it and runs the job function of its kind from
``davae.worker_jobs``:

- ``train``: decode the normal images, train a detector, store the bundle
  and register it as a model version;
- ``score``: record every uploaded file of a batch (``pending`` or
  ``rejected``), then score the pending images in chunks with
  ``storage.scores.score_pending``, writing each scored image's display files
  once, so the Review page and the export never run the model. A resumed job
  neither records nor scores an image twice;
- ``evaluate``: with ``mode = "compare"`` the comparative study
  (``davae.study.run_study``) into ``DAVAE_HOME/studies/``; with
  ``mode = "model"`` the test-set metrics of one model version, stored with it.

Progress goes to the job row at most once per ``progress_interval_s``, apart
from phase changes, which are written at once. A separate thread sends
heartbeats, so a long step without progress reports never looks like a dead
worker. A cancel request or :meth:`Worker.stop` is
seen between training batches and between scoring chunks. Running jobs whose
heartbeat is older than ``stale_after_s`` go back to the queue, because their
worker died.

This module never imports streamlit; torch is imported only when a job runs.
Run a worker process with ``python -m davae worker``; the dashboard starts
one in a thread with :class:`BackgroundWorker`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from sqlalchemy import select

from davae.config import InputLimits
from davae.errors import DavaeError, TrainingCancelled
from davae.worker_io import UPLOADS_DIR, json_safe
from storage import jobs
from storage.db import Storage
from storage.models import Job, JobKind, JobStatus

logger = logging.getLogger(__name__)

# Images recorded per database transaction while a batch's files are recorded.
RECORD_GROUP = 64


@dataclass(frozen=True)
class WorkerSettings:
    """Timing and sizes of a worker; the defaults suit one workstation."""

    poll_interval_s: float = 1.0  # wait between looks at an empty queue
    progress_interval_s: float = 1.0  # at most one progress write per interval
    heartbeat_interval_s: float = 5.0
    stale_after_s: float = 60.0  # a running job without a heartbeat this long is re-queued
    max_attempts: int = 3  # claims of one job before a stale job fails instead
    score_chunk_size: int = 32  # images per committed scoring chunk
    display_max_side: int = 512  # pixels, longest side of the stored overlay and reconstruction


# -- running one job -----------------------------------------------------------


class JobContext:
    """Progress, heartbeat and cancellation of the job a worker is running.

    ``report`` keeps the latest progress. A background thread writes it at
    most once per ``progress_interval_s`` and sends a heartbeat in between.
    ``report(..., force=True)`` writes at once, for a phase change the next
    run must see.
    """

    def __init__(self, worker: Worker, job: Job) -> None:
        self.worker = worker
        self.job_id = job.id
        self.created_by = job.created_by
        self._cancel = threading.Event()
        self._done = threading.Event()
        self._state_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._pending: dict[str, Any] | None = None
        self._last_write = time.monotonic()
        self._thread = threading.Thread(
            target=self._keep_alive, name=f"davae-job-{job.id}-heartbeat", daemon=True
        )

    def __enter__(self) -> JobContext:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)

    @property
    def cancel_requested(self) -> bool:
        """True once the user asked to cancel, or the job is no longer this worker's."""
        return self._cancel.is_set()

    def should_cancel(self) -> bool:
        """True when the job should stop: a cancel request, or the worker is stopping."""
        return self._cancel.is_set() or self.worker.stopping

    def check_cancel(self) -> None:
        """Raise TrainingCancelled when the job should stop."""
        if self.should_cancel():
            raise TrainingCancelled()

    def report(self, progress: Mapping[str, Any], *, force: bool = False) -> None:
        """Record the job's progress (``done``, ``total``, ``phase`` and more)."""
        with self._state_lock:
            self._pending = json_safe(progress)
        if force:
            self._flush()

    def _flush(self) -> None:
        database = self.worker.storage.database
        worker_id = self.worker.worker_id
        with self._write_lock:
            with self._state_lock:
                progress, self._pending = self._pending, None
            if progress is not None:
                keep_going = database.run_write(
                    lambda s: jobs.update_progress(s, self.job_id, worker_id, progress),
                    action=f"progress of job {self.job_id}",
                )
            else:
                keep_going = database.run_write(
                    lambda s: jobs.heartbeat(s, self.job_id, worker_id),
                    action=f"heartbeat of job {self.job_id}",
                )
            self._last_write = time.monotonic()
        if not keep_going and not self._cancel.is_set():
            logger.info("job %s: cancel requested or job taken over; stopping", self.job_id)
            self._cancel.set()

    def _keep_alive(self) -> None:
        settings = self.worker.settings
        while not self._done.wait(settings.progress_interval_s):
            has_progress = self._pending is not None
            quiet_for = time.monotonic() - self._last_write
            if not has_progress and quiet_for < settings.heartbeat_interval_s:
                continue
            try:
                self._flush()
            except Exception:  # a busy database must not end the job; the next beat retries
                logger.exception("job %s: progress or heartbeat write failed", self.job_id)


# -- the worker ----------------------------------------------------------------


@dataclass
class Worker:
    """Claims queued jobs from the database and runs them one at a time."""

    storage: Storage
    settings: WorkerSettings = field(default_factory=WorkerSettings)
    worker_id: str = field(
        default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    )
    kinds: tuple[JobKind, ...] | None = None
    limits: InputLimits = field(default_factory=InputLimits)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._detectors: dict[str, Any] = {}  # bundle SHA-256 -> Detector
        self._last_recovery = -math.inf
        self.current: JobContext | None = None  # the job running now, if any

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def stop(self) -> None:
        """Ask the loop to end; a running job stops at its next cancellation check.

        A job stopped this way is left ``running`` and goes back to the queue
        once its heartbeat is stale, so a restarted worker takes it up again.
        """
        self._stop.set()

    def recover_stale_jobs(self) -> list[int]:
        """Re-queue (or fail, after ``max_attempts``) running jobs whose worker died."""
        changed = self.storage.database.run_write(
            lambda session: [
                job.id
                for job in jobs.recover_stale_jobs(
                    session,
                    timedelta(seconds=self.settings.stale_after_s),
                    actor=f"worker {self.worker_id}",
                    requeue=True,
                    max_attempts=self.settings.max_attempts,
                )
            ],
            action="recover stale jobs",
        )
        self._last_recovery = time.monotonic()
        return changed

    def run_next_job(self) -> bool:
        """Claim the oldest queued job and run it; return False when the queue is empty."""
        database = self.storage.database
        with database.read() as session:
            queued = select(Job.id).where(Job.status == JobStatus.QUEUED).limit(1)
            if session.scalar(queued) is None:
                return False
        job = database.run_write(
            lambda session: jobs.claim_next_job(session, self.worker_id, kinds=self.kinds),
            action="claim job",
        )
        if job is None:
            return False
        self._run(job)
        return True

    def run(self, *, until_idle: bool = False) -> None:
        """Run jobs until :meth:`stop`, or with ``until_idle`` until the queue is empty."""
        logger.info("worker %s started", self.worker_id)
        try:
            while not self._stop.is_set():
                if time.monotonic() - self._last_recovery >= self.settings.stale_after_s / 2:
                    self._recover_quietly()
                if self.run_next_job():
                    continue
                if until_idle:
                    break
                self._stop.wait(self.settings.poll_interval_s)
        finally:
            logger.info("worker %s stopped", self.worker_id)

    def _recover_quietly(self) -> None:
        try:
            recovered = self.recover_stale_jobs()
        except Exception:  # the database may be down for a moment; the loop tries again
            logger.exception("worker %s: stale-job recovery failed", self.worker_id)
            return
        if recovered:
            logger.warning("worker %s: jobs %s had a stale heartbeat", self.worker_id, recovered)

    def _run(self, job: Job) -> None:
        from davae.worker_jobs import JOB_HANDLERS

        handler = JOB_HANDLERS[job.kind]
        logger.info("worker %s: running job %s (%s)", self.worker_id, job.id, job.kind.value)
        with JobContext(self, job) as context:
            self.current = context
            try:
                result = handler(self, context, job)
            except TrainingCancelled:
                if not context.cancel_requested and self.stopping:
                    logger.warning(
                        "job %s interrupted by the worker's shutdown; it returns to the "
                        "queue once its heartbeat is stale",
                        job.id,
                    )
                    return
                self._finish(job, JobStatus.CANCELLED)
            except DavaeError as error:
                logger.warning("job %s failed: %s", job.id, error)
                self._finish(job, JobStatus.FAILED, error=error)
            except Exception as error:
                logger.exception("job %s failed unexpectedly", job.id)
                self._finish(job, JobStatus.FAILED, error=error)
            else:
                self._finish(job, JobStatus.DONE, result=result)
            finally:
                self.current = None

    def _finish(
        self,
        job: Job,
        status: JobStatus,
        *,
        result: dict[str, Any] | None = None,
        error: BaseException | None = None,
    ) -> None:
        if error is not None:
            # The row keeps the code and English message; the parameters let the
            # dashboard show the message in the reader's language.
            result = {"error": {"code": getattr(error, "code", None)}}
            result["error"]["params"] = json_safe(getattr(error, "params", {}))
        finished = self.storage.database.run_write(
            lambda session: jobs.finish_job(
                session, job.id, self.worker_id, status, result=json_safe(result), error=error
            ),
            action=f"finish job {job.id}",
        )
        if not finished:
            logger.warning(
                "job %s was taken from worker %s before it finished", job.id, self.worker_id
            )

    def detector_for(self, bundle_path: str, bundle_sha256: str) -> Any:
        """Load a model bundle once per worker, keyed by its SHA-256."""
        if bundle_sha256 not in self._detectors:
            from davae.bundle import load_bundle
            from davae.detector import choose_device

            detector = load_bundle(self.storage.files.resolve(bundle_path), choose_device("auto"))
            if len(self._detectors) >= 2:
                self._detectors.pop(next(iter(self._detectors)))
            self._detectors[bundle_sha256] = detector
        return self._detectors[bundle_sha256]

    def remove_uploads(self, upload_dir: str | None) -> None:
        """Delete a finished job's saved uploads; never anything outside ``uploads/``."""
        if not upload_dir:
            return
        parts = PurePosixPath(upload_dir).parts
        if len(parts) != 2 or parts[0] != UPLOADS_DIR:
            logger.warning("not removing %r: only folders directly in uploads/ are", upload_dir)
            return
        shutil.rmtree(self.storage.files.resolve(upload_dir), ignore_errors=True)


class BackgroundWorker:
    """A :class:`Worker` running in a daemon thread, as the dashboard starts one."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.thread = threading.Thread(target=self._run, name="davae-worker", daemon=True)

    def _run(self) -> None:
        try:
            self.worker.run()
        except Exception:
            logger.exception("worker %s ended with an error", self.worker.worker_id)

    def start(self) -> BackgroundWorker:
        self.thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop the loop and wait up to ``timeout_s`` for the thread to end."""
        self.worker.stop()
        self.thread.join(timeout=timeout_s)
        if self.thread.is_alive():
            logger.warning("worker %s did not stop within %.0f s", self.worker.worker_id, timeout_s)
