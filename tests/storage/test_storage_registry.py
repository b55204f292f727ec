"""The model registry."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from storage_helpers import THRESHOLDS, register_model

from davae.errors import DavaeError
from storage import audit, registry
from storage.audit import AuditAction
from storage.models import ModelVersion


def test_versions_numbered_per_name(database, files):
    first = register_model(database, files, "needles")
    second = register_model(database, files, "needles")
    other = register_model(database, files, "magnets")
    assert (first.version, second.version, other.version) == (1, 2, 1)


def test_registered_fields_round_trip(database, files):
    created = register_model(database, files)
    with database.read() as session:
        loaded = registry.get_model_version(session, created.id)
    assert loaded.name == "needles"
    assert loaded.bundle_path.startswith("models/")
    assert files.resolve(loaded.bundle_path).is_file()
    assert len(loaded.bundle_sha256) == 64
    assert loaded.config == {"latent_dim": 16}
    assert loaded.thresholds == THRESHOLDS
    assert loaded.metrics is None
    assert loaded.created_by == "ana"
    assert loaded.created_at.tzinfo is not None


def test_first_version_becomes_default(database, files):
    first = register_model(database, files)
    register_model(database, files)
    with database.read() as session:
        assert registry.get_default_model_version(session).id == first.id


def test_set_default_moves_the_flag(database, files):
    first = register_model(database, files)
    second = register_model(database, files)
    database.run_write(
        lambda session: registry.set_default_model_version(session, second.id, "bob"),
        action="set default",
    )
    with database.read() as session:
        flags = {m.id: m.is_default for m in registry.list_model_versions(session)}
        entries = audit.list_entries(session, action=AuditAction.MODEL_SET_DEFAULT)
    assert flags == {first.id: False, second.id: True}
    assert entries[0].actor == "bob"
    assert entries[0].details == {"previous_default": first.id}


def test_database_allows_one_default(database, files):
    register_model(database, files)
    register_model(database, files)
    with pytest.raises(IntegrityError), database.write() as session:
        session.execute(update(ModelVersion).values(is_default=True))


def test_update_metrics_is_audited(database, model):
    metrics = {"auroc": 0.97, "f1": 0.88}
    database.run_write(
        lambda session: registry.update_model_metrics(session, model.id, metrics, "carl"),
        action="metrics",
    )
    with database.read() as session:
        assert registry.get_model_version(session, model.id).metrics == metrics
        entry = audit.list_entries(session, action=AuditAction.MODEL_METRICS)[0]
    assert entry.details["metrics"] == metrics
    assert entry.entity_id == model.id


def test_register_is_audited(database, model):
    with database.read() as session:
        entries = audit.list_entries(session, action=AuditAction.MODEL_REGISTER)
    assert [(e.entity_id, e.actor) for e in entries] == [(model.id, "ana")]
    assert entries[0].details["version"] == 1


def test_list_filters_by_name(database, files):
    register_model(database, files, "needles")
    register_model(database, files, "magnets")
    with database.read() as session:
        names = [m.name for m in registry.list_model_versions(session, name="magnets")]
    assert names == ["magnets"]


def test_unknown_model_version(database):
    with pytest.raises(DavaeError) as caught, database.read() as session:
        registry.get_model_version(session, 999)
    assert caught.value.code == "model_not_found"
    assert caught.value.params == {"model_version_id": 999}


def test_invalid_thresholds_rejected(database, files):
    bundle = files.store_original(b"not really a bundle", "pt")
    with pytest.raises(DavaeError) as caught, database.write() as session:
        registry.register_model_version(
            session,
            name="bad",
            bundle=bundle,
            config={},
            thresholds={**THRESHOLDS, "recon": -1.0},
            created_by="ana",
        )
    assert caught.value.params["setting"] == "thresholds.recon"
