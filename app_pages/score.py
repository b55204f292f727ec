"""The Score page: choose a model, upload a batch, follow its scoring, see rejected files.

The batch and its files are saved as the job goes, so a refresh or a closed
tab loses nothing: the page shows the newest batch and its progress again.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
import streamlit as st
from sqlalchemy import select

from davae.errors import DavaeError
from davae.worker_io import score_job_params
from storage import batches, jobs, registry
from storage.models import Batch, BatchStatus, Image, ImageStatus, Job, JobKind, ModelVersion
from ui import uploads
from ui.context import CURRENT_BATCH_KEY, format_time, get_storage, page_header, reviewer
from ui.i18n import enum_text, error_text, option_labels, show_error, t
from ui.jobs import cancel_button, error_of, is_active, latest_job, progress_fraction, show_job

UPLOADER_KEY = "score_uploader_round"  # a new uploader after each start empties it
SHOWN_KEY = "score_shown_batch"
RECENT_BATCHES = 20


def model_label(model: ModelVersion) -> str:
    label = t("score.model_option", name=model.name, version=model.version)
    return label + (" " + t("score.default_marker") if model.is_default else "")


def start_form(models: list[ModelVersion]) -> None:
    """Draw the new-batch form and start a scoring job when asked."""
    st.subheader(t("score.section_new"))
    by_id = {model.id: model for model in models}
    default = next((model.id for model in models if model.is_default), models[0].id)
    if st.session_state.get("score_model") not in by_id:
        st.session_state["score_model"] = default
    model_id = st.selectbox(
        t("score.model"),
        list(by_id),
        format_func=option_labels(by_id, lambda mid: model_label(by_id[mid])),
        key="score_model",
    )
    if "score_batch_name" not in st.session_state:
        stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
        st.session_state["score_batch_name"] = t("score.default_batch_name", time=stamp)
    st.text_input(t("score.batch_name"), key="score_batch_name", max_chars=200)

    source = uploads.source_selector("score_source")
    files, folder = [], ""
    if source == uploads.SOURCE_UPLOAD:
        round_number = st.session_state.setdefault(UPLOADER_KEY, 0)
        files = uploads.file_uploader("score.upload_label", f"score_files_{round_number}")
    else:
        folder = uploads.folder_input("score.folder_label", "score_folder")

    name = reviewer()
    has_input = bool(files) if source == uploads.SOURCE_UPLOAD else bool(folder)
    if not name:
        st.warning(t("common.reviewer_required"), icon=":material/person:")
    clicked = st.button(
        t("score.start"),
        type="primary",
        icon=":material/play_arrow:",
        key="score_start",
        disabled=not (name and has_input and st.session_state["score_batch_name"].strip()),
    )
    if clicked:
        start_batch(model_id, source, files, folder)


def start_batch(model_id: int, source: str, files: list, folder: str) -> None:
    """Save the uploads, then create the batch and its scoring job in one transaction."""
    storage = get_storage()
    name = reviewer()
    batch_name = st.session_state["score_batch_name"].strip()
    try:
        upload_dir, inputs = uploads.job_inputs(storage, source, files, folder)

        def create(session: Any) -> int:
            batch = batches.create_batch(
                session, name=batch_name, model_version_id=model_id, created_by=name
            )
            params = score_job_params(inputs, batch.id, upload_dir=upload_dir)
            jobs.enqueue_job(
                session,
                JobKind.SCORE,
                params,
                name,
                batch_id=batch.id,
                model_version_id=model_id,
            )
            return batch.id

        batch_id = storage.database.run_write(create, action="create a batch")
    except DavaeError as error:
        show_error(error)
        return
    st.session_state[CURRENT_BATCH_KEY] = st.session_state[SHOWN_KEY] = batch_id
    st.session_state[UPLOADER_KEY] = st.session_state.get(UPLOADER_KEY, 0) + 1
    del st.session_state["score_batch_name"]
    st.rerun()


def rejected_files(batch_id: int) -> list[dict[str, Any]]:
    """Return the batch's rejected files in upload order, as job listings have them."""
    statement = (
        select(
            Image.file_name,
            Image.folder,
            Image.rejection_code,
            Image.rejection_message,
            Image.rejection_params,
        )
        .where(Image.batch_id == batch_id, Image.status == ImageStatus.REJECTED)
        .order_by(Image.position)
        .limit(500)
    )
    with get_storage().database.read() as session:
        rows = session.execute(statement).all()
    return [
        {"name": name, "folder": folder, "code": code, "message": message, "params": params}
        for name, folder, code, message, params in rows
    ]


def progress_text(batch: Batch, job: Job | None) -> str:
    progress = (job.progress if job is not None else None) or {}
    if job is not None and job.status.value == "queued":
        return t("common.job_queued")
    if progress.get("phase") == "recording":
        return t("score.progress_recording", done=progress.get("done", 0))
    text = t(
        "score.progress_scoring",
        done=f"{batch.scored_count + batch.rejected_count:,}",
        total=f"{batch.image_count:,}",
    )
    speed = progress.get("images_per_second")
    if isinstance(speed, int | float) and speed > 0:
        text += " · " + t("score.speed", speed=f"{speed:.1f}")
    return text


