"""The Review page: thresholds with live histograms and counts, the gallery, label corrections.

Moving a slider recomputes every label from the stored scores
(``ui.review_data``); the model never runs here. The batch's table is read
once per change of the batch (``ui.review_state.load_view``).
"""

from __future__ import annotations

import streamlit as st

from davae.errors import DavaeError
from ui import review_data, uploads
from ui.batch_select import batch_selector, recent_batches
from ui.context import page_header, reviewer
from ui.gallery import render_gallery
from ui.i18n import enum_text, error_text, show_error, t
from ui.review_charts import Line, agreement_frame, histogram_figure, rate_text
from ui.review_data import Counts, Decisions, LiveThresholds
from ui.review_state import (
    BatchView,
    apply_live_thresholds,
    format_score,
    load_view,
    pop_notice,
    reset_to_calibrated,
    score_title,
    threshold_controls,
)


def show_notice() -> None:
    """Show the outcome of the button pressed on the previous run."""
    notice = pop_notice()
    if notice is None:
        return
    kind = notice["kind"]
    if kind == "label_saved":
        label = enum_text("common.label", notice["value"])
        st.toast(t("review.label_saved", file_name=notice["file_name"], label=label), icon="✅")
    elif kind == "applied":
        st.success(
            t("review.applied", labelled=notice["labelled"], anomalous=notice["anomalous"]),
            icon=":material/done_all:",
        )
    elif kind == "reviewer_required":
        st.warning(t("common.reviewer_required"), icon=":material/person:")
    else:
        st.error(
            error_text(notice["code"], notice["params"], notice["message"]),
            icon=":material/error:",
        )


def counts_row(counts: Counts, has_band: bool) -> None:
    columns = st.columns(5)
    columns[0].metric(t("review.count_normal"), f"{counts.normal:,}")
    columns[1].metric(
        t("review.count_review"), f"{counts.review:,}" if has_band else t("common.none")
    )
    columns[2].metric(t("review.count_anomalous"), f"{counts.anomalous:,}")
    columns[3].metric(t("review.count_reviewed"), f"{counts.human_reviewed:,}")
    columns[4].metric(t("review.count_changed"), f"{counts.changed:,}")
    st.caption(
        t("review.auto_caption", anomalous=f"{counts.auto_anomalous:,}", total=f"{counts.total:,}")
    )


def action_row(view: BatchView, live: LiveThresholds) -> None:
    """Offer to store the live thresholds as auto labels, or to go back to the calibrated ones."""
    name = reviewer()
    if live.differs_from(view.thresholds):
        st.info(t("review.not_applied"), icon=":material/info:")
    left, right = st.columns(2)
    left.button(
        t("review.apply"),
        key=f"review_apply_{view.batch_id}",
        type="primary",
        icon=":material/done_all:",
        on_click=apply_live_thresholds,
        args=(view.batch_id, live.as_stored(view.thresholds)),
        disabled=not name,
        help=t("review.apply_help") if name else t("common.reviewer_required"),
    )
    right.button(
        t("review.reset"),
        key=f"review_reset_{view.batch_id}",
        icon=":material/restart_alt:",
        on_click=reset_to_calibrated,
        args=(view.batch_id, view.calibrated),
        help=t(
            "review.reset_help",
            recon=format_score(view.calibrated["recon"]),
            latent=format_score(view.calibrated["latent"]),
        ),
    )


def histograms(view: BatchView, live: LiveThresholds, decisions: Decisions) -> None:
    """Draw the three score histograms, coloured by the live auto class."""
    frame = view.frame
    threshold = t("common.chart.threshold")
    combined_lines = [Line(1.0, t("review.boundary"))]
    if live.has_band:
        combined_lines += [
            Line(live.review_low, t("review.band_low_line"), color="#b07d00", dash="dot"),
            Line(live.review_high, t("review.band_high_line"), color="#b07d00", dash="dot"),
        ]
    charts = (
        (
            frame["recon"].to_numpy(),
            score_title(view, "recon"),
            [Line(live.recon, threshold)],
        ),
        (
            frame["latent"].to_numpy(),
            score_title(view, "latent"),
            [Line(live.latent, threshold)],
        ),
        (decisions.combined, t("common.score_name.combined"), combined_lines),
    )
    for column, (values, name, lines) in zip(st.columns(3), charts, strict=True):
        figure = histogram_figure(
            values,
            decisions.auto_class,
            name,
            t("review.axis_score"),
            lines,
            show_review=live.has_band,
        )
        column.plotly_chart(figure, config={"displayModeBar": False})


def agreement_section(decisions: Decisions) -> None:
    result = review_data.agreement(decisions)
    if result is None:
        return
    st.subheader(t("review.section_agreement"))
    st.caption(t("review.agreement_intro", labelled=f"{result.labelled:,}"))
    left, middle, right = st.columns([2, 1, 1])
    left.dataframe(agreement_frame(result), hide_index=True)
    middle.metric(t("common.score_metric.precision"), rate_text(result.precision))
    right.metric(t("common.score_metric.recall"), rate_text(result.recall))


def batch_caption(view: BatchView) -> None:
    st.caption(
        t(
            "review.batch_caption",
            model=view.model_name,
            version=view.model_version,
            status=enum_text("common.batch_status", view.status),
            scored=f"{len(view.frame):,}",
            rejected=f"{view.rejected_count:,}",
        )
    )
    if view.pending:
        st.info(t("review.pending", pending=f"{view.pending:,}"), icon=":material/hourglass_top:")


page_header("review")
batches = recent_batches()
if not batches:
    st.info(t("review.no_batches"), icon=":material/info:")
    st.page_link("app_pages/score.py", label=t("review.go_score"), icon=":material/upload_file:")
    st.stop()

batch_id = batch_selector("review", batches)
try:
    batch_view = load_view(batch_id)
except DavaeError as error:
    show_error(error)
    st.stop()
batch_caption(batch_view)
show_notice()

if batch_view.frame.empty:
    st.info(t("review.no_scored"), icon=":material/info:")
else:
    st.subheader(t("review.section_thresholds"))
    live_thresholds = threshold_controls(batch_view)
    live_decisions = review_data.decide(batch_view.frame, live_thresholds)
    counts_row(review_data.count(live_decisions), live_thresholds.has_band)
    action_row(batch_view, live_thresholds)
    histograms(batch_view, live_thresholds, live_decisions)
    agreement_section(live_decisions)
    st.subheader(t("review.section_gallery"))
    render_gallery(batch_view, live_decisions)

if batch_view.rejected_count:
    st.subheader(t("review.section_rejected"))
    uploads.show_listed_files(batch_view.rejected, rejected_count=batch_view.rejected_count)
