"""The Export page: a batch's labels as CSV, and its images sorted by label as a ZIP.

Exports use the stored labels: each image's latest human label, else its
latest auto label (see ``davae.export`` for both formats). Thresholds moved
on the Review page count only once applied there.
"""

from __future__ import annotations

import streamlit as st

from davae import export
from davae.errors import DavaeError
from storage import batches, review
from storage.models import Batch, BatchStatus
from ui import export_files, uploads
from ui.batch_select import batch_selector, recent_batches
from ui.context import format_time, get_storage, page_header, reviewer
from ui.i18n import enum_text, option_labels, show_error, t
from ui.review_state import load_view


def summary(batch: Batch) -> None:
    """Show what the export will contain: labels by kind and the thresholds in force."""
    with get_storage().database.read() as session:
        counts = review.label_counts(session, batch.id)
    columns = st.columns(5)
    columns[0].metric(t("export.count_normal"), f"{counts.normal:,}")
    columns[1].metric(t("export.count_anomalous"), f"{counts.anomalous:,}")
    columns[2].metric(t("export.count_unlabelled"), f"{counts.unlabelled + counts.pending:,}")
    columns[3].metric(t("export.count_rejected"), f"{counts.rejected:,}")
    columns[4].metric(t("export.count_reviewed"), f"{counts.human_reviewed:,}")
    thresholds = batch.thresholds
    st.caption(
        t(
            "export.thresholds",
            recon=f"{thresholds['recon']:.6g}",
            latent=f"{thresholds['latent']:.6g}",
        )
    )
    if batch.status in (BatchStatus.PENDING, BatchStatus.RUNNING):
        st.warning(t("export.still_scoring"), icon=":material/hourglass_top:")
    if export_files.review_thresholds_differ(batch):
        st.info(t("export.not_applied"), icon=":material/info:")
        st.page_link(
            "app_pages/review.py", label=t("export.go_review"), icon=":material/fact_check:"
        )


def options() -> tuple[str, bool]:
    """Draw the CSV options; return the header choice and whether to add a BOM."""
    left, right = st.columns(2, vertical_alignment="bottom")
    choice = left.selectbox(
        t("export.headers"),
        export_files.HEADER_CHOICES,
        format_func=option_labels(
            export_files.HEADER_CHOICES, lambda name: t(f"export.headers_{name}")
        ),
        key="export_headers",
        help=t("export.headers_help"),
        persist_state="session",
    )
    if "export_bom" not in st.session_state:
        st.session_state["export_bom"] = True
    bom = right.toggle(
        t("export.bom"), key="export_bom", help=t("export.bom_help"), persist_state="session"
    )
    return choice, bom


def csv_section(batch: Batch, choice: str, bom: bool, name: str) -> None:
    st.subheader(t("export.section_csv"))
    st.caption(t("export.csv_intro"))
    st.download_button(
        t("export.download_csv"),
        data=export_files.csv_download(
            get_storage(), batch.id, name, export_files.csv_headers(choice), bom
        ),
        file_name=export.export_file_name(batch.id, batch.name, "csv"),
        mime="text/csv",
        key=f"export_csv_{batch.id}",
        icon=":material/table:",
        type="primary",
        on_click="ignore",
        disabled=not name,
    )


def zip_section(batch: Batch, choice: str, bom: bool, name: str) -> None:
    st.subheader(t("export.section_zip"))
    st.caption(t("export.zip_intro"))
    settings = (choice, bom)
    if st.button(
        t("export.build_zip"),
        key=f"export_build_{batch.id}",
        icon=":material/folder_zip:",
        disabled=not name,
    ):
        bar = st.progress(0.0, text=t("export.zip_progress", done=0, total="…"))

        def progress(done: int, total: int) -> None:
            bar.progress(done / total, text=t("export.zip_progress", done=done, total=total))

        try:
            st.session_state[export_files.ZIP_STATE_KEY] = export_files.build_zip(
                get_storage(), batch, name, choice, bom, progress
            )
        except DavaeError as error:
            show_error(error)
            return
        bar.empty()

    built = export_files.built_zip(batch.id, settings)
    if built is None:
        return
    st.success(
        t("export.zip_ready", images=f"{built.images:,}", heatmaps=f"{built.heatmaps:,}"),
        icon=":material/check_circle:",
    )
    if built.missing:
        st.warning(t("export.zip_missing", count=built.missing), icon=":material/warning:")
    st.download_button(
        t("export.download_zip"),
        data=export_files.zip_reader(built.path),
        file_name=built.file_name,
        mime="application/zip",
        key=f"export_zip_{batch.id}",
        icon=":material/download:",
        type="primary",
        on_click="ignore",
    )
    st.caption(t("export.zip_on_server", path=built.path))


page_header("export")
recent = recent_batches()
if not recent:
    st.info(t("export.no_batches"), icon=":material/info:")
    st.page_link("app_pages/score.py", label=t("export.go_score"), icon=":material/upload_file:")
    st.stop()

batch_id = batch_selector("export", recent)
try:
    with get_storage().database.read() as session:
        chosen = batches.get_batch(session, batch_id)
except DavaeError as error:
    show_error(error)
    st.stop()
st.caption(
    t(
        "export.batch_caption",
        status=enum_text("common.batch_status", chosen.status),
        created_by=chosen.created_by,
        created_at=format_time(chosen.created_at),
    )
)
summary(chosen)
header_choice, with_bom = options()
reviewer_name = reviewer()
if not reviewer_name:
    st.warning(t("common.reviewer_required"), icon=":material/person:")
csv_section(chosen, header_choice, with_bom, reviewer_name)
zip_section(chosen, header_choice, with_bom, reviewer_name)

if chosen.rejected_count:
    st.subheader(t("export.section_rejected"))
    st.caption(t("export.rejected_intro"))
    uploads.show_listed_files(load_view(chosen.id).rejected, rejected_count=chosen.rejected_count)