def render_batch(batch_id: int, job: Job | None) -> None:
    """Draw one batch: status, progress, counts, rejected files, and what can be done next."""
    with get_storage().database.read() as session:
        batch = batches.get_batch(session, batch_id)
    st.subheader(t("score.batch_title", batch_id=batch.id, name=batch.name))
    st.caption(
        t(
            "score.batch_caption",
            status=enum_text("common.batch_status", batch.status),
            created_by=batch.created_by,
            created_at=format_time(batch.created_at),
        )
    )
    active = job is not None and is_active(job)
    if active:
        fraction = (
            progress_fraction(job)
            if batch.image_count == 0
            else ((batch.scored_count + batch.rejected_count) / batch.image_count)
        )
        st.progress(min(1.0, fraction), text=progress_text(batch, job))
        cancel_button(job, key=f"score_cancel_{job.id}")

    columns = st.columns(4)
    columns[0].metric(t("score.count_images"), f"{batch.image_count:,}")
    columns[1].metric(t("score.count_scored"), f"{batch.scored_count:,}")
    columns[2].metric(t("score.count_rejected"), f"{batch.rejected_count:,}")
    columns[3].metric(t("score.count_anomalous"), f"{batch.anomaly_count:,}")

    if batch.status == BatchStatus.FAILED:
        if job is not None and job.error_code:
            st.error(error_of(job), icon=":material/error:")
        else:
            st.error(error_text(batch.error_code, {}, batch.error_message))
    if not active and batch.status != BatchStatus.DONE and job is not None:
        resume_button(batch, job)

    progress = (
        (job.result if job is not None and job.result else None)
        or (job.progress if job is not None else None)
        or {}
    )
    uploads.show_listed_files(
        rejected_files(batch.id),
        progress.get("ignored", []),
        rejected_count=batch.rejected_count,
    )
    if batch.scored_count:
        st.page_link(
            "app_pages/review.py", label=t("score.open_review"), icon=":material/fact_check:"
        )


def resume_button(batch: Batch, job: Job) -> None:
    """Offer to start a stopped batch again; its recorded and scored images are kept."""
    st.info(t("score.stopped", status=enum_text("common.batch_status", batch.status)))
    name = reviewer()
    if not st.button(
        t("score.resume"),
        key=f"score_resume_{batch.id}",
        icon=":material/replay:",
        disabled=not name or "inputs" not in (job.params or {}),
    ):
        return
    params = score_job_params(
        job.params["inputs"], batch.id, upload_dir=job.params.get("upload_dir")
    )
    try:
        get_storage().database.run_write(
            lambda session: jobs.enqueue_job(
                session,
                JobKind.SCORE,
                params,
                name,
                batch_id=batch.id,
                model_version_id=batch.model_version_id,
            ),
            action=f"resume batch {batch.id}",
        )
    except DavaeError as error:
        show_error(error)
        return
    st.rerun()


def batch_panel(recent: list[Batch]) -> None:
    """Draw the chosen batch (the session's current one, else the newest) with live progress."""
    ids = [batch.id for batch in recent]
    names = {batch.id: batch.name for batch in recent}
    current = st.session_state.get(CURRENT_BATCH_KEY)
    if st.session_state.get(SHOWN_KEY) not in ids:
        st.session_state[SHOWN_KEY] = current if current in ids else ids[0]
    chosen = st.selectbox(
        t("score.shown_batch"),
        ids,
        format_func=option_labels(
            ids, lambda bid: t("score.batch_option", batch_id=bid, name=names[bid])
        ),
        key=SHOWN_KEY,
    )
    st.session_state[CURRENT_BATCH_KEY] = chosen
    job = latest_job([JobKind.SCORE], batch_id=chosen)
    if job is None:
        render_batch(chosen, None)
    else:
        show_job(job, lambda live: render_batch(chosen, live))


def batches_table(recent: list[Batch], models: dict[int, ModelVersion]) -> None:
    st.subheader(t("score.section_recent"))
    rows = [
        {
            t("score.column.id"): batch.id,
            t("score.column.name"): batch.name,
            t("score.column.model"): model_label(models[batch.model_version_id])
            if batch.model_version_id in models
            else batch.model_version_id,
            t("score.column.created_at"): format_time(batch.created_at),
            t("score.column.created_by"): batch.created_by,
            t("score.column.status"): enum_text("common.batch_status", batch.status),
            t("score.column.images"): batch.image_count,
            t("score.column.scored"): batch.scored_count,
            t("score.column.rejected"): batch.rejected_count,
            t("score.column.anomalous"): batch.anomaly_count,
        }
        for batch in recent
    ]
    st.dataframe(pd.DataFrame(rows), hide_index=True)


page_header("score")
with get_storage().database.read() as session:
    model_list = registry.list_model_versions(session)
    recent_batches = batches.list_batches(session, limit=RECENT_BATCHES)
if not model_list:
    st.info(t("score.no_models"), icon=":material/info:")
    st.page_link("app_pages/train.py", label=t("score.go_train"), icon=":material/model_training:")
    st.stop()

start_form(model_list)
if recent_batches:
    st.divider()
    batch_panel(recent_batches)
    st.divider()
    batches_table(recent_batches, {model.id: model for model in model_list})
