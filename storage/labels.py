"""Labels: auto labels from stored scores, human labels, and the current label of an image.

Labels are append-only. The current label of an image is its latest human
label if it has one, else its latest auto label. "Latest" means the highest
id, which follows insertion order on both backends.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import JSON, Select, Subquery, and_, case, func, insert, literal, select, true
from sqlalchemy.orm import Session

from davae.errors import DavaeError, invalid_setting
from storage import audit
from storage.audit import AuditAction
from storage.batches import get_batch, lock_batch
from storage.db import Database
from storage.models import (
    Image,
    ImageStatus,
    Label,
    LabelSource,
    LabelValue,
    Score,
    UTCDateTime,
    utc_now,
)
from storage.retry import describe_failure
from storage.thresholds import anomalous_condition, validate_thresholds

logger = logging.getLogger(__name__)

COMMENT_LENGTH = 2000


@dataclass(frozen=True)
class LatestLabels:
    """Each image's latest auto and human label, ready to join to a query over ``images``.

    ``auto`` and ``human`` have the columns of ``labels`` (all None where the
    image has no such label). Select from them, then pass the statement
    through ``join`` before adding WHERE clauses.
    """

    auto: Any
    human: Any
    join: Callable[[Select[Any]], Select[Any]]


def latest_labels(batch_id: int, dialect_name: str) -> LatestLabels:
    """Return the latest-label joins for the images of one batch.

    Either way each lookup uses the index on (image_id, source, id), so the
    cost grows with the number of images, not with how often they were
    relabelled or how many labels other batches have. PostgreSQL gets LATERAL
    subqueries, because with the join used for SQLite, PostgreSQL 15 sometimes
    planned a hash join over the whole labels table once statistics existed,
    and reading 10,000 images then took seconds. SQLite has no LATERAL, and
    its planner looks labels up by rowid there.
    """
    if dialect_name == "postgresql":
        auto = _latest_lateral(LabelSource.AUTO, "auto_label")
        human = _latest_lateral(LabelSource.HUMAN, "human_label")
        return LatestLabels(
            auto=auto,
            human=human,
            join=lambda statement: statement.outerjoin(auto, true()).outerjoin(human, true()),
        )

    ids = _latest_label_ids(batch_id)
    auto = Label.__table__.alias("auto_label")
    human = Label.__table__.alias("human_label")
    return LatestLabels(
        auto=auto,
        human=human,
        join=lambda statement: (
            statement.join(ids, ids.c.image_id == Image.id)
            .outerjoin(auto, auto.c.id == ids.c.auto_id)
            .outerjoin(human, human.c.id == ids.c.human_id)
        ),
    )


def _latest_lateral(source: LabelSource, name: str) -> Any:
    return (
        select(*Label.__table__.c)
        .where(Label.image_id == Image.id, Label.source == source)
        .order_by(Label.id.desc())
        .limit(1)
        .lateral(name)
    )


def _latest_label_ids(batch_id: int) -> Subquery:
    # Every image of the batch with the ids of its latest auto and human label.
    def latest(source: LabelSource) -> Any:
        return (
            select(func.max(Label.id))
            .where(Label.image_id == Image.id, Label.source == source)
            .scalar_subquery()
        )

    return (
        select(
            Image.id.label("image_id"),
            latest(LabelSource.AUTO).label("auto_id"),
            latest(LabelSource.HUMAN).label("human_id"),
        )
        .where(Image.batch_id == batch_id)
        .subquery("latest_labels")
    )


def current_label(session: Session, image_id: int) -> Label | None:
    """Return the current label of one image, or None if it has none."""
    human_first = case((Label.source == LabelSource.HUMAN, 0), else_=1)
    statement = (
        select(Label)
        .where(Label.image_id == image_id)
        .order_by(human_first, Label.id.desc())
        .limit(1)
    )
    return session.scalars(statement).first()


def label_history(session: Session, image_id: int) -> list[Label]:
    """Return every label of one image, newest first."""
    statement = select(Label).where(Label.image_id == image_id).order_by(Label.id.desc())
    return list(session.scalars(statement))


def add_human_labels(
    session: Session,
    image_ids: Sequence[int],
    value: LabelValue | str,
    reviewer: str,
    *,
    comment: str | None = None,
) -> list[Label]:
    """Label images as a reviewer; each label gets one audit entry.

    The labels carry the thresholds of each image's batch. Raises
    ``image_not_found`` for an unknown id and ``invalid_setting`` for a bad
    value, reviewer or comment, or for a rejected image, which has nothing to review.
    """
    label_value = _check_value(value)
    reviewer = audit.check_actor(reviewer, "reviewer")
    if comment is not None and len(comment) > COMMENT_LENGTH:
        raise invalid_setting(
            "comment", comment[:40] + "...", f"at most {COMMENT_LENGTH} characters"
        )

    labels = []
    for image_id in image_ids:
        image = session.get(Image, image_id)
        if image is None:
            raise DavaeError(
                "image_not_found", f"image {image_id} does not exist", image_id=image_id
            )
        if image.status == ImageStatus.REJECTED:
            raise invalid_setting("image", image.file_name, "an image that was not rejected")
        batch = get_batch(session, image.batch_id)
        previous = current_label(session, image_id)
        label = Label(
            image_id=image_id,
            value=label_value,
            source=LabelSource.HUMAN,
            reviewer=reviewer,
            created_at=utc_now(),
            thresholds=batch.thresholds,
            comment=comment,
        )
        session.add(label)
        session.flush()
        audit.record(
            session,
            actor=reviewer,
            action=AuditAction.LABEL_SET,
            entity_type="image",
            entity_id=image_id,
            batch_id=image.batch_id,
            details={
                "label_id": label.id,
                "value": label_value.value,
                "previous": None if previous is None else previous.value.value,
                "previous_source": None if previous is None else previous.source.value,
                "file_name": image.file_name,
                "comment": comment,
            },
        )
        labels.append(label)
    return labels


def add_human_label(
    session: Session,
    image_id: int,
    value: LabelValue | str,
    reviewer: str,
    *,
    comment: str | None = None,
) -> Label:
    """Label one image as a reviewer; see ``add_human_labels``."""
    return add_human_labels(session, [image_id], value, reviewer, comment=comment)[0]


def save_human_label(
    database: Database,
    image_id: int,
    value: LabelValue | str,
    reviewer: str,
    *,
    comment: str | None = None,
) -> Label:
    """Save one reviewer label in its own transaction, retrying while the database is busy.

    When every retry fails, raises ``label_not_saved`` naming the image and
    the label, so the UI can tell the reviewer exactly which click was lost.
    """
    label_value = _check_value(value)

    def failed(error: BaseException) -> DavaeError:
        file_name = _file_name_or_blank(database, image_id)
        detail = describe_failure(error)
        image_name = file_name or f"image {image_id}"
        return DavaeError(
            "label_not_saved",
            f"the label {label_value.value!r} for {image_name} was not saved: {detail}",
            image_id=image_id,
            file_name=file_name,
            value=label_value.value,
            detail=detail,
        )

    return database.run_write(
        lambda session: add_human_label(session, image_id, label_value, reviewer, comment=comment),
        action=f"save label {label_value.value} for image {image_id}",
        on_failure=failed,
    )


def _file_name_or_blank(database: Database, image_id: int) -> str:
    # Reads do not wait for writers in WAL mode, so this usually works even
    # when the write did not. If it fails too, the error names the id only.
    try:
        with database.read() as session:
            return session.scalar(select(Image.file_name).where(Image.id == image_id)) or ""
    except Exception:
        logger.warning("could not read the file name of image %s", image_id, exc_info=True)
        return ""


def _check_value(value: LabelValue | str) -> LabelValue:
    try:
        return LabelValue(value)
    except ValueError:
        raise invalid_setting("label", value, "normal or anomalous") from None


@dataclass(frozen=True)
class AppliedThresholds:
    """Counts from ``apply_thresholds``: auto labels written, and the anomalous ones."""

    labelled: int
    anomalous: int


def apply_thresholds(
    session: Session, batch_id: int, thresholds: Mapping[str, Any], actor: str
) -> AppliedThresholds:
    """Write a new auto label for every scored image of a batch from its stored scores.

    One INSERT ... SELECT writes all labels, so no score leaves the database.
    The batch's thresholds and anomaly count are updated and one audit entry
    records the change. Human labels are untouched and keep precedence.
    """
    checked = validate_thresholds(thresholds)
    actor = audit.check_actor(actor)
    batch = lock_batch(session, batch_id)
    previous = batch.thresholds

    anomalous = anomalous_condition(checked)
    value = case((anomalous, LabelValue.ANOMALOUS.value), else_=LabelValue.NORMAL.value)
    scored = and_(
        Score.image_id == Image.id,
        Score.model_version_id == batch.model_version_id,
    )
    rows = (
        select(
            Image.id,
            value,
            literal(LabelSource.AUTO.value),
            literal(actor),
            literal(utc_now(), UTCDateTime()),
            literal(checked, JSON()),
        )
        .join(Score, scored)
        .where(Image.batch_id == batch_id, Image.status == ImageStatus.SCORED)
    )
    columns = ["image_id", "value", "source", "reviewer", "created_at", "thresholds"]
    # Counted before the insert because drivers differ in the rowcount they
    # report for INSERT ... SELECT (psycopg returns -1 here).
    labelled, anomaly_count = session.execute(
        select(func.count(), func.sum(case((anomalous, 1), else_=0)))
        .select_from(Image)
        .join(Score, scored)
        .where(Image.batch_id == batch_id, Image.status == ImageStatus.SCORED)
    ).one()
    session.execute(insert(Label).from_select(columns, rows))
    batch.thresholds = checked
    batch.anomaly_count = anomaly_count or 0
    audit.record(
        session,
        actor=actor,
        action=AuditAction.THRESHOLDS_APPLY,
        entity_type="batch",
        entity_id=batch_id,
        batch_id=batch_id,
        details={
            "thresholds": checked,
            "previous": previous,
            "labelled": labelled,
            "anomalous": batch.anomaly_count,
        },
    )
    session.flush()
    logger.info(
        "thresholds applied to batch %s by %s: %d labels, %d anomalous",
        batch_id,
        actor,
        labelled,
        batch.anomaly_count,
    )
    return AppliedThresholds(labelled=labelled, anomalous=batch.anomaly_count)
