"""Job panels shared by the pages: finding a job, following its progress, cancelling it.

A page draws a job with a render function of its own. While the job is
queued or running, :func:`follow` draws it inside a fragment that reruns
every second, so only the panel refreshes. Once the job ends, the whole page
reruns once and draws the final state without a timer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import streamlit as st

from davae.errors import DavaeError
from storage import jobs
from storage.models import Job, JobKind, JobStatus
from ui.context import format_time, get_storage, reviewer
from ui.i18n import enum_text, error_text, show_error, t

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING)
REFRESH_SECONDS = 1.0


def load_job(job_id: int) -> Job:
    with get_storage().database.read() as session:
        return jobs.get_job(session, job_id)


def latest_job(
    kinds: Iterable[JobKind],
    *,
    batch_id: int | None = None,
    accept: Callable[[Job], bool] | None = None,
) -> Job | None:
    """Return the newest job of the given kinds (and batch) that ``accept`` allows, if any."""
    with get_storage().database.read() as session:
        recent = jobs.list_recent_jobs(session, kinds=list(kinds), batch_id=batch_id, limit=50)
    return next((job for job in recent if accept is None or accept(job)), None)


def is_active(job: Job) -> bool:
    return job.status in ACTIVE


def status_text(job: Job) -> str:
    return enum_text("common.job_status", job.status)


def error_of(job: Job) -> str:
    """Return a failed job's error in the session's language."""
    details: dict[str, Any] = (job.result or {}).get("error") or {}
    params = dict(details.get("params") or {})
    if job.error_code == "worker_lost":
        params.setdefault("job_id", job.id)
        params.setdefault("heartbeat_at", format_time(job.heartbeat_at))
    return error_text(job.error_code, params, job.error_message)


def show_outcome(job: Job) -> None:
    """Draw a finished job's failure or cancellation; nothing for a job that is done."""
    if job.status == JobStatus.FAILED:
        st.error(error_of(job), icon=":material/error:")
    elif job.status == JobStatus.CANCELLED:
        st.info(t("common.job_cancelled"), icon=":material/cancel:")


def cancel_button(job: Job, key: str) -> None:
    """Draw a button that requests cancelling ``job``, recorded under the reviewer."""
    name = reviewer()
    if job.cancel_requested:
        st.caption(t("common.cancel_requested"))
        return
    clicked = st.button(
        t("common.cancel"),
        key=key,
        icon=":material/stop_circle:",
        disabled=not name,
        help=None if name else t("common.reviewer_required"),
    )
    if clicked:
        try:
            get_storage().database.run_write(
                lambda session: jobs.request_cancel(session, job.id, name),
                action=f"cancel job {job.id}",
            )
        except DavaeError as error:
            show_error(error)
            return
        st.rerun()


def progress_fraction(job: Job) -> float:
    progress = job.progress or {}
    total = progress.get("total") or 0
    done = progress.get("done") or 0
    return min(1.0, done / total) if total else 0.0


def follow(job_id: int, render: Callable[[Job], None]) -> None:
    """Draw a job with ``render``, refreshed every second while it is queued or running."""
    _follow(job_id, render)


@st.fragment(run_every=REFRESH_SECONDS)
def _follow(job_id: int, render: Callable[[Job], None]) -> None:
    job = load_job(job_id)
    render(job)
    if not is_active(job):
        # A full rerun redraws the page without this timer.
        st.rerun(scope="app")


def show_job(job: Job, render: Callable[[Job], None]) -> None:
    """Draw a job: live while it is active, once when it has ended."""
    if is_active(job):
        follow(job.id, render)
    else:
        render(job)
