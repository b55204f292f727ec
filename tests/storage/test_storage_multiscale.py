"""The multi-scale latent distance: stored with scores, and used when thresholds name it."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import inspect, select, text
from storage_helpers import THRESHOLDS, add_images, make_batch

from storage import labels, review, scores, thresholds
from storage.db import alembic_config, make_engine, upgrade_to_latest
from storage.models import LabelValue, Score
from storage.scores import NewScore

MULTISCALE = {**THRESHOLDS, "recon": 10.0, "latent": 5.0, "latent_metric": "multiscale"}


def multiscale_score_chunk(chunk):
    """Scores whose multi-scale distance is the position, other distances small."""
    return [
        NewScore(
            image_id=image.id,
            recon_score=0.1,
            latent_euclidean=1.0,
            latent_mahalanobis=1.0,
            latent_multiscale=float(image.position),
            combined_score=1.0,
        )
        for image in chunk
    ]


@pytest.fixture
def multiscale_batch(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 10)
    scores.score_pending(database, batch.id, multiscale_score_chunk, actor="ana")
    return batch


def test_multiscale_distance_stored(database, multiscale_batch):
    with database.read() as session:
        rows = review.batch_table(session, multiscale_batch.id)
    assert [row.latent_multiscale for row in rows] == [float(row.position) for row in rows]


def test_apply_thresholds_by_multiscale(database, multiscale_batch):
    applied = database.run_write(
        lambda session: labels.apply_thresholds(session, multiscale_batch.id, MULTISCALE, "carl"),
        action="apply",
    )
    with database.read() as session:
        rows = review.batch_table(session, multiscale_batch.id)
    assert applied.anomalous == sum(row.position > 5.0 for row in rows)
    for row in rows:
        want = LabelValue.ANOMALOUS if row.position > 5.0 else LabelValue.NORMAL
        assert row.auto_label == want


def test_missing_multiscale_never_flags():
    decided = thresholds.decide_label(MULTISCALE, 0.1, 100.0, 100.0, None)
    assert decided == LabelValue.NORMAL
    assert thresholds.decide_label(MULTISCALE, 20.0, 0.0, 0.0, None) == LabelValue.ANOMALOUS


def test_sql_rule_matches_python_rule_with_null(database, files, model):
    batch = make_batch(database, model.id)
    add_images(database, files, batch.id, 4)

    def without_multiscale(chunk):
        return [
            NewScore(
                image.id,
                recon_score=float(image.position) * 10,
                latent_euclidean=1.0,
                latent_mahalanobis=1.0,
                combined_score=1.0,
            )
            for image in chunk
        ]

    scores.score_pending(database, batch.id, without_multiscale, actor="ana")
    with database.read() as session:
        flagged = (
            session.execute(
                select(Score.recon_score).where(thresholds.anomalous_condition(MULTISCALE))
            )
            .scalars()
            .all()
        )
    # Recon scores 0, 10, 20, 30 against a threshold of 10: only 20 and 30 are over.
    assert sorted(flagged) == [20.0, 30.0]


def test_upgrade_adds_column_and_keeps_rows(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = alembic_config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    assert "latent_multiscale" not in {c["name"] for c in inspect(engine).get_columns("scores")}
    upgrade_to_latest(engine)
    columns = {c["name"] for c in inspect(engine).get_columns("scores")}
    assert "latent_multiscale" in columns
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM scores")).scalar() == 0
    engine.dispose()
