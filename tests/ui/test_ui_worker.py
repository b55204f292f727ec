"""The background worker: training, scoring with resume, cancelling, stale jobs, evaluation."""

from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import func, select, update
from ui_helpers import REVIEWER, ROOT, png_bytes, tiny_config, wait_for, write_images, write_mvtec

import davae.worker_jobs
from davae.config import DetectorConfig
from davae.study_report import load_study
from davae.worker import Worker, WorkerSettings
from davae.worker_io import (
    compare_job_params,
    display_files,
    model_evaluation_params,
    new_study_dir,
    new_upload_dir,
    path_entry,
    score_job_params,
    train_job_params,
    upload_entry,
)
from storage import audit, batches, jobs, registry
from storage.db import Storage
from storage.models import (
    BatchStatus,
    Image,
    ImageStatus,
    Job,
    JobKind,
    JobStatus,
    ModelVersion,
    Score,
    utc_now,
)

FAST = WorkerSettings(poll_interval_s=0.05, progress_interval_s=0.05, heartbeat_interval_s=0.2)


def enqueue(storage: Storage, kind: JobKind, params: dict[str, Any], **ids: Any) -> int:
    job = storage.database.run_write(
        lambda session: jobs.enqueue_job(session, kind, params, REVIEWER, **ids),
        action="enqueue a test job",
    )
    return job.id


def load_job(storage: Storage, job_id: int) -> Job:
    with storage.database.read() as session:
        return jobs.get_job(session, job_id)


