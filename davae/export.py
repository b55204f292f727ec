"""Batch exports: the labelled CSV and the ZIP of images sorted by final label.

CSV: one row per uploaded file in upload order, rejected files included
(``status`` "rejected" with the rejection code and English reason). Column
names and values are machine-readable and the same in every language
(``normal``, ``anomalous``). A caller may pass translated headers for a file
meant for people. Text cells that a spreadsheet would run as a formula
(starting with ``=``, ``+``, ``-``, ``@``, tab or carriage return) get a
leading single quote. Numeric columns are written as plain numbers, never
quoted or altered, so a negative number stays a number. The encoding is
UTF-8, optionally with a byte order mark, which Excel needs to detect UTF-8.

ZIP::

    normal/<folder>/<file name>        originals by final label, folders kept
    anomalous/<folder>/<file name>
    unlabelled/<folder>/<file name>    stored but not scored yet (a batch still running)
    heatmaps/<label>/<folder>/<stem>.png
    labels.csv                         the CSV, plus archive_path and heatmap_archive_path
    manifest.json                      model, thresholds, batch, counts, export time and user

Two files that would get the same path (the same name uploaded twice, or
names that differ only in case, which Windows and macOS treat as one) are
told apart as ``img_001 (2).png``. Names are written exactly as uploaded
and stored in UTF-8 (Python's zipfile sets the UTF-8 flag for them).
The heatmaps are the overlays the worker stored at scoring time (longest
side 512 pixels by default, on the model's fixed colour scale), the same
pictures the Review gallery shows, so an export never loads the model.

Nothing here imports torch or Streamlit, so the CLI can use it as well.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import re
import shutil
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import davae
from storage import registry
from storage.batches import get_batch
from storage.db import Storage
from storage.export import ExportRow, export_rows, record_export
from storage.files import FileStore
from storage.models import ImageStatus

logger = logging.getLogger(__name__)

CSV_COLUMNS = (
    "file_name",
    "folder",
    "sha256",
    "batch_id",
    "batch_name",
    "model_name",
    "model_version",
    "status",
    "rejection_code",
    "rejection_reason",
    "recon_score",
    "latent_euclidean",
    "latent_mahalanobis",
    "latent_multiscale",
    "combined_score",
    "threshold_recon",
    "threshold_latent",
    "recon_reduction",
    "latent_metric",
    "review_low",
    "review_high",
    "auto_label",
    "human_label",
    "final_label",
    "reviewer",
    "reviewed_at",
)
ARCHIVE_COLUMNS = ("archive_path", "heatmap_archive_path")  # only in the ZIP's CSV
NUMERIC_COLUMNS = frozenset(
    {
        "batch_id",
        "model_version",
        "recon_score",
        "latent_euclidean",
        "latent_mahalanobis",
        "latent_multiscale",
        "combined_score",
        "threshold_recon",
        "threshold_latent",
        "review_low",
        "review_high",
    }
)
# First characters that make Excel, LibreOffice or Google Sheets read a cell as a formula.
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
CSV_NAME = "labels.csv"
MANIFEST_NAME = "manifest.json"
HEATMAPS_DIR = "heatmaps"
UNLABELLED_DIR = "unlabelled"
EXPORTS_DIR = "exports"  # under DAVAE_HOME: ZIP files built for download
EXPORT_MAX_AGE_S = 24 * 3600
MANIFEST_FORMAT_VERSION = 1
_COPY_CHUNK = 1024 * 1024

Progress = Callable[[int, int], None]


# -- CSV --------------------------------------------------------------------------


def neutralize(text: str) -> str:
    """Return ``text`` with a leading single quote if a spreadsheet would run it as a formula."""
    return "'" + text if text.startswith(FORMULA_PREFIXES) else text


def _latent(row: ExportRow, metric: str) -> float | None:
    return {
        "mahalanobis": row.latent_mahalanobis,
        "euclidean": row.latent_euclidean,
        "multiscale": row.latent_multiscale,
    }.get(metric)


def combined_score(row: ExportRow) -> float | None:
    """Return max(recon / t_recon, latent / t_latent) under the row's own thresholds.

    The stored combined score belongs to the thresholds in force at scoring
    time, and this one matches the thresholds and the auto label in the same
    row. A missing latent distance leaves the reconstruction term alone.
    """
    thresholds = row.thresholds or {}
    if row.recon_score is None or not thresholds.get("recon") or not thresholds.get("latent"):
        return row.combined_score
    terms = [row.recon_score / thresholds["recon"]]
    latent = _latent(row, thresholds.get("latent_metric", ""))
    if latent is not None:
        terms.append(latent / thresholds["latent"])
    return max(terms)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def csv_record(row: ExportRow) -> dict[str, Any]:
    """Return one CSV row as a dict of the columns in ``CSV_COLUMNS``, values unformatted."""
    scored = row.status == ImageStatus.SCORED
    thresholds = (row.thresholds or {}) if scored else {}
    return {
        "file_name": row.file_name,
        "folder": row.folder,
        "sha256": row.sha256,
        "batch_id": row.batch_id,
        "batch_name": row.batch_name,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "status": str(row.status),
        "rejection_code": row.rejection_code,
        "rejection_reason": row.rejection_message,
        "recon_score": row.recon_score,
        "latent_euclidean": row.latent_euclidean,
        "latent_mahalanobis": row.latent_mahalanobis,
        "latent_multiscale": row.latent_multiscale,
        "combined_score": combined_score(row) if scored else None,
        "threshold_recon": thresholds.get("recon"),
        "threshold_latent": thresholds.get("latent"),
        "recon_reduction": thresholds.get("recon_reduction"),
        "latent_metric": thresholds.get("latent_metric"),
        "review_low": thresholds.get("review_low"),
        "review_high": thresholds.get("review_high"),
        "auto_label": _text(row.auto_label),
        "human_label": _text(row.human_label),
        "final_label": _text(row.final_label),
        "reviewer": row.reviewer,
        "reviewed_at": row.reviewed_at.astimezone(UTC).isoformat(timespec="seconds")
        if row.reviewed_at
        else None,
    }


def _cell(column: str, value: Any) -> Any:
    if value is None:
        return ""
    if column in NUMERIC_COLUMNS:
        # Numbers go out as numbers: repr-exact floats, never quoted, never neutralised.
        if isinstance(value, float) and not math.isfinite(value):
            return ""
        return value
    return neutralize(str(value))


def write_csv(
    records: Iterable[Mapping[str, Any]],
    stream: BinaryIO,
    *,
    columns: Sequence[str] = CSV_COLUMNS,
    headers: Mapping[str, str] | None = None,
    bom: bool = False,
) -> int:
    """Write records as CSV to a binary stream; return the number of data rows.

    ``headers`` maps column names to the header text to show instead (for
    example Korean headers for people); values are never translated. With
    ``bom`` the file starts with a UTF-8 byte order mark for Excel.
    """
    text = io.TextIOWrapper(stream, encoding="utf-8-sig" if bom else "utf-8", newline="")
    try:
        writer = csv.writer(text, lineterminator="\r\n")
        writer.writerow([neutralize((headers or {}).get(column, column)) for column in columns])
        count = 0
        for record in records:
            writer.writerow([_cell(column, record.get(column)) for column in columns])
            count += 1
        text.flush()
    finally:
        text.detach()  # leave the caller's stream open
    return count


def csv_bytes(
    rows: Sequence[ExportRow], *, headers: Mapping[str, str] | None = None, bom: bool = False
) -> bytes:
    """Return the CSV of export rows as bytes."""
    buffer = io.BytesIO()
    write_csv((csv_record(row) for row in rows), buffer, headers=headers, bom=bom)
    return buffer.getvalue()


# -- archive layout ---------------------------------------------------------------


def _clean_parts(path: str) -> list[str]:
    # Folder paths come from the upload; drop anything that would leave the archive's folder.
    parts = re.split(r"[\\/]+", path)
    return [part for part in parts if part not in ("", ".", "..")]


def _collision_key(path: str) -> str:
    return unicodedata.normalize("NFC", path).casefold()


def unique_path(path: str, used: set[str]) -> str:
    """Return ``path``, or ``name (2).ext``, ``name (3).ext``, ... if an earlier one took it.

    Paths that differ only in letter case or Unicode normalisation count as
    the same, because Windows and macOS file systems treat them so.
    ``used`` is updated.
    """
    candidate = path
    pure = PurePosixPath(path)
    number = 2
    while _collision_key(candidate) in used:
        name = f"{pure.stem} ({number}){pure.suffix}"
        candidate = str(pure.with_name(name))
        number += 1
    used.add(_collision_key(candidate))
    return candidate


@dataclass(frozen=True)
class ArchivePaths:
    """Paths of one row's original and heatmap in the ZIP, None where it has none."""

    image: str | None
    heatmap: str | None


