"""The queries behind the dashboard: review table, export rows, audit log, score history."""

from __future__ import annotations

from datetime import timedelta

import pytest
from storage_helpers import (
    THRESHOLDS,
    add_images,
    expected_auto_label,
    fake_score_chunk,
    make_batch,
)

from davae.errors import DavaeError
from storage import audit, export, history, labels, review, scores
from storage.audit import AuditAction
from storage.models import ImageStatus, LabelValue, utc_now


@pytest.fixture
def scored_batch(database, files, model):
    """12 files, positions 4 and 9 rejected (every 5th), the rest scored."""
    batch = make_batch(database, model.id, "line B")
    add_images(database, files, batch.id, 12, rejected_every=5)
    scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    return batch


def test_batch_table_rows(database, scored_batch):
    with database.read() as session:
        rows = review.batch_table(session, scored_batch.id)
    assert [row.position for row in rows] == list(range(12))
    by_position = {row.position: row for row in rows}

    scored = by_position[7]
    assert scored.status == ImageStatus.SCORED
    assert scored.file_name == "img_00007.png"
    assert scored.folder == "line_a"
    assert scored.recon_score == pytest.approx(0.7)
    assert scored.latent_euclidean == pytest.approx(2.0)
    assert scored.latent_mahalanobis == pytest.approx(3.0)
    assert scored.auto_label == LabelValue.ANOMALOUS
    assert scored.human_label is None
    assert scored.final_label == LabelValue.ANOMALOUS
    assert scored.reviewer is None

    rejected = by_position[4]
    assert rejected.status == ImageStatus.REJECTED
    assert rejected.rejection_code == "truncated_image"
    assert rejected.recon_score is None
    assert rejected.final_label is None


def test_batch_table_shows_human_label(database, scored_batch):
    with database.read() as session:
        image_id = review.batch_table(session, scored_batch.id)[7].image_id
    labels.save_human_label(database, image_id, "normal", "bob", comment="reflection")
    with database.read() as session:
        row = review.batch_table(session, scored_batch.id)[7]
    assert row.auto_label == LabelValue.ANOMALOUS
    assert row.human_label == LabelValue.NORMAL
    assert row.final_label == LabelValue.NORMAL
    assert row.reviewer == "bob"
    assert row.comment == "reflection"
    assert row.reviewed_at is not None


def test_batch_table_matches_expected_labels(database, scored_batch):
    with database.read() as session:
        rows = review.batch_table(session, scored_batch.id)
    for row in rows:
        if row.status == ImageStatus.SCORED:
            assert row.final_label == expected_auto_label(row.position)


def test_batch_table_unknown_batch(database):
    with pytest.raises(DavaeError) as caught, database.read() as session:
        review.batch_table(session, 4242)
    assert caught.value.code == "batch_not_found"


def test_export_rows(database, scored_batch, model):
    with database.read() as session:
        image_id = review.batch_table(session, scored_batch.id)[6].image_id
    labels.save_human_label(database, image_id, "normal", "bob")
    with database.read() as session:
        rows = export.export_rows(session, scored_batch.id)
    assert len(rows) == 12
    row = rows[6]
    assert row.file_name == "img_00006.png"
    assert row.folder == "line_a"
    assert len(row.sha256) == 64
    assert (row.batch_id, row.batch_name) == (scored_batch.id, "line B")
    assert (row.model_name, row.model_version) == (model.name, model.version)
    assert row.recon_score == pytest.approx(0.6)
    assert row.combined_score == pytest.approx(1.2)
    assert row.thresholds == THRESHOLDS
    assert row.auto_label == LabelValue.ANOMALOUS
    assert row.human_label == LabelValue.NORMAL
    assert row.final_label == LabelValue.NORMAL
    assert row.reviewer == "bob"
    assert row.reviewed_at is not None
    assert row.stored_path.startswith("originals/")
    assert rows[4].status == ImageStatus.REJECTED
    assert rows[4].rejection_message == "broken_4.png is truncated"


