"""The model registry: every trained bundle with its configuration, thresholds and metrics.

Versions are numbered 1, 2, ... per model name. At most one version is the
default, the one the dashboard preselects for scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from davae.errors import DavaeError, invalid_setting
from storage import audit
from storage.audit import AuditAction
from storage.files import StoredFile
from storage.models import NAME_LENGTH, ModelVersion, utc_now
from storage.thresholds import validate_thresholds

logger = logging.getLogger(__name__)


def get_model_version(session: Session, model_version_id: int) -> ModelVersion:
    """Return a model version; raise ``model_not_found`` if there is none with this id."""
    model = session.get(ModelVersion, model_version_id)
    if model is None:
        raise DavaeError(
            "model_not_found",
            f"model version {model_version_id} does not exist",
            model_version_id=model_version_id,
        )
    return model


def get_default_model_version(session: Session) -> ModelVersion | None:
    """Return the default model version, or None when none is marked."""
    return session.scalars(select(ModelVersion).where(ModelVersion.is_default)).first()


def list_model_versions(session: Session, *, name: str | None = None) -> list[ModelVersion]:
    """Return model versions, newest first, optionally of one model name."""
    statement = select(ModelVersion).order_by(ModelVersion.id.desc())
    if name is not None:
        statement = statement.where(ModelVersion.name == name)
    return list(session.scalars(statement))


def register_model_version(
    session: Session,
    *,
    name: str,
    bundle: StoredFile,
    config: Mapping[str, Any],
    thresholds: Mapping[str, Any],
    created_by: str,
    metrics: Mapping[str, Any] | None = None,
    make_default: bool = False,
) -> ModelVersion:
    """Register a stored bundle as the next version of ``name``.

    ``bundle`` comes from ``FileStore.store_model_bundle``. The first version
    ever registered becomes the default even without ``make_default``.
    """
    created_by = audit.check_actor(created_by, "created_by")
    name = name.strip()
    if not name or len(name) > NAME_LENGTH:
        raise invalid_setting("model name", name, f"1 to {NAME_LENGTH} characters")
    checked = validate_thresholds(thresholds)
    # NOTE: two registrations of the same name at the same moment on PostgreSQL
    # can pick the same number. The unique (name, version) constraint then
    # rejects the second with an IntegrityError, so no duplicate is stored.
    latest = session.scalar(select(func.max(ModelVersion.version)).where(ModelVersion.name == name))
    model = ModelVersion(
        name=name,
        version=(latest or 0) + 1,
        bundle_path=bundle.relative_path,
        bundle_sha256=bundle.sha256,
        config=dict(config),
        thresholds=checked,
        metrics=dict(metrics) if metrics is not None else None,
        created_at=utc_now(),
        created_by=created_by,
        is_default=False,
    )
    session.add(model)
    session.flush()
    audit.record(
        session,
        actor=created_by,
        action=AuditAction.MODEL_REGISTER,
        entity_type="model",
        entity_id=model.id,
        details={
            "name": name,
            "version": model.version,
            "bundle_sha256": bundle.sha256,
            "thresholds": checked,
        },
    )
    if make_default or get_default_model_version(session) is None:
        set_default_model_version(session, model.id, created_by)
    logger.info("model %s version %d registered by %s", name, model.version, created_by)
    return model


def set_default_model_version(session: Session, model_version_id: int, actor: str) -> ModelVersion:
    """Make one version the default and clear the flag on every other one."""
    model = get_model_version(session, model_version_id)
    previous = get_default_model_version(session)
    if previous is not None and previous.id == model.id:
        return model
    # Clear first: the partial unique index allows one flagged row at a time.
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.is_default, ModelVersion.id != model.id)
        .values(is_default=False)
    )
    model.is_default = True
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=AuditAction.MODEL_SET_DEFAULT,
        entity_type="model",
        entity_id=model.id,
        details={"previous_default": None if previous is None else previous.id},
    )
    return model


def update_model_metrics(
    session: Session, model_version_id: int, metrics: Mapping[str, Any], actor: str
) -> ModelVersion:
    """Replace a version's evaluation metrics, for example after an evaluation job."""
    model = get_model_version(session, model_version_id)
    previous = model.metrics
    model.metrics = dict(metrics)
    session.flush()
    audit.record(
        session,
        actor=actor,
        action=AuditAction.MODEL_METRICS,
        entity_type="model",
        entity_id=model.id,
        details={"metrics": model.metrics, "previous": previous},
    )
    return model