def label_folder(row: ExportRow) -> str | None:
    """Return the top folder of a row's original in the ZIP, or None for a file left out."""
    if row.status == ImageStatus.REJECTED or not row.stored_path:
        return None
    return str(row.final_label) if row.final_label is not None else UNLABELLED_DIR


def archive_paths(rows: Sequence[ExportRow]) -> list[ArchivePaths]:
    """Assign every row its paths in the ZIP, in row order, every path unique."""
    used: set[str] = {_collision_key(CSV_NAME), _collision_key(MANIFEST_NAME)}
    paths = []
    for row in rows:
        top = label_folder(row)
        if top is None:
            paths.append(ArchivePaths(None, None))
            continue
        name = "_".join(_clean_parts(row.file_name)) or "image"
        image = unique_path("/".join([top, *_clean_parts(row.folder), name]), used)
        heatmap = None
        if row.heatmap_path:
            heatmap = unique_path(str(PurePosixPath(HEATMAPS_DIR, image).with_suffix(".png")), used)
        paths.append(ArchivePaths(image, heatmap))
    return paths


# -- ZIP --------------------------------------------------------------------------


@dataclass
class ZipSummary:
    """Counts of a written ZIP export, and the stored files it had to leave out."""

    rows: int = 0
    images: int = 0
    heatmaps: int = 0
    missing: list[str] = field(default_factory=list)  # stored paths not found on disk