def test_export_thresholds_follow_applied(database, scored_batch):
    strict = {**THRESHOLDS, "recon": 0.25}
    database.run_write(
        lambda session: labels.apply_thresholds(session, scored_batch.id, strict, "carl"),
        action="apply",
    )
    with database.read() as session:
        rows = export.export_rows(session, scored_batch.id)
    assert rows[3].thresholds["recon"] == 0.25
    assert rows[3].auto_label == LabelValue.ANOMALOUS
    assert rows[4].thresholds["recon"] == 0.25  # rejected: the batch's thresholds


def test_record_export_is_audited(database, scored_batch):
    database.run_write(
        lambda session: export.record_export(
            session, scored_batch.id, "dora", export_format="zip", row_count=12
        ),
        action="export",
    )
    with database.read() as session:
        entry = audit.list_entries(session, action=AuditAction.EXPORT)[0]
    assert entry.actor == "dora"
    assert entry.details == {"format": "zip", "rows": 12}


def test_audit_filters(database, files, model, scored_batch):
    other = make_batch(database, model.id, "other line")
    add_images(database, files, other.id, 2)
    with database.read() as session:
        first_id = review.batch_table(session, scored_batch.id)[0].image_id
    labels.save_human_label(database, first_id, "anomalous", "bob")
    labels.save_human_label(database, first_id, "normal", "carl")

    with database.read() as session:
        by_batch = audit.list_entries(session, batch_id=scored_batch.id)
        by_other = audit.list_entries(session, batch_id=other.id)
        by_actor = audit.list_entries(session, actor="carl")
        by_both = audit.list_entries(
            session, batch_id=scored_batch.id, actor="bob", action=AuditAction.LABEL_SET
        )
        actors = audit.list_actors(session, batch_id=scored_batch.id)
    assert by_batch and all(e.batch_id == scored_batch.id for e in by_batch)
    assert {e.action for e in by_other} == {AuditAction.BATCH_CREATE}
    assert [(e.actor, e.details["value"]) for e in by_actor] == [("carl", "normal")]
    assert [(e.actor, e.details["value"]) for e in by_both] == [("bob", "anomalous")]
    assert actors == ["ana", "bob", "carl"]


def test_audit_paging_and_time_window(database, scored_batch):
    with database.read() as session:
        everything = audit.list_entries(session)
        first_page = audit.list_entries(session, limit=2)
        second_page = audit.list_entries(session, limit=2, before_id=first_page[-1].id)
        future = audit.list_entries(session, since=utc_now() + timedelta(hours=1))
        past = audit.list_entries(session, until=utc_now() - timedelta(hours=1))
    assert [e.id for e in everything] == sorted((e.id for e in everything), reverse=True)
    assert [e.id for e in first_page + second_page] == [e.id for e in everything[:4]]
    assert future == []
    assert past == []


def test_score_history_in_scoring_order(database, files, model):
    first = make_batch(database, model.id, "monday")
    add_images(database, files, first.id, 5)
    scores.score_pending(database, first.id, fake_score_chunk, actor="ana", chunk_size=2)
    second = make_batch(database, model.id, "tuesday")
    add_images(database, files, second.id, 3)
    scores.score_pending(database, second.id, fake_score_chunk, actor="ana")

    with database.read() as session:
        points = history.score_history(session, model.id)
        latest = history.score_history(session, model.id, limit=3)
        none_yet = history.score_history(session, model.id, until=points[0].scored_at)
    assert len(points) == 8
    assert [p.scored_at for p in points] == sorted(p.scored_at for p in points)
    assert [p.batch_id for p in points[:5]] == [first.id] * 5
    assert latest == points[-3:]
    assert none_yet == []


def test_batch_score_summaries(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 10)
    scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    with database.read() as session:
        (summary,) = history.batch_score_summaries(session, model.id)
        rows = review.batch_table(session, batch.id)
    combined = [row.combined_score for row in rows]
    mean = sum(combined) / len(combined)
    std = (sum((c - mean) ** 2 for c in combined) / (len(combined) - 1)) ** 0.5
    assert summary.batch_id == batch.id
    assert summary.count == 10
    assert summary.mean == pytest.approx(mean)
    assert summary.std == pytest.approx(std)
    assert (summary.minimum, summary.maximum) == (min(combined), max(combined))
    assert summary.anomaly_count == sum(expected_auto_label(p) == "anomalous" for p in range(10))
