"""Every page in Korean shows Korean text and no English outside the allowed terms and data.

One data directory is filled through the real worker (a trained model, a
scored batch with rejected files, an evaluated model, a finished study),
so each page shows its tables, charts and messages, not only empty states.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from ui_helpers import (
    english_words,
    normal_pixels,
    png_bytes,
    tiny_config,
    visible_texts,
    write_images,
    write_mvtec,
)

from davae.worker import Worker, WorkerSettings
from davae.worker_io import (
    compare_job_params,
    model_evaluation_params,
    new_study_dir,
    new_upload_dir,
    path_entry,
    score_job_params,
    train_job_params,
    upload_entry,
)
from storage import batches, jobs, registry
from storage.db import Storage
from storage.models import JobKind
from ui.i18n import load_catalog

PAGES = ("train", "score", "review", "export", "models", "evaluate", "logs")
HANGUL = re.compile(r"[\uac00-\ud7a3]")
FILE_NAMES = ("good.png", "broken.png", "notes.txt")


def fill_data(storage: Storage, tmp_path: Path) -> list[str]:
    """Train, score, evaluate and compare through the worker; return the data values shown."""
    import numpy as np

    database = storage.database
    reviewer = "tester"

    def enqueue(kind: JobKind, params: dict, **ids) -> None:
        database.run_write(
            lambda session: jobs.enqueue_job(session, kind, params, reviewer, **ids),
            action="enqueue",
        )

    write_images(tmp_path / "normals", 16)
    config = tiny_config(train__epochs=2).to_dict()
    enqueue(JobKind.TRAIN, train_job_params([path_entry(tmp_path / "normals")], config, "needles"))
    Worker(storage).run(until_idle=True)
    with database.read() as session:
        model = registry.get_default_model_version(session)

    upload_dir = new_upload_dir()
    entries = []
    rng = np.random.default_rng(2)
    contents = (png_bytes(normal_pixels(rng)), b"broken", b"text")
    for index, (name, data) in enumerate(zip(FILE_NAMES, contents, strict=True)):
        relative = f"{upload_dir}/{index:05d}{Path(name).suffix}"
        storage.files.resolve(relative).parent.mkdir(parents=True, exist_ok=True)
        storage.files.resolve(relative).write_bytes(data)
        entries.append(upload_entry(relative, name))
    batch = database.run_write(
        lambda session: batches.create_batch(
            session, name="라인 1 배치", model_version_id=model.id, created_by=reviewer
        ),
        action="create",
    )
    enqueue(JobKind.SCORE, score_job_params(entries, batch.id), batch_id=batch.id)

    dataset = write_mvtec(tmp_path / "parts")
    enqueue(JobKind.EVALUATE, model_evaluation_params(str(dataset), model.id))
    study_dir = new_study_dir("parts")
    settings = {"quick": True, "epochs": 1, "seeds": 1, "labelled_defects": 2}
    enqueue(JobKind.EVALUATE, compare_job_params(str(dataset), study_dir, settings=settings))
    Worker(storage, WorkerSettings(poll_interval_s=0.05)).run(until_idle=True)

    with database.read() as session:
        finished = [job.status.value for job in jobs.list_recent_jobs(session)]
    assert finished == ["done"] * 4, finished
    return [
        "needles",
        reviewer,
        *FILE_NAMES,
        str(storage.settings.home),
        str(tmp_path),
        Path(study_dir).name,
        "parts",
        "square",
        "spot",
        model.bundle_sha256[:12],
    ]


@pytest.mark.slow
def test_pages_in_korean_have_no_english(open_app, storage_handle: Storage, tmp_path: Path):
    data = fill_data(storage_handle, tmp_path)
    korean = load_catalog("ko")
    english_found: dict[str, list[str]] = {}
    for page in PAGES:
        at = open_app(page, language="ko")
        assert not at.exception, (page, at.exception)
        assert at.title[0].value == korean[f"{page}.title"]
        texts = visible_texts(at.main) + visible_texts(at.sidebar)
        assert any(HANGUL.search(text) for text in texts), page
        words = sorted({word for text in texts for word in english_words(text, data)})
        if words:
            english_found[page] = words
    assert english_found == {}


@pytest.mark.parametrize("page", PAGES)
def test_empty_pages_in_korean(open_app, page: str) -> None:
    at = open_app(page, language="ko")
    assert not at.exception
    texts = visible_texts(at.main) + visible_texts(at.sidebar)
    words = sorted({word for text in texts for word in english_words(text, ())})
    assert words == []
    assert at.title[0].value == load_catalog("ko")[f"{page}.title"]


def test_checker_flags_english_page(open_app) -> None:
    # The same check on the English page must find words, or it could never fail.
    at = open_app("train", language="en")
    texts = visible_texts(at.main) + visible_texts(at.sidebar)
    words = {word for text in texts for word in english_words(text, ())}
    assert {"Train", "Epochs", "Reviewer"} <= words
