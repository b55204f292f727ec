"""Batches and the files recorded in them."""

from __future__ import annotations

import pytest
from storage_helpers import THRESHOLDS, add_images, make_batch, new_images

from davae.errors import DavaeError
from storage import audit, batches
from storage.audit import AuditAction
from storage.models import BatchStatus, ImageStatus


def test_create_batch_takes_model_thresholds(database, model):
    batch = make_batch(database, model.id)
    assert batch.status == BatchStatus.PENDING
    assert batch.thresholds == THRESHOLDS
    assert (batch.image_count, batch.scored_count, batch.rejected_count) == (0, 0, 0)
    with database.read() as session:
        entry = audit.list_entries(session, batch_id=batch.id)[0]
    assert entry.action == AuditAction.BATCH_CREATE
    assert entry.details["model_version_id"] == model.id


def test_create_batch_with_own_thresholds(database, model):
    own = {**THRESHOLDS, "recon": 0.3, "review_low": 0.8, "review_high": 1.2}
    batch = database.run_write(
        lambda session: batches.create_batch(
            session, name="strict", model_version_id=model.id, created_by="ana", thresholds=own
        ),
        action="create",
    )
    assert batch.thresholds["recon"] == 0.3
    assert batch.thresholds["review_high"] == 1.2


def test_create_batch_for_unknown_model(database):
    with pytest.raises(DavaeError) as caught, database.write() as session:
        batches.create_batch(session, name="x", model_version_id=42, created_by="ana")
    assert caught.value.code == "model_not_found"


@pytest.mark.parametrize("name", ["", "   ", "x" * 201])
def test_create_batch_rejects_bad_name(database, model, name):
    with pytest.raises(DavaeError) as caught, database.write() as session:
        batches.create_batch(session, name=name, model_version_id=model.id, created_by="ana")
    assert caught.value.code == "invalid_setting"


def test_record_images_counts_and_rows(database, files, model):
    batch = make_batch(database, model.id)
    ids = add_images(database, files, batch.id, 10, rejected_every=5)
    assert len(ids) == 10
    with database.read() as session:
        loaded = batches.get_batch(session, batch.id)
        rejected = batches.get_image(session, ids[4])
        pending = batches.get_image(session, ids[0])
    assert (loaded.image_count, loaded.rejected_count) == (10, 2)
    assert rejected.status == ImageStatus.REJECTED
    assert rejected.rejection_code == "truncated_image"
    assert rejected.rejection_params == {"name": "broken_4.png", "detail": "EOF"}
    assert rejected.stored_path is None
    assert pending.status == ImageStatus.PENDING
    assert pending.folder == "line_a"
    assert (pending.width, pending.height, pending.format) == (64, 48, "PNG")
    assert files.resolve(pending.stored_path).is_file()


def test_recording_resumes_at_next_position(database, files, model):
    batch = make_batch(database, model.id)
    with database.read() as session:
        assert batches.next_image_position(session, batch.id) == 0
    add_images(database, files, batch.id, 7)
    with database.read() as session:
        assert batches.next_image_position(session, batch.id) == 7
    add_images(database, files, batch.id, 3)
    with database.read() as session:
        assert batches.get_batch(session, batch.id).image_count == 10


def test_same_position_twice_is_refused(database, files, model):
    from sqlalchemy.exc import IntegrityError

    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 2)
    with pytest.raises(IntegrityError), database.write() as session:
        batches.record_images(session, batch.id, new_images(files, 1, 1))


def test_new_image_checks_its_fields():
    with pytest.raises(ValueError):
        batches.NewImage(position=0, file_name="a.png", folder="", status=ImageStatus.PENDING)
    with pytest.raises(ValueError):
        batches.NewImage(position=0, file_name="a.png", folder="", status=ImageStatus.REJECTED)
    with pytest.raises(ValueError):
        batches.NewImage(
            position=0,
            file_name="a.png",
            folder="",
            status=ImageStatus.SCORED,
            sha256="0" * 64,
            stored_path="x",
        )


def test_status_moves_and_audit(database, model):
    batch = make_batch(database, model.id)
    for status in (BatchStatus.RUNNING, BatchStatus.FAILED, BatchStatus.RUNNING, BatchStatus.DONE):
        database.run_write(
            lambda session, status=status: batches.set_batch_status(
                session, batch.id, status, "worker"
            ),
            action="status",
        )
    with database.read() as session:
        loaded = batches.get_batch(session, batch.id)
        moves = [
            (e.details["from"], e.details["to"])
            for e in reversed(
                audit.list_entries(session, batch_id=batch.id, action=AuditAction.BATCH_STATUS)
            )
        ]
    assert loaded.status == BatchStatus.DONE
    assert loaded.started_at is not None
    assert loaded.finished_at is not None
    assert moves == [
        ("pending", "running"),
        ("running", "failed"),
        ("failed", "running"),
        ("running", "done"),
    ]


def test_failed_status_keeps_error(database, model):
    batch = make_batch(database, model.id)
    error = DavaeError("stored_file_missing", "the stored file x is missing", path="x")
    database.run_write(
        lambda session: batches.set_batch_status(session, batch.id, BatchStatus.RUNNING, "w"),
        action="start",
    )
    database.run_write(
        lambda session: batches.set_batch_status(
            session, batch.id, BatchStatus.FAILED, "w", error=error
        ),
        action="fail",
    )
    with database.read() as session:
        loaded = batches.get_batch(session, batch.id)
    assert loaded.error_code == "stored_file_missing"
    assert loaded.error_message == "the stored file x is missing"


def test_done_batch_cannot_restart(database, model):
    batch = make_batch(database, model.id)
    for status in (BatchStatus.RUNNING, BatchStatus.DONE):
        database.run_write(
            lambda session, status=status: batches.set_batch_status(session, batch.id, status, "w"),
            action="status",
        )
    with pytest.raises(DavaeError) as caught, database.write() as session:
        batches.set_batch_status(session, batch.id, BatchStatus.RUNNING, "w")
    assert caught.value.code == "batch_status_conflict"
    assert caught.value.params == {"batch_id": batch.id, "status": "done", "action": "running"}


def test_unknown_batch(database):
    with pytest.raises(DavaeError) as caught, database.read() as session:
        batches.get_batch(session, 12345)
    assert caught.value.code == "batch_not_found"


def test_unknown_image(database):
    with pytest.raises(DavaeError) as caught, database.read() as session:
        batches.get_image(session, 12345)
    assert caught.value.code == "image_not_found"


def test_list_batches_newest_first(database, files, model):
    first = make_batch(database, model.id, "first")
    second = make_batch(database, model.id, "second")
    with database.read() as session:
        listed = [b.id for b in batches.list_batches(session)]
        limited = [b.id for b in batches.list_batches(session, limit=1)]
    assert listed == [second.id, first.id]
    assert limited == [second.id]