def _copy_into(archive: zipfile.ZipFile, name: str, source: Path, moment: datetime) -> None:
    info = zipfile.ZipInfo(name, date_time=moment.timetuple()[:6])
    info.compress_type = zipfile.ZIP_STORED  # PNG, JPEG and TIFF files are compressed already
    info.external_attr = 0o644 << 16
    size = source.stat().st_size
    with source.open("rb") as reader, archive.open(info, "w", force_zip64=size > 2**31) as writer:
        shutil.copyfileobj(reader, writer, _COPY_CHUNK)


def _add_bytes(archive: zipfile.ZipFile, name: str, data: bytes, moment: datetime) -> None:
    info = zipfile.ZipInfo(name, date_time=moment.timetuple()[:6])
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def write_zip(
    rows: Sequence[ExportRow],
    target: Path,
    files: FileStore,
    manifest: Mapping[str, Any],
    *,
    headers: Mapping[str, str] | None = None,
    bom: bool = False,
    progress: Progress | None = None,
) -> ZipSummary:
    """Write the ZIP of a batch to ``target``, streaming each file from disk.

    ``manifest`` is completed with the file counts and any stored file that
    was missing, which is left out of the archive rather than stopping the
    export. ``progress(done, total)`` is called after each row.
    """
    moment = datetime.now(UTC)
    paths = archive_paths(rows)
    summary = ZipSummary(rows=len(rows))
    records = []
    with zipfile.ZipFile(target, "w", allowZip64=True) as archive:
        for done, (row, where) in enumerate(zip(rows, paths, strict=True), start=1):
            image, heatmap = where.image, where.heatmap
            if image is not None:
                try:
                    _copy_into(archive, image, files.resolve(row.stored_path), moment)
                    summary.images += 1
                except FileNotFoundError:
                    summary.missing.append(row.stored_path)
                    image = None
            if heatmap is not None:
                try:
                    _copy_into(archive, heatmap, files.resolve(row.heatmap_path), moment)
                    summary.heatmaps += 1
                except FileNotFoundError:
                    summary.missing.append(row.heatmap_path)
                    heatmap = None
            records.append(
                {**csv_record(row), "archive_path": image, "heatmap_archive_path": heatmap}
            )
            if progress is not None:
                progress(done, len(rows))

        buffer = io.BytesIO()
        write_csv(records, buffer, columns=CSV_COLUMNS + ARCHIVE_COLUMNS, headers=headers, bom=bom)
        _add_bytes(archive, CSV_NAME, buffer.getvalue(), moment)
        complete = {
            **manifest,
            "files": {"images": summary.images, "heatmaps": summary.heatmaps},
            "missing_files": summary.missing,
        }
        text = json.dumps(complete, ensure_ascii=False, indent=2, default=str)
        _add_bytes(archive, MANIFEST_NAME, text.encode("utf-8"), moment)
    if summary.missing:
        logger.warning("%d stored files were missing from the export", len(summary.missing))
    return summary


def label_counts(rows: Sequence[ExportRow]) -> dict[str, int]:
    """Count exported rows by final label and status."""
    counts = dict.fromkeys(("normal", "anomalous", "unlabelled", "rejected", "human_reviewed"), 0)
    for row in rows:
        if row.status == ImageStatus.REJECTED:
            counts["rejected"] += 1
        elif row.final_label is None:
            counts["unlabelled"] += 1
        else:
            counts[str(row.final_label)] += 1
        if row.human_label is not None:
            counts["human_reviewed"] += 1
    counts["total"] = len(rows)
    return counts


