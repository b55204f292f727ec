"""Chunked, resumable scoring of a batch."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from storage_helpers import (
    add_images,
    expected_auto_label,
    fake_score,
    fake_score_chunk,
    make_batch,
)

from davae.errors import DavaeError
from storage import audit, batches, scores
from storage.audit import AuditAction
from storage.models import BatchStatus, Image, ImageStatus, Label, LabelSource, Score


def count_rows(database, statement):
    with database.read() as session:
        return session.scalar(statement)


def scores_per_image(database, batch_id):
    statement = (
        select(Score.image_id, func.count())
        .join(Image, Image.id == Score.image_id)
        .where(Image.batch_id == batch_id)
        .group_by(Score.image_id)
    )
    with database.read() as session:
        return dict(session.execute(statement).all())


def test_scores_every_pending_image(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 25, rejected_every=8)
    seen = []
    final = scores.score_pending(
        database, batch.id, fake_score_chunk, actor="ana", chunk_size=4, on_progress=seen.append
    )
    assert final.status == BatchStatus.DONE
    assert (final.image_count, final.scored, final.rejected, final.pending) == (25, 22, 3, 0)
    assert final.anomalous == sum(
        expected_auto_label(p) == "anomalous" for p in range(25) if p % 8 != 7
    )
    assert [p.done for p in seen] == [7, 11, 15, 19, 23, 25]  # 3 rejected counted up front
    assert set(scores_per_image(database, batch.id).values()) == {1}


def test_auto_labels_written_with_scores(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 10)
    scores.score_pending(database, batch.id, fake_score_chunk, actor="ana", chunk_size=3)
    with database.read() as session:
        rows = session.execute(
            select(Image.position, Label.value, Label.source, Label.reviewer)
            .join(Label, Label.image_id == Image.id)
            .where(Image.batch_id == batch.id)
        ).all()
    assert len(rows) == 10
    for position, value, source, reviewer in rows:
        assert value == expected_auto_label(position)
        assert source == LabelSource.AUTO
        assert reviewer == "ana"


def test_scoring_rejections(database, files, model):
    batch = make_batch(database, model.id)
    ids = add_images(database, files, batch.id, 4)

    def reject_second(chunk):
        return [
            scores.ImageRejection(
                image.id, "unreadable_file", "cannot read", {"name": image.file_name}
            )
            if image.id == ids[1]
            else fake_score(image)
            for image in chunk
        ]

    final = scores.score_pending(database, batch.id, reject_second, actor="ana")
    with database.read() as session:
        rejected = batches.get_image(session, ids[1])
    assert (final.scored, final.rejected) == (3, 1)
    assert rejected.status == ImageStatus.REJECTED
    assert rejected.rejection_code == "unreadable_file"
    assert rejected.rejection_params == {"name": "img_00001.png"}


def test_failure_marks_batch_and_resume_finishes(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 10)
    calls = []

    def fail_on_third_chunk(chunk):
        calls.append([image.position for image in chunk])
        if len(calls) == 3:
            raise DavaeError("stored_file_missing", "gone", path="x")
        return fake_score_chunk(chunk)

    with pytest.raises(DavaeError):
        scores.score_pending(database, batch.id, fail_on_third_chunk, actor="ana", chunk_size=3)
    with database.read() as session:
        failed = batches.get_batch(session, batch.id)
    assert failed.status == BatchStatus.FAILED
    assert failed.error_code == "stored_file_missing"
    assert failed.scored_count == 6

    given = []
    final = scores.score_pending(
        database,
        batch.id,
        lambda chunk: given.extend(i.position for i in chunk) or fake_score_chunk(chunk),
        actor="ana",
    )
    assert given == [6, 7, 8, 9]
    assert final.status == BatchStatus.DONE
    assert final.scored == 10


def test_incomplete_results_fail_the_batch(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 3)
    with pytest.raises(ValueError, match="no result for images"):
        scores.score_pending(database, batch.id, lambda chunk: [], actor="ana")
    with database.read() as session:
        assert batches.get_batch(session, batch.id).status == BatchStatus.FAILED


def test_cancel_between_chunks(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 10)
    chunks = []

    def count_chunks(chunk):
        chunks.append(chunk)
        return fake_score_chunk(chunk)

    final = scores.score_pending(
        database,
        batch.id,
        count_chunks,
        actor="ana",
        chunk_size=4,
        should_cancel=lambda: len(chunks) == 2,
    )
    assert final.status == BatchStatus.CANCELLED
    assert final.scored == 8
    resumed = scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    assert (resumed.status, resumed.scored) == (BatchStatus.DONE, 10)
    with database.read() as session:
        moves = [
            e.details["to"]
            for e in reversed(
                audit.list_entries(session, batch_id=batch.id, action=AuditAction.BATCH_STATUS)
            )
        ]
    assert moves == ["running", "cancelled", "running", "done"]


def test_done_batch_is_not_scored_again(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 2)
    scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    with pytest.raises(DavaeError) as caught:
        scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    assert caught.value.code == "batch_status_conflict"


def test_repeated_chunk_is_skipped(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 3)
    with database.read() as session:
        chunk = scores.pending_images(session, batch.id)
    results = fake_score_chunk(chunk)
    first = database.run_write(
        lambda session: scores.commit_scored_chunk(session, batch.id, results, actor="ana"),
        action="commit",
    )
    again = database.run_write(
        lambda session: scores.commit_scored_chunk(session, batch.id, results, actor="ana"),
        action="commit",
    )
    assert first.scored == again.scored == 3
    assert set(scores_per_image(database, batch.id).values()) == {1}
    labels = count_rows(database, select(func.count()).select_from(Label))
    assert labels == 3


def test_duplicate_results_rejected(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 2)
    with database.read() as session:
        chunk = scores.pending_images(session, batch.id)
    doubled = fake_score_chunk(chunk) + fake_score_chunk(chunk[:1])
    with pytest.raises(ValueError, match="more than one result"), database.write() as session:
        scores.commit_scored_chunk(session, batch.id, doubled, actor="ana")
    assert count_rows(database, select(func.count()).select_from(Score)) == 0


def test_database_refuses_second_score_per_model(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 1)
    scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    with database.read() as session:
        existing = session.scalars(select(Score)).one()
    with pytest.raises(IntegrityError), database.write() as session:
        session.add(
            Score(
                image_id=existing.image_id,
                model_version_id=existing.model_version_id,
                recon_score=0.0,
                latent_euclidean=0.0,
                latent_mahalanobis=0.0,
                combined_score=0.0,
            )
        )


def test_pending_images_in_upload_order(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 6, rejected_every=3)
    with database.read() as session:
        everything = scores.pending_images(session, batch.id)
        page = scores.pending_images(session, batch.id, limit=2, after_position=1)
    assert [image.position for image in everything] == [0, 1, 3, 4]
    assert [image.position for image in page] == [3, 4]
    assert all(image.stored_path.startswith("originals/") for image in everything)


def test_chunk_size_must_be_positive(database, files, model):
    batch = make_batch(database, model.id)
    with pytest.raises(ValueError):
        scores.score_pending(database, batch.id, fake_score_chunk, actor="ana", chunk_size=0)
