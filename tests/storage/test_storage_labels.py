"""Labels: precedence of the current label, append-only rows, human labels, thresholds."""

from __future__ import annotations

import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.exc import IntegrityError
from storage_helpers import (
    THRESHOLDS,
    add_images,
    expected_auto_label,
    fake_score_chunk,
    make_batch,
)

from davae.errors import DavaeError
from storage import audit, labels, review, scores, thresholds
from storage.audit import AuditAction
from storage.models import AuditEntry, Image, Label, LabelSource, LabelValue

# Positions of the files that scored_batch records as rejected.
REJECTED = {9, 19}


@pytest.fixture
def scored_batch(database, files, model):
    """A batch of 20 files, every 10th rejected, the rest scored with fake scores."""
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 20, rejected_every=10)
    scores.score_pending(database, batch.id, fake_score_chunk, actor="ana")
    return batch


def image_ids(database, batch_id):
    with database.read() as session:
        rows = session.execute(
            select(Image.id, Image.position).where(Image.batch_id == batch_id)
        ).all()
    return {position: image_id for image_id, position in rows}


def current_value(database, image_id):
    with database.read() as session:
        label = labels.current_label(session, image_id)
    return None if label is None else (label.value.value, label.source.value)


def test_auto_label_is_current_without_human(database, scored_batch):
    ids = image_ids(database, scored_batch.id)
    assert current_value(database, ids[7]) == ("anomalous", "auto")
    assert current_value(database, ids[1]) == ("normal", "auto")


def test_human_label_overrides_auto(database, scored_batch):
    image_id = image_ids(database, scored_batch.id)[1]
    labels.save_human_label(database, image_id, "anomalous", "bob")
    assert current_value(database, image_id) == ("anomalous", "human")


def test_later_auto_label_keeps_human_precedence(database, scored_batch):
    image_id = image_ids(database, scored_batch.id)[1]
    labels.save_human_label(database, image_id, "anomalous", "bob")
    strict = {**THRESHOLDS, "recon": 0.01}
    database.run_write(
        lambda session: labels.apply_thresholds(session, scored_batch.id, strict, "ana"),
        action="apply",
    )
    assert current_value(database, image_id) == ("anomalous", "human")
    database.run_write(
        lambda session: labels.apply_thresholds(
            session, scored_batch.id, {**THRESHOLDS, "recon": 0.95}, "ana"
        ),
        action="apply",
    )
    assert current_value(database, image_id) == ("anomalous", "human")


def test_latest_human_label_wins(database, scored_batch):
    image_id = image_ids(database, scored_batch.id)[7]
    labels.save_human_label(database, image_id, "normal", "bob")
    labels.save_human_label(database, image_id, "anomalous", "carl")
    labels.save_human_label(database, image_id, "normal", "bob", comment="dust, not a defect")
    with database.read() as session:
        current = labels.current_label(session, image_id)
        history = labels.label_history(session, image_id)
    assert (current.value, current.reviewer, current.comment) == (
        LabelValue.NORMAL,
        "bob",
        "dust, not a defect",
    )
    assert [label.source for label in history] == [LabelSource.HUMAN] * 3 + [LabelSource.AUTO]


def test_human_label_carries_batch_thresholds(database, scored_batch):
    image_id = image_ids(database, scored_batch.id)[2]
    saved = labels.save_human_label(database, image_id, LabelValue.ANOMALOUS, "bob")
    assert saved.thresholds == THRESHOLDS
    assert saved.created_at.tzinfo is not None


def test_human_label_is_audited(database, scored_batch):
    image_id = image_ids(database, scored_batch.id)[7]
    labels.save_human_label(database, image_id, "normal", "bob", comment="scratch on lens")
    with database.read() as session:
        entry = audit.list_entries(session, action=AuditAction.LABEL_SET)[0]
    assert entry.actor == "bob"
    assert entry.batch_id == scored_batch.id
    assert (entry.entity_type, entry.entity_id) == ("image", image_id)
    assert entry.details["value"] == "normal"
    assert entry.details["previous"] == "anomalous"
    assert entry.details["previous_source"] == "auto"
    assert entry.details["file_name"] == "img_00007.png"
    assert entry.details["comment"] == "scratch on lens"


