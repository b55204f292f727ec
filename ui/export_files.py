"""The Export page's helpers: CSV headers, the CSV download, building the ZIP.

The files themselves are written by ``davae.export``. The CSV is made when
the user clicks its download button (a deferred ``st.download_button``
callable, run outside the script run), so every download gets its own audit
entry. The ZIP can take minutes for a large batch, so it is built first,
with a progress bar, into ``DAVAE_HOME/exports``, and then offered for
download. Its audit entry is written when it is built.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import streamlit as st

from davae import export
from storage.db import Storage
from storage.models import Batch
from ui.i18n import translate
from ui.review_state import state_key

# Column headers of the CSV: machine-readable names, or names for people in a language.
HEADER_CHOICES = ("machine", "ko", "en")
ZIP_STATE_KEY = "export_zip"


def csv_headers(choice: str) -> dict[str, str] | None:
    """Return the header text per column for ``choice``; None keeps the column names.

    Headers for people come from ``export.column.<name>`` of that language's
    catalog, whatever the session's language; values are never translated.
    """
    if choice == "machine":
        return None
    columns = export.CSV_COLUMNS + export.ARCHIVE_COLUMNS
    return {column: translate(choice, f"export.column.{column}") for column in columns}


def csv_download(
    storage: Storage,
    batch_id: int,
    actor: str,
    headers: dict[str, str] | None,
    bom: bool,
) -> Callable[[], bytes]:
    """Return the download button's callable: build the CSV and record the export.

    Everything it needs is bound now, because it runs outside the script run,
    where session state and the catalogs' session language are not available.
    """

    def build() -> bytes:
        return export.export_csv(storage, batch_id, actor, headers=headers, bom=bom)

    return build


@dataclass(frozen=True)
class BuiltZip:
    """A ZIP built for download in this session."""

    batch_id: int
    path: str
    file_name: str
    images: int
    heatmaps: int
    missing: int
    options: tuple[Any, ...]  # header choice and BOM it was built with


def build_zip(
    storage: Storage,
    batch: Batch,
    actor: str,
    header_choice: str,
    bom: bool,
    progress: Callable[[int, int], None] | None = None,
) -> BuiltZip:
    """Write a batch's ZIP under ``DAVAE_HOME/exports`` and record the export."""
    target = export.new_export_path(storage.settings.home, batch.id)
    summary = export.export_zip(
        storage,
        batch.id,
        actor,
        target,
        headers=csv_headers(header_choice),
        header_language=header_choice,
        bom=bom,
        progress=progress,
    )
    return BuiltZip(
        batch_id=batch.id,
        path=str(target),
        file_name=export.export_file_name(batch.id, batch.name, "zip"),
        images=summary.images,
        heatmaps=summary.heatmaps,
        missing=len(summary.missing),
        options=(header_choice, bom),
    )


def built_zip(batch_id: int, options: tuple[Any, ...]) -> BuiltZip | None:
    """Return this session's ZIP of the batch built with these options, if its file still exists."""
    built = st.session_state.get(ZIP_STATE_KEY)
    if not isinstance(built, BuiltZip) or built.batch_id != batch_id or built.options != options:
        return None
    return built if Path(built.path).is_file() else None


def zip_reader(path: str) -> Callable[[], bytes]:
    """Return the download button's callable that reads a built ZIP when clicked."""
    return Path(path).read_bytes


def review_thresholds_differ(batch: Batch) -> bool:
    """Tell whether the Review page's sliders for this batch differ from its stored thresholds."""
    for name in ("recon", "latent"):
        shown = st.session_state.get(state_key(name, batch.id))
        stored = batch.thresholds.get(name)
        if shown is not None and stored and not math.isclose(shown, stored, rel_tol=1e-9):
            return True
    return False
