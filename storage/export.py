"""The rows of a batch export, and the audit entry for an export.

Writing the CSV and the ZIP belongs to the dashboard; this module supplies
one row per image with everything the export contains.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy.orm import Session

from storage import audit
from storage.audit import AuditAction
from storage.batches import get_batch
from storage.models import ImageStatus, LabelValue
from storage.registry import get_model_version
from storage.review import ImageRow, image_rows_statement

logger = logging.getLogger(__name__)


class ExportRow(NamedTuple):
    """One exported image. Score and label fields are None where absent."""

    file_name: str
    folder: str
    sha256: str | None
    batch_id: int
    batch_name: str
    model_name: str
    model_version: int
    status: ImageStatus
    rejection_code: str | None
    rejection_message: str | None
    recon_score: float | None
    latent_euclidean: float | None
    latent_mahalanobis: float | None
    latent_multiscale: float | None
    combined_score: float | None
    thresholds: dict[str, Any]  # those of the latest auto label, else the batch's
    auto_label: LabelValue | None
    human_label: LabelValue | None
    final_label: LabelValue | None
    reviewer: str | None  # of the latest human label
    reviewed_at: datetime | None
    stored_path: str | None  # original, relative to DAVAE_HOME, for the ZIP
    heatmap_path: str | None


def export_rows(session: Session, batch_id: int) -> list[ExportRow]:
    """Return the export rows of a batch in upload order, rejected files included."""
    batch = get_batch(session, batch_id)
    model = get_model_version(session, batch.model_version_id)
    connection = session.connection()
    statement = image_rows_statement(batch, connection.dialect.name, with_auto_thresholds=True)
    rows = []
    for *columns, auto_thresholds in connection.execute(statement).all():
        image = ImageRow(*columns)
        rows.append(
            ExportRow(
                file_name=image.file_name,
                folder=image.folder,
                sha256=image.sha256,
                batch_id=batch.id,
                batch_name=batch.name,
                model_name=model.name,
                model_version=model.version,
                status=image.status,
                rejection_code=image.rejection_code,
                rejection_message=image.rejection_message,
                recon_score=image.recon_score,
                latent_euclidean=image.latent_euclidean,
                latent_mahalanobis=image.latent_mahalanobis,
                latent_multiscale=image.latent_multiscale,
                combined_score=image.combined_score,
                thresholds=auto_thresholds or batch.thresholds,
                auto_label=image.auto_label,
                human_label=image.human_label,
                final_label=image.final_label,
                reviewer=image.reviewer,
                reviewed_at=image.reviewed_at,
                stored_path=image.stored_path,
                heatmap_path=image.heatmap_path,
            )
        )
    return rows


def record_export(
    session: Session, batch_id: int, actor: str, *, export_format: str, row_count: int
) -> None:
    """Write the audit entry for an export of ``row_count`` rows.

    Call it in a write transaction once the file is built, for example with
    ``database.run_write(lambda session: record_export(session, ...), action="export")``.
    """
    get_batch(session, batch_id)
    audit.record(
        session,
        actor=actor,
        action=AuditAction.EXPORT,
        entity_type="batch",
        entity_id=batch_id,
        batch_id=batch_id,
        details={"format": export_format, "rows": row_count},
    )
    logger.info(
        "batch %s exported as %s by %s (%d rows)", batch_id, export_format, actor, row_count
    )
