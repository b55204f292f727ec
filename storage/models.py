"""SQLAlchemy models: the model registry, batches, images, scores, labels, audit log and jobs.

Enumerations are stored as short strings with a CHECK constraint, so the
schema is the same on SQLite and PostgreSQL. Times are stored in UTC and
always come back timezone-aware. Labels and audit entries are append-only:
the migration adds triggers that reject UPDATE and DELETE on both tables.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Double,
    Enum,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Explicit constraint and index names, so migrations can refer to them.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

NAME_LENGTH = 200  # model names, batch names, user names
PATH_LENGTH = 1000  # file names and folder paths inside an upload, stored paths
CODE_LENGTH = 64  # error codes, audit actions
SHA256_LENGTH = 64  # hexadecimal digest


def utc_now() -> datetime:
    """Return the current time as a timezone-aware UTC datetime."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC that always loads as a timezone-aware datetime.

    SQLite has no timezone type and returns naive values, while PostgreSQL
    returns aware ones. This type makes both return aware UTC datetimes. It
    rejects naive input, because its timezone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError(f"naive datetime {value!r}: pass a timezone-aware datetime")
        value = value.astimezone(UTC)
        # SQLite compares timestamps as text, so every value must use one format.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class BatchStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class ImageStatus(enum.StrEnum):
    PENDING = "pending"  # original stored, not scored yet
    SCORED = "scored"
    REJECTED = "rejected"


class LabelValue(enum.StrEnum):
    NORMAL = "normal"
    ANOMALOUS = "anomalous"


class LabelSource(enum.StrEnum):
    AUTO = "auto"  # from the thresholds
    HUMAN = "human"  # set by a reviewer


class JobKind(enum.StrEnum):
    TRAIN = "train"
    SCORE = "score"
    EVALUATE = "evaluate"


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


def _string_enum(enum_class: type[enum.StrEnum], name: str) -> Enum:
    """Store an enumeration as VARCHAR(16) with a CHECK constraint named ``name``."""
    return Enum(
        enum_class,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON(),
        float: Double(),
    }


class ModelVersion(Base):
    """One registered model bundle: file, configuration, thresholds and metrics."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("name", "version"),
        # At most one default model: a partial unique index over the rows where it is set.
        Index(
            "ix_model_versions_single_default",
            "is_default",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    version: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per name
    bundle_path: Mapped[str] = mapped_column(String(PATH_LENGTH))  # relative to DAVAE_HOME
    bundle_sha256: Mapped[str] = mapped_column(String(SHA256_LENGTH))
    config: Mapped[dict[str, Any]]
    thresholds: Mapped[dict[str, Any]]
    metrics: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)


class Batch(Base):
    """A set of uploaded images scored with one model version."""

    __tablename__ = "batches"
    __table_args__ = (Index(None, "model_version_id", "created_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now, index=True)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    status: Mapped[BatchStatus] = mapped_column(
        _string_enum(BatchStatus, "batch_status"), default=BatchStatus.PENDING
    )
    # The thresholds in force for this batch; see storage.thresholds.validate_thresholds.
    thresholds: Mapped[dict[str, Any]]
    image_count: Mapped[int] = mapped_column(default=0)  # recorded files, rejected ones included
    scored_count: Mapped[int] = mapped_column(default=0)
    rejected_count: Mapped[int] = mapped_column(default=0)
    # Images whose latest auto label is anomalous; human corrections are counted
    # by storage.review.label_counts instead.
    anomaly_count: Mapped[int] = mapped_column(default=0)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    error_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    error_message: Mapped[str | None] = mapped_column(Text)


class Image(Base):
    """One uploaded file of a batch, scored, waiting to be scored, or rejected."""

    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("batch_id", "position"),
        Index(None, "batch_id", "status", "position"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id"))
    position: Mapped[int] = mapped_column()  # 0-based order of the file in the upload
    file_name: Mapped[str] = mapped_column(String(PATH_LENGTH))
    folder: Mapped[str] = mapped_column(String(PATH_LENGTH), default="")  # POSIX, "" at the top
    # None for a rejected file whose bytes could not be read (a damaged ZIP member).
    sha256: Mapped[str | None] = mapped_column(String(SHA256_LENGTH), index=True)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    width: Mapped[int | None]
    height: Mapped[int | None]
    format: Mapped[str | None] = mapped_column(String(16))  # as decoded, e.g. "PNG"
    stored_path: Mapped[str | None] = mapped_column(String(PATH_LENGTH))  # relative to DAVAE_HOME
    status: Mapped[ImageStatus] = mapped_column(_string_enum(ImageStatus, "image_status"))
    rejection_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    rejection_message: Mapped[str | None] = mapped_column(Text)
    rejection_params: Mapped[dict[str, Any] | None]
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Score(Base):
    """The scores of one image under one model version; at most one row per pair."""

    __tablename__ = "scores"
    __table_args__ = (
        UniqueConstraint("image_id", "model_version_id"),
        Index(None, "model_version_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    model_version_id: Mapped[int] = mapped_column(ForeignKey("model_versions.id"))
    recon_score: Mapped[float]  # the reduction named in the thresholds ("max" or "mean")
    latent_euclidean: Mapped[float]
    latent_mahalanobis: Mapped[float]
    latent_multiscale: Mapped[float | None]  # only for models with multi-scale statistics
    combined_score: Mapped[float]  # max(recon / t_recon, latent / t_latent) when scored
    heatmap_path: Mapped[str | None] = mapped_column(String(PATH_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)


class Label(Base):
    """One label decision; rows are only ever inserted.

    The current label of an image is its latest human label, else its latest
    auto label, where "latest" means the highest id.
    """

    __tablename__ = "labels"
    __table_args__ = (Index(None, "image_id", "source", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id"))
    value: Mapped[LabelValue] = mapped_column(_string_enum(LabelValue, "label_value"))
    source: Mapped[LabelSource] = mapped_column(_string_enum(LabelSource, "label_source"))
    reviewer: Mapped[str | None] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    thresholds: Mapped[dict[str, Any] | None]  # the thresholds in force when labelled
    comment: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """An action in the audit log, with its actor, entity and time. Rows are only ever inserted."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index(None, "batch_id", "id"),
        Index(None, "actor", "id"),
        Index(None, "action", "id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    actor: Mapped[str] = mapped_column(String(NAME_LENGTH))
    action: Mapped[str] = mapped_column(String(CODE_LENGTH))  # an audit.AuditAction value
    entity_type: Mapped[str] = mapped_column(String(32))  # "image", "batch", "model", "job"
    entity_id: Mapped[int | None]
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    details: Mapped[dict[str, Any]]


class Job(Base):
    """Long work (training, scoring, evaluation) that a background worker runs."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index(None, "status", "id"),
        Index(None, "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[JobKind] = mapped_column(_string_enum(JobKind, "job_kind"))
    status: Mapped[JobStatus] = mapped_column(
        _string_enum(JobStatus, "job_status"), default=JobStatus.QUEUED
    )
    params: Mapped[dict[str, Any]]
    progress: Mapped[dict[str, Any]]  # {"done": ..., "total": ..., "message": ..., ...}
    result: Mapped[dict[str, Any] | None]
    error_code: Mapped[str | None] = mapped_column(String(CODE_LENGTH))
    error_message: Mapped[str | None] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(NAME_LENGTH))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_id: Mapped[str | None] = mapped_column(String(NAME_LENGTH))  # the claiming worker
    attempts: Mapped[int] = mapped_column(default=0)  # how many times a worker claimed it
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id"))
    model_version_id: Mapped[int | None] = mapped_column(ForeignKey("model_versions.id"))
