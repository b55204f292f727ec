"""The Score page: a batch uploaded, scored in the background, shown again after a refresh."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from sqlalchemy import select
from ui_helpers import REVIEWER, normal_pixels, png_bytes, wait_for_job, write_images

from davae.worker_io import path_entry, score_job_params
from storage import batches, jobs
from storage.db import Storage
from storage.models import BatchStatus, Image, JobKind, JobStatus, ModelVersion
from ui.i18n import load_catalog

EN, KO = load_catalog("en"), load_catalog("ko")


def batch_files() -> list[tuple[str, bytes, str]]:
    """Four good images (two in a ZIP with folders), one broken PNG and a text file."""
    rng = np.random.default_rng(4)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("라인A/부품_001.png", png_bytes(normal_pixels(rng)))
        zipped.writestr("라인B/부품_001.png", png_bytes(normal_pixels(rng)))
    return [
        ("검사_01.png", png_bytes(normal_pixels(rng)), "image/png"),
        ("검사_02.png", png_bytes(normal_pixels(rng)), "image/png"),
        ("lot.zip", archive.getvalue(), "application/zip"),
        ("broken.png", b"not really a png", "image/png"),
        ("notes.txt", b"text", "text/plain"),
    ]


def metrics(at) -> dict[str, str]:
    return {metric.label: metric.value for metric in at.metric}


def score_job(storage: Storage, batch_id: int):
    with storage.database.read() as session:
        return jobs.list_recent_jobs(session, kinds=[JobKind.SCORE], batch_id=batch_id)[0]


def test_page_without_models(open_app) -> None:
    at = open_app("score")
    assert [info.value for info in at.info] == [EN["score.no_models"]]


def test_score_batch_and_rejections(
    open_app, storage_handle: Storage, registered_model: ModelVersion
) -> None:
    at = open_app("score")
    assert at.selectbox(key="score_model").value == registered_model.id
    at.file_uploader(key="score_files_0").set_value(batch_files()).run()
    at.button(key="score_start").click().run()
    assert not at.exception
    batch_id = at.session_state["current_batch_id"]

    job = wait_for_job(storage_handle, score_job(storage_handle, batch_id).id)
    assert job.status == JobStatus.DONE, job.error_message
    at.run()

    shown = metrics(at)
    assert shown[EN["score.count_images"]] == "6"
    assert shown[EN["score.count_scored"]] == "4"
    assert shown[EN["score.count_rejected"]] == "2"
    rejected = at.dataframe[0].value
    assert list(rejected[EN["common.column_file"]]) == ["broken.png", "notes.txt"]
    reasons = list(rejected[EN["common.column_reason"]])
    assert reasons[0].startswith("broken.png: not a readable image")
    assert reasons[1] == (
        "notes.txt: files of type .txt are not supported. Use .png, .jpg, .jpeg, .bmp, .tif, .tiff."
    )
    with storage_handle.database.read() as session:
        names = session.execute(
            select(Image.folder, Image.file_name).order_by(Image.position)
        ).all()
        batch = batches.get_batch(session, batch_id)
    assert [tuple(row) for row in names] == [
        ("", "검사_01.png"),
        ("", "검사_02.png"),
        ("라인A", "부품_001.png"),
        ("라인B", "부품_001.png"),
        ("", "broken.png"),
        ("", "notes.txt"),
    ]
    assert (batch.status, batch.created_by) == (BatchStatus.DONE, REVIEWER)


def test_refresh_shows_batch_progress(
    open_app, storage_handle: Storage, registered_model: ModelVersion
) -> None:
    first = open_app("score")
    first.file_uploader(key="score_files_0").set_value(batch_files()).run()
    first.button(key="score_start").click().run()
    batch_id = first.session_state["current_batch_id"]
    wait_for_job(storage_handle, score_job(storage_handle, batch_id).id)

    # A new session, as after a refresh or in a new tab, shows the newest batch.
    second = open_app("score", language="ko")
    assert second.selectbox(key="score_shown_batch").value == batch_id
    assert metrics(second)[KO["score.count_scored"]] == "4"
    rejected = second.dataframe[0].value
    supported = ".png, .jpg, .jpeg, .bmp, .tif, .tiff"
    assert list(rejected[KO["common.column_reason"]])[1] == (
        f"notes.txt: .txt 형식의 파일은 지원하지 않습니다. 지원 형식: {supported}."
    )
    history = second.dataframe[1].value
    assert list(history[KO["score.column.status"]]) == [KO["common.batch_status.done"]]


def test_cancelled_batch_resumes(
    open_app, storage_handle: Storage, registered_model: ModelVersion, tmp_path: Path
) -> None:
    write_images(tmp_path / "lot", 6, seed=8)
    database = storage_handle.database
    batch = database.run_write(
        lambda session: batches.create_batch(
            session, name="lot 7", model_version_id=registered_model.id, created_by=REVIEWER
        ),
        action="create",
    )
    params = score_job_params([path_entry(tmp_path / "lot")], batch.id)
    job = database.run_write(
        lambda session: jobs.enqueue_job(
            session, JobKind.SCORE, params, REVIEWER, batch_id=batch.id
        ),
        action="enqueue",
    )
    # Cancelled while queued: the worker never starts it.
    database.run_write(
        lambda session: jobs.request_cancel(session, job.id, REVIEWER), action="cancel"
    )
    database.run_write(
        lambda session: batches.set_batch_status(
            session, batch.id, BatchStatus.CANCELLED, REVIEWER
        ),
        action="cancel batch",
    )

    at = open_app("score")
    assert any("cancelled" in info.value for info in at.info)
    at.button(key=f"score_resume_{batch.id}").click().run()
    resumed = wait_for_job(storage_handle, score_job(storage_handle, batch.id).id)
    assert resumed.id != job.id
    assert resumed.status == JobStatus.DONE, resumed.error_message
    at.run()
    assert metrics(at)[EN["score.count_scored"]] == "6"