def test_bulk_human_labels_one_entry_each(database, scored_batch):
    ids = image_ids(database, scored_batch.id)
    chosen = [ids[1], ids[2], ids[3]]
    database.run_write(
        lambda session: labels.add_human_labels(session, chosen, "anomalous", "bob"),
        action="bulk",
    )
    with database.read() as session:
        entries = audit.list_entries(session, action=AuditAction.LABEL_SET)
    assert sorted(e.entity_id for e in entries) == sorted(chosen)


@pytest.mark.parametrize(
    ("value", "reviewer", "setting"),
    [("broken", "bob", "label"), ("normal", "", "reviewer"), ("normal", "  ", "reviewer")],
)
def test_human_label_input_checked(database, scored_batch, value, reviewer, setting):
    image_id = image_ids(database, scored_batch.id)[1]
    with pytest.raises(DavaeError) as caught:
        labels.save_human_label(database, image_id, value, reviewer)
    assert caught.value.code == "invalid_setting"
    assert caught.value.params["setting"] == setting


def test_rejected_image_cannot_be_labelled(database, scored_batch):
    image_id = image_ids(database, scored_batch.id)[19]
    with pytest.raises(DavaeError) as caught:
        labels.save_human_label(database, image_id, "normal", "bob")
    assert caught.value.params["setting"] == "image"


def test_unknown_image_cannot_be_labelled(database, scored_batch):
    with pytest.raises(DavaeError) as caught:
        labels.save_human_label(database, 987654, "normal", "bob")
    assert caught.value.code == "image_not_found"


@pytest.mark.parametrize("table", [Label, AuditEntry])
def test_rows_cannot_be_updated(database, scored_batch, table):
    column = table.reviewer if table is Label else table.actor
    with pytest.raises(IntegrityError), database.write() as session:
        session.execute(update(table).values({column: "mallory"}))
    with database.read() as session:
        assert session.scalar(select(column).where(column == "mallory")) is None


@pytest.mark.parametrize("table", [Label, AuditEntry])
def test_rows_cannot_be_deleted(database, scored_batch, table):
    with database.read() as session:
        before = len(session.scalars(select(table.id)).all())
    with pytest.raises(IntegrityError), database.write() as session:
        session.execute(delete(table))
    with database.read() as session:
        assert len(session.scalars(select(table.id)).all()) == before


def test_labels_cannot_be_truncated_on_postgresql(database, scored_batch, backend):
    if backend != "postgresql":
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    with pytest.raises(IntegrityError), database.write() as session:
        session.execute(text("TRUNCATE labels CASCADE"))


def test_apply_thresholds_relabels_from_scores(database, scored_batch):
    looser = {**THRESHOLDS, "recon": 0.75}
    applied = database.run_write(
        lambda session: labels.apply_thresholds(session, scored_batch.id, looser, "carl"),
        action="apply",
    )
    ids = image_ids(database, scored_batch.id)
    # Recon scores are position % 10 / 10, so only positions ending in 8 or 9
    # exceed 0.75, and those ending in 9 are rejected. Latent distances stay below 4.0.
    anomalous_positions = {8, 18}
    assert applied.labelled == 18
    assert applied.anomalous == len(anomalous_positions)
    for position, image_id in ids.items():
        if position in REJECTED:
            assert current_value(database, image_id) is None
            continue
        want = "anomalous" if position in anomalous_positions else "normal"
        assert current_value(database, image_id) == (want, "auto")


def test_apply_thresholds_uses_chosen_latent_metric(database, scored_batch):
    # Euclidean distances are 1, 2 or 3; a latent threshold of 2.5 flags those at 3.
    by_euclidean = {**THRESHOLDS, "recon": 10.0, "latent": 2.5, "latent_metric": "euclidean"}
    applied = database.run_write(
        lambda session: labels.apply_thresholds(session, scored_batch.id, by_euclidean, "carl"),
        action="apply",
    )
    ids = image_ids(database, scored_batch.id)
    flagged = sorted(p for p in ids if p not in REJECTED and p % 3 == 2)
    assert applied.anomalous == len(flagged)
    for position in flagged:
        assert current_value(database, ids[position]) == ("anomalous", "auto")