def save_uploads(storage: Storage, files: dict[str, bytes]) -> tuple[str, list[dict[str, str]]]:
    """Save files as the Score page does: uploads/<uuid>/<index><ext>, names kept in the entry."""
    upload_dir = new_upload_dir()
    entries = []
    for index, (name, data) in enumerate(files.items()):
        relative = f"{upload_dir}/{index:05d}{Path(name).suffix}"
        path = storage.files.resolve(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        entries.append(upload_entry(relative, name))
    return upload_dir, entries


def batch_with_job(
    storage: Storage, model: ModelVersion, files: dict[str, bytes]
) -> tuple[int, int, str]:
    upload_dir, entries = save_uploads(storage, files)
    batch = storage.database.run_write(
        lambda session: batches.create_batch(
            session, name="line A", model_version_id=model.id, created_by=REVIEWER
        ),
        action="create a test batch",
    )
    params = score_job_params(entries, batch.id, upload_dir=upload_dir)
    job_id = enqueue(storage, JobKind.SCORE, params, batch_id=batch.id)
    return batch.id, job_id, upload_dir


def good_images(count: int, seed: int = 3) -> dict[str, bytes]:
    rng = np.random.default_rng(seed)
    from ui_helpers import normal_pixels

    return {f"부품_{index:02d}.png": png_bytes(normal_pixels(rng)) for index in range(count)}


def test_train_job_registers_model(storage_handle: Storage, tmp_path: Path) -> None:
    folder = tmp_path / "normals"
    write_images(folder, 20)
    (folder / "notes.txt").write_text("not an image")
    config = tiny_config(train__epochs=1)
    params = train_job_params([path_entry(folder)], config.to_dict(), "needles")
    job_id = enqueue(storage_handle, JobKind.TRAIN, params)

    Worker(storage_handle, FAST).run(until_idle=True)

    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.DONE, job.error_message
    with storage_handle.database.read() as session:
        model = registry.get_model_version(session, job.result["model_version_id"])
        actions = [entry.action for entry in audit.list_entries(session, actor=REVIEWER)]
    assert (model.name, model.version, model.is_default) == ("needles", 1, True)
    # JSON stores tuples as lists, so compare the configurations, not the dicts.
    assert DetectorConfig.from_dict(model.config) == config
    assert model.thresholds["recon"] == job.result["thresholds"]["recon"] > 0
    assert storage_handle.files.resolve(model.bundle_path).is_file()
    assert len(job.result["history"]) == 1
    assert len(job.result["calibration"]["recon_max"]) >= 2
    assert job.result["image_count"] == 20
    assert [(f["name"], f["code"]) for f in job.result["rejected"]] == [
        ("notes.txt", "unsupported_type")
    ]
    assert "model.register" in actions
    assert "job.finish" in actions


def test_train_job_too_few_images_fails(storage_handle: Storage, tmp_path: Path) -> None:
    write_images(tmp_path / "few", 3)
    params = train_job_params([path_entry(tmp_path / "few")], tiny_config().to_dict(), "needles")
    job_id = enqueue(storage_handle, JobKind.TRAIN, params)

    Worker(storage_handle, FAST).run(until_idle=True)

    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.FAILED
    assert job.error_code == "too_few_images"
    assert job.result["error"] == {"code": "too_few_images", "params": {"count": 3, "minimum": 10}}


def test_score_job_records_and_scores(
    storage_handle: Storage, registered_model: ModelVersion
) -> None:
    files = {**good_images(5), "broken.png": b"not a png", "notes.txt": b"text"}
    batch_id, job_id, upload_dir = batch_with_job(storage_handle, registered_model, files)

    Worker(storage_handle, FAST).run(until_idle=True)

    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.DONE, job.error_message
    with storage_handle.database.read() as session:
        batch = batches.get_batch(session, batch_id)
        images = session.scalars(select(Image).order_by(Image.position)).all()
        scores = session.scalars(select(Score)).all()
    assert batch.status == BatchStatus.DONE
    assert (batch.image_count, batch.scored_count, batch.rejected_count) == (7, 5, 2)
    assert [image.file_name for image in images] == list(files)
    rejected = {image.file_name: image.rejection_code for image in images if image.rejection_code}
    assert rejected == {"broken.png": "not_an_image", "notes.txt": "unsupported_type"}
    assert len(scores) == 5
    for score in scores:
        paths = display_files(score.heatmap_path)
        for relative in paths:
            assert storage_handle.files.resolve(relative).is_file(), relative
        error_map = np.load(storage_handle.files.resolve(paths.error_map))
        assert error_map.dtype == np.float16
    assert not storage_handle.files.resolve(upload_dir).exists()


def test_score_job_resumes_without_rescoring(
    storage_handle: Storage, registered_model: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = good_images(10, seed=5)
    batch_id, job_id, _ = batch_with_job(storage_handle, registered_model, files)
    settings = WorkerSettings(
        poll_interval_s=0.05, progress_interval_s=0.05, stale_after_s=0.0, score_chunk_size=4
    )
    first = Worker(storage_handle, settings)
    written: list[str] = []
    real_write = davae.worker_jobs.write_display_files

    def write_and_count(storage: Storage, model_id: int, sha: str, *args: Any) -> str:
        written.append(sha)
        if len(written) == 4:
            first.stop()  # the first worker dies after its first chunk
        return real_write(storage, model_id, sha, *args)

    monkeypatch.setattr(davae.worker_jobs, "write_display_files", write_and_count)
    assert first.run_next_job()
    with storage_handle.database.read() as session:
        assert batches.get_batch(session, batch_id).scored_count == 4
    assert load_job(storage_handle, job_id).status == JobStatus.RUNNING

    second = Worker(storage_handle, settings)
    assert second.recover_stale_jobs() == [job_id]
    second.run(until_idle=True)

    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.DONE, job.error_message
    assert job.attempts == 2
    with storage_handle.database.read() as session:
        image_count = session.scalar(select(func.count(Image.id)))
        score_count = session.scalar(select(func.count(Score.id)))
        batch = batches.get_batch(session, batch_id)
    assert image_count == 10  # no file recorded twice
    assert score_count == 10
    assert batch.scored_count == 10
    assert len(written) == 10  # the first chunk was not scored again


def test_cancel_stops_running_training(storage_handle: Storage, tmp_path: Path) -> None:
    write_images(tmp_path / "normals", 20)
    config = tiny_config(train__epochs=5000, train__patience=5000)
    params = train_job_params([path_entry(tmp_path / "normals")], config.to_dict(), "long")
    job_id = enqueue(storage_handle, JobKind.TRAIN, params)
    worker = Worker(storage_handle, FAST)
    thread = threading.Thread(target=worker.run, kwargs={"until_idle": True})
    thread.start()
    try:
        wait_for(lambda: (load_job(storage_handle, job_id).progress or {}).get("history"))
        storage_handle.database.run_write(
            lambda session: jobs.request_cancel(session, job_id, REVIEWER), action="cancel"
        )
        thread.join(timeout=120)
    finally:
        worker.stop()
        thread.join(timeout=120)
    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.CANCELLED
    with storage_handle.database.read() as session:
        assert registry.list_model_versions(session) == []


def test_cancel_during_scoring_cancels_batch(
    storage_handle: Storage, registered_model: ModelVersion, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id, job_id, upload_dir = batch_with_job(
        storage_handle, registered_model, good_images(8, seed=9)
    )
    settings = WorkerSettings(poll_interval_s=0.05, progress_interval_s=0.05, score_chunk_size=2)
    worker = Worker(storage_handle, settings)
    real_write = davae.worker_jobs.write_display_files

    def write_then_cancel(storage: Storage, *args: Any) -> str:
        storage.database.run_write(
            lambda session: jobs.request_cancel(session, job_id, REVIEWER), action="cancel"
        )
        wait_for(lambda: worker.current.cancel_requested)  # the heartbeat thread saw it
        return real_write(storage, *args)

    monkeypatch.setattr(davae.worker_jobs, "write_display_files", write_then_cancel)
    worker.run(until_idle=True)

    assert load_job(storage_handle, job_id).status == JobStatus.CANCELLED
    with storage_handle.database.read() as session:
        batch = batches.get_batch(session, batch_id)
    assert batch.status == BatchStatus.CANCELLED
    assert batch.scored_count == 2  # the chunk in progress is kept, no other is scored
    assert storage_handle.files.resolve(upload_dir).exists()  # kept for a resume


def test_stale_job_requeued_at_start(storage_handle: Storage, tmp_path: Path) -> None:
    write_images(tmp_path / "normals", 12)
    params = train_job_params(
        [path_entry(tmp_path / "normals")], tiny_config(train__epochs=1).to_dict(), "parts"
    )
    job_id = enqueue(storage_handle, JobKind.TRAIN, params)
    database = storage_handle.database
    database.run_write(lambda session: jobs.claim_next_job(session, "dead worker"), action="claim")
    long_ago = utc_now() - timedelta(minutes=10)
    database.run_write(
        lambda session: session.execute(
            update(Job).where(Job.id == job_id).values(heartbeat_at=long_ago)
        ),
        action="age the heartbeat",
    )

    Worker(storage_handle, FAST).run(until_idle=True)

    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.DONE, job.error_message
    assert job.worker_id != "dead worker"
    assert job.attempts == 2
    with database.read() as session:
        requeues = audit.list_entries(session, action=audit.AuditAction.JOB_REQUEUE)
    assert [entry.entity_id for entry in requeues] == [job_id]


def test_evaluate_job_stores_metrics(
    storage_handle: Storage, registered_model: ModelVersion, tmp_path: Path
) -> None:
    dataset = write_mvtec(tmp_path / "parts")
    params = model_evaluation_params(str(dataset), registered_model.id)
    job_id = enqueue(storage_handle, JobKind.EVALUATE, params, model_version_id=registered_model.id)

    Worker(storage_handle, FAST).run(until_idle=True)

    assert load_job(storage_handle, job_id).status == JobStatus.DONE
    with storage_handle.database.read() as session:
        metrics = registry.get_model_version(session, registered_model.id).metrics
    assert metrics["counts"] == {"test_good": 6, "test_anomalous": 8, "rejected": 0}
    assert 0.0 <= metrics["combined"]["image_auroc"] <= 1.0
    assert set(metrics["per_class"]) == {"square", "spot"}


def test_compare_job_writes_study(storage_handle: Storage, tmp_path: Path) -> None:
    dataset = write_mvtec(tmp_path / "parts")
    out_dir = new_study_dir("parts")
    settings = {"quick": True, "epochs": 1, "ablation": False, "imbalance": False}
    job_id = enqueue(
        storage_handle,
        JobKind.EVALUATE,
        compare_job_params(str(dataset), out_dir, settings=settings),
    )

    Worker(storage_handle, FAST).run(until_idle=True)

    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.DONE, job.error_message
    assert job.result["study_dir"] == out_dir
    result = load_study(storage_handle.files.resolve(out_dir))
    assert "da_vae" in set(result.rows("main")["method"])


def test_missing_dataset_fails_with_code(storage_handle: Storage, tmp_path: Path) -> None:
    params = compare_job_params(str(tmp_path / "nowhere"), new_study_dir("x"))
    job_id = enqueue(storage_handle, JobKind.EVALUATE, params)

    Worker(storage_handle, FAST).run(until_idle=True)

    job = load_job(storage_handle, job_id)
    assert job.status == JobStatus.FAILED
    assert job.error_code == "dataset_layout"
    assert job.result["error"]["code"] == "dataset_layout"


def test_image_status_counts_match(storage_handle: Storage, registered_model: ModelVersion) -> None:
    batch_id, _, _ = batch_with_job(storage_handle, registered_model, good_images(3, seed=1))
    Worker(storage_handle, FAST).run(until_idle=True)
    with storage_handle.database.read() as session:
        statuses = session.scalars(select(Image.status).where(Image.batch_id == batch_id)).all()
    assert statuses == [ImageStatus.SCORED] * 3


def test_worker_command_runs_queue(storage_handle: Storage, tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    write_images(tmp_path / "normals", 12)
    params = train_job_params(
        [path_entry(tmp_path / "normals")], tiny_config(train__epochs=1).to_dict(), "cli"
    )
    job_id = enqueue(storage_handle, JobKind.TRAIN, params)
    env = {**os.environ, "DAVAE_HOME": str(storage_handle.settings.home), "OMP_NUM_THREADS": "1"}

    finished = subprocess.run(
        [sys.executable, "-m", "davae", "worker", "--once", "--poll", "0.1"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert finished.returncode == 0, finished.stderr
    assert "started" in finished.stderr
    assert load_job(storage_handle, job_id).status == JobStatus.DONE
