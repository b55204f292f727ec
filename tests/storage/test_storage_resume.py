"""Durability: a job killed mid-way keeps its committed chunks and resumes without rescoring."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import func, select
from storage_helpers import add_images, fake_score_chunk, make_batch

from storage import batches, scores
from storage.models import BatchStatus, Image, Label, LabelSource, Score

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
WORKER = HERE / "storage_scoring_worker.py"
STARTUP_TIMEOUT_S = 120  # generous: the machine may be busy with training


def run_until_killed(storage, database_url, batch_id, mode, chunk_size, stop_after):
    """Start the worker, wait for ``stop_after`` committed chunks, then SIGKILL it."""
    environment = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), str(HERE)]),
    }
    process = subprocess.Popen(
        [
            sys.executable,
            str(WORKER),
            database_url,
            str(storage.settings.home),
            str(batch_id),
            mode,
            str(chunk_size),
            str(stop_after),
        ],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        while len(lines) < stop_after:
            line = process.stdout.readline()
            if not line:
                pytest.fail(f"worker exited early: {process.wait()} {process.stderr.read()}")
            lines.append(line.strip())
        assert lines[-1] == f"committed {stop_after}"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=STARTUP_TIMEOUT_S)
        process.stdout.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL


def count(database, statement):
    with database.read() as session:
        return session.scalar(statement)


def test_killed_scoring_resumes_pending_only(storage, database, files, model, database_url):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 30, rejected_every=7)  # 4 rejected, 26 pending

    run_until_killed(storage, database_url, batch.id, "score", chunk_size=5, stop_after=3)

    with database.read() as session:
        killed = batches.get_batch(session, batch.id)
        pending_after_kill = [image.id for image in scores.pending_images(session, batch.id)]
    assert killed.status == BatchStatus.RUNNING
    assert killed.scored_count == 15
    assert killed.rejected_count == 4
    assert len(pending_after_kill) == 26 - 15
    assert count(database, select(func.count()).select_from(Score)) == 15
    auto_labels = select(func.count()).select_from(Label).where(Label.source == LabelSource.AUTO)
    assert count(database, auto_labels) == 15

    given = []

    def record_and_score(chunk):
        given.extend(image.id for image in chunk)
        return fake_score_chunk(chunk)

    final = scores.score_pending(database, batch.id, record_and_score, actor="ana", chunk_size=4)
    assert given == pending_after_kill
    assert final.status == BatchStatus.DONE
    assert (final.scored, final.rejected, final.pending) == (26, 4, 0)
    per_image = select(Score.image_id, func.count()).group_by(Score.image_id)
    with database.read() as session:
        counts = dict(session.execute(per_image).all())
    assert len(counts) == 26
    assert set(counts.values()) == {1}


def test_killed_recording_continues_at_next_position(storage, database, files, model, database_url):
    batch = make_batch(database, model.id)

    run_until_killed(storage, database_url, batch.id, "record", chunk_size=4, stop_after=2)

    with database.read() as session:
        assert batches.next_image_position(session, batch.id) == 8
    add_images(database, files, batch.id, 5)
    with database.read() as session:
        positions = sorted(session.scalars(select(Image.position)))
        recorded = batches.get_batch(session, batch.id)
    assert positions == list(range(13))
    assert recorded.image_count == 13