def build_manifest(
    session: Any,
    batch_id: int,
    rows: Sequence[ExportRow],
    actor: str,
    csv_options: Mapping[str, Any],
) -> dict[str, Any]:
    """Describe an export: app, time and user, batch, model, thresholds, counts, rejected files."""
    batch = get_batch(session, batch_id)
    model = registry.get_model_version(session, batch.model_version_id)
    return {
        "format": "davae-export",
        "format_version": MANIFEST_FORMAT_VERSION,
        "app_version": davae.__version__,
        "exported_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "exported_by": actor,
        "batch": {
            "id": batch.id,
            "name": batch.name,
            "created_at": batch.created_at.isoformat(timespec="seconds"),
            "created_by": batch.created_by,
            "status": str(batch.status),
            "image_count": batch.image_count,
            "scored_count": batch.scored_count,
            "rejected_count": batch.rejected_count,
        },
        "model": {
            "id": model.id,
            "name": model.name,
            "version": model.version,
            "bundle_sha256": model.bundle_sha256,
            "calibrated_thresholds": model.thresholds,
        },
        # The labels were made with each row's own thresholds (CSV columns
        # threshold_*); these are the batch's last applied ones.
        "thresholds": batch.thresholds,
        "counts": label_counts(rows),
        "layout": {
            "normal": "normal/",
            "anomalous": "anomalous/",
            "unlabelled": f"{UNLABELLED_DIR}/",
            "heatmaps": f"{HEATMAPS_DIR}/",
            "csv": CSV_NAME,
        },
        "heatmaps": "overlays stored at scoring time, on the model's fixed colour scale",
        "csv": dict(csv_options),
        "rejected": [
            {
                "file_name": row.file_name,
                "folder": row.folder,
                "code": row.rejection_code,
                "reason": row.rejection_message,
            }
            for row in rows
            if row.status == ImageStatus.REJECTED
        ],
    }


# -- exports with their audit entry ----------------------------------------------


def export_csv(
    storage: Storage,
    batch_id: int,
    actor: str,
    *,
    headers: Mapping[str, str] | None = None,
    bom: bool = False,
) -> bytes:
    """Build a batch's CSV and record the export in the audit log under ``actor``."""
    with storage.database.read() as session:
        rows = export_rows(session, batch_id)
    data = csv_bytes(rows, headers=headers, bom=bom)
    storage.database.run_write(
        lambda session: record_export(
            session, batch_id, actor, export_format="csv", row_count=len(rows)
        ),
        action=f"record the CSV export of batch {batch_id}",
    )
    return data


def export_zip(
    storage: Storage,
    batch_id: int,
    actor: str,
    target: Path,
    *,
    headers: Mapping[str, str] | None = None,
    header_language: str = "en",
    bom: bool = False,
    progress: Progress | None = None,
) -> ZipSummary:
    """Write a batch's ZIP to ``target`` and record the export in the audit log under ``actor``."""
    csv_options = {"file": CSV_NAME, "encoding": "utf-8", "bom": bom, "headers": header_language}
    with storage.database.read() as session:
        rows = export_rows(session, batch_id)
        manifest = build_manifest(session, batch_id, rows, actor, csv_options)
    summary = write_zip(
        rows, target, storage.files, manifest, headers=headers, bom=bom, progress=progress
    )
    storage.database.run_write(
        lambda session: record_export(
            session, batch_id, actor, export_format="zip", row_count=len(rows)
        ),
        action=f"record the ZIP export of batch {batch_id}",
    )
    logger.info(
        "batch %s exported as ZIP by %s: %d images, %d heatmaps",
        batch_id,
        actor,
        summary.images,
        summary.heatmaps,
    )
    return summary


def export_file_name(batch_id: int, batch_name: str, extension: str) -> str:
    """Return a download file name such as ``batch-3-lot_7.csv``, safe on every file system."""
    safe = re.sub(r"[^\w\-]+", "_", batch_name, flags=re.UNICODE).strip("_")[:60]
    return f"batch-{batch_id}-{safe}.{extension}" if safe else f"batch-{batch_id}.{extension}"


def new_export_path(home: Path, batch_id: int) -> Path:
    """Return a new file path for a ZIP export under ``DAVAE_HOME/exports``; drop old ones.

    ZIP files there older than a day are deleted first, because each is a
    copy of a batch kept only until the user downloaded it.
    """
    folder = home / EXPORTS_DIR
    folder.mkdir(parents=True, exist_ok=True)
    cutoff = time.time() - EXPORT_MAX_AGE_S
    for old in folder.glob("*.zip"):
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:
            pass
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return folder / f"batch-{batch_id}-{stamp}.zip"
