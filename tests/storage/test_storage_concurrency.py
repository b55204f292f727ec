"""Concurrent reviewers and scoring, and the retry path when the database is busy."""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections import Counter

import pytest
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from storage_helpers import add_images, fake_score_chunk, make_batch

from davae.errors import DavaeError
from storage import audit, labels, scores
from storage.audit import AuditAction
from storage.db import StorageSettings, open_storage
from storage.models import Image, Label, LabelSource, Score
from storage.retry import RetryPolicy

LOCK_WAIT_MS = 50  # how long one attempt waits for the held lock before it fails


def test_reviewers_and_scoring_lose_nothing(database, files, model):
    batch = make_batch(database, model.id)
    image_ids = add_images(database, files, batch.id, 120)
    errors: list[BaseException] = []
    saved: Counter[tuple[int, str, str]] = Counter()
    start = threading.Barrier(3)

    def review(reviewer, stride, offset):
        try:
            start.wait()
            for round_number in range(2):
                for image_id in image_ids[offset::stride]:
                    value = "anomalous" if (image_id + round_number) % 2 else "normal"
                    labels.save_human_label(database, image_id, value, reviewer)
                    saved[(image_id, reviewer, value)] += 1
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    def score():
        try:
            start.wait()
            scores.score_pending(database, batch.id, fake_score_chunk, actor="job", chunk_size=8)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    # The reviewers overlap on every third image, so some images get labels from both.
    threads = [
        threading.Thread(target=review, args=("bob", 2, 0)),
        threading.Thread(target=review, args=("carl", 3, 0)),
        threading.Thread(target=score),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    with database.read() as session:
        human = session.execute(
            select(Label.image_id, Label.reviewer, Label.value).where(
                Label.source == LabelSource.HUMAN
            )
        ).all()
        auto_count = session.scalar(
            select(func.count()).select_from(Label).where(Label.source == LabelSource.AUTO)
        )
        score_count = session.scalar(select(func.count()).select_from(Score))
        label_entries = audit.list_entries(session, action=AuditAction.LABEL_SET, limit=10_000)
        statuses = set(session.scalars(select(Image.status).where(Image.batch_id == batch.id)))
    stored = Counter((image_id, reviewer, value.value) for image_id, reviewer, value in human)
    assert stored == saved
    assert sum(saved.values()) == 2 * (60 + 40)
    assert len(label_entries) == len(human)
    assert score_count == auto_count == 120
    assert {status.value for status in statuses} == {"scored"}


class ReleaseOnRetry(logging.Handler):
    """Run ``release`` when storage.retry logs its first retry."""

    def __init__(self, release):
        super().__init__(level=logging.WARNING)
        self.release = release
        self.retries = 0

    def emit(self, record):
        if "retry" in record.getMessage():
            self.retries += 1
            if self.retries == 1:
                self.release()


@pytest.fixture
def retry_log():
    logger = logging.getLogger("storage.retry")
    handlers = []

    def attach(release):
        handler = ReleaseOnRetry(release)
        logger.addHandler(handler)
        handlers.append(handler)
        return handler

    yield attach
    for handler in handlers:
        logger.removeHandler(handler)


class WriteLockHolder:
    """A second connection that holds the write lock on the labels table."""

    def __init__(self, backend, url):
        self.backend = backend
        if backend == "sqlite":
            path = make_url(url).database
            self.connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self.connection.execute("BEGIN IMMEDIATE")
        else:
            self.engine = create_engine(url)
            self.connection = self.engine.connect()
            self.transaction = self.connection.begin()
            self.connection.execute(text("LOCK TABLE labels IN EXCLUSIVE MODE"))
        self.held = True

    def release(self):
        if not self.held:
            return
        self.held = False
        if self.backend == "sqlite":
            self.connection.execute("ROLLBACK")
            self.connection.close()
        else:
            self.transaction.rollback()
            self.connection.close()
            self.engine.dispose()


@pytest.fixture
def impatient_storage(storage, backend, database_url):
    """A second handle on the same database whose writes give up on a lock after 50 ms."""
    url = database_url
    if backend == "postgresql":
        parsed = make_url(database_url)
        options = f"{parsed.query['options']} -clock_timeout={LOCK_WAIT_MS}"
        url = parsed.update_query_dict({"options": options}).render_as_string(hide_password=False)

    def open_with(attempts):
        settings = StorageSettings(
            home=storage.settings.home, database_url=url, sqlite_busy_timeout_ms=LOCK_WAIT_MS
        )
        policy = RetryPolicy(attempts=attempts, first_delay_s=0.01, max_delay_s=0.05)
        return open_storage(settings, upgrade=False, retry_policy=policy)

    opened = []

    def factory(attempts):
        opened.append(open_with(attempts))
        return opened[-1]

    yield factory
    for handle in opened:
        handle.database.dispose()


@pytest.fixture
def scored_image(database, files, model):
    batch = make_batch(database, model.id)
    (image_id,) = add_images(database, files, batch.id, 1)
    scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    return image_id


def test_busy_write_is_retried(
    backend, database_url, database, impatient_storage, scored_image, retry_log
):
    impatient = impatient_storage(attempts=20)
    holder = WriteLockHolder(backend, database_url)
    handler = retry_log(holder.release)
    try:
        saved = labels.save_human_label(impatient.database, scored_image, "anomalous", "bob")
    finally:
        holder.release()
    assert handler.retries >= 1
    with database.read() as session:
        current = labels.current_label(session, scored_image)
    assert (current.id, current.value.value, current.reviewer) == (saved.id, "anomalous", "bob")


def test_write_that_keeps_failing_names_the_label(
    backend, database_url, database, impatient_storage, scored_image
):
    impatient = impatient_storage(attempts=3)
    holder = WriteLockHolder(backend, database_url)
    try:
        with pytest.raises(DavaeError) as caught:
            labels.save_human_label(impatient.database, scored_image, "anomalous", "bob")
    finally:
        holder.release()
    error = caught.value
    assert error.code == "label_not_saved"
    assert error.params["image_id"] == scored_image
    assert error.params["value"] == "anomalous"
    assert error.params["file_name"] == "img_00000.png"
    assert "img_00000.png" in error.message
    assert "locked" not in error.message
    with database.read() as session:
        assert labels.current_label(session, scored_image).source == LabelSource.AUTO


def test_retry_policy_delays_grow_within_bounds():
    policy = RetryPolicy(attempts=6, first_delay_s=0.1, max_delay_s=0.5)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.5), (5, 0.5)]:
        delay = policy.delay_s(attempt)
        assert ceiling / 2 <= delay <= ceiling
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