def test_apply_thresholds_updates_batch_and_audit(database, scored_batch):
    looser = {**THRESHOLDS, "recon": 0.75}
    applied = database.run_write(
        lambda session: labels.apply_thresholds(session, scored_batch.id, looser, "carl"),
        action="apply",
    )
    with database.read() as session:
        batch = session.get(type(scored_batch), scored_batch.id)
        entry = audit.list_entries(session, action=AuditAction.THRESHOLDS_APPLY)[0]
        auto_labels = session.scalars(
            select(Label).where(Label.source == LabelSource.AUTO).order_by(Label.id.desc())
        ).first()
    assert batch.thresholds["recon"] == 0.75
    assert batch.anomaly_count == applied.anomalous
    assert entry.actor == "carl"
    assert entry.batch_id == scored_batch.id
    assert entry.details["previous"]["recon"] == 0.5
    assert entry.details["thresholds"]["recon"] == 0.75
    assert entry.details["labelled"] == 18
    assert auto_labels.thresholds["recon"] == 0.75
    assert auto_labels.reviewer == "carl"


def test_apply_thresholds_rejects_bad_input(database, scored_batch):
    with pytest.raises(DavaeError) as caught, database.write() as session:
        labels.apply_thresholds(
            session, scored_batch.id, {**THRESHOLDS, "latent_metric": "cosine"}, "carl"
        )
    assert caught.value.params["setting"] == "thresholds.latent_metric"


def test_label_counts(database, scored_batch):
    ids = image_ids(database, scored_batch.id)
    labels.save_human_label(database, ids[1], "anomalous", "bob")
    labels.save_human_label(database, ids[7], "normal", "bob")
    with database.read() as session:
        counts = review.label_counts(session, scored_batch.id)
    auto_anomalous = sum(expected_auto_label(p) == "anomalous" for p in ids if p not in REJECTED)
    assert counts.total == 20
    assert counts.rejected == 2
    assert counts.pending == 0
    assert counts.unlabelled == 0
    assert counts.human_reviewed == 2
    assert counts.anomalous == auto_anomalous  # one flipped each way
    assert counts.normal == 18 - auto_anomalous


def test_label_counts_with_pending_images(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 4)
    with database.read() as session:
        counts = review.label_counts(session, batch.id)
    assert (counts.pending, counts.total, counts.normal, counts.anomalous) == (4, 4, 0, 0)


@pytest.mark.parametrize(
    ("change", "setting"),
    [
        ({"recon": 0}, "thresholds.recon"),
        ({"recon": float("nan")}, "thresholds.recon"),
        ({"latent": "9"}, "thresholds.latent"),
        ({"latent": True}, "thresholds.latent"),
        ({"recon_reduction": "median"}, "thresholds.recon_reduction"),
        ({"review_low": 2.0, "review_high": 1.0}, "thresholds.review_low"),
        ({"review_high": float("inf")}, "thresholds.review_high"),
    ],
)
def test_validate_thresholds_rejects(change, setting):
    with pytest.raises(DavaeError) as caught:
        thresholds.validate_thresholds({**THRESHOLDS, **change})
    assert caught.value.params["setting"] == setting


def test_validate_thresholds_fills_review_band():
    minimal = {"recon": 1, "latent": 2, "recon_reduction": "mean", "latent_metric": "euclidean"}
    checked = thresholds.validate_thresholds({**minimal, "target_fpr": 0.01})
    assert checked["review_low"] is None
    assert checked["review_high"] is None
    assert checked["target_fpr"] == 0.01
    assert isinstance(checked["recon"], float)


@pytest.mark.parametrize(
    ("recon", "euclidean", "mahalanobis", "metric", "want"),
    [
        (0.4, 100.0, 1.0, "mahalanobis", "normal"),
        (0.4, 100.0, 1.0, "euclidean", "anomalous"),
        (0.6, 0.0, 0.0, "mahalanobis", "anomalous"),
        (0.5, 4.0, 4.0, "mahalanobis", "normal"),  # equal to the threshold is not over it
    ],
)
def test_decide_label(recon, euclidean, mahalanobis, metric, want):
    rule = {**THRESHOLDS, "latent_metric": metric}
    assert thresholds.decide_label(rule, recon, euclidean, mahalanobis) == want
