"""The Review page's state: the cached batch view, the threshold controls and the label actions.

A batch is read from the database once per change, not once per rerun.
:func:`load_view` queries only a change marker (the batch's counts and
status and the newest label id of its images) and keeps the table of scores
and labels in ``st.cache_data`` under the batch id and that marker. Moving
a slider therefore costs one small query plus numpy work, and a saved
label, applied thresholds or newly scored images change the marker, which
reloads the table.

Slider and band values live in session state under keys that name the
batch, so each batch keeps its own. The gallery's filter, order and page
size are shared by all batches. All of them use ``persist_state="session"``,
so they survive a page switch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from davae.errors import DavaeError
from storage import labels, registry, review
from storage.batches import get_batch
from storage.models import Image, ImageStatus, Label
from ui import review_data
from ui.context import format_time, get_storage, reviewer, storage_settings
from ui.i18n import enum_text, has_key, t
from ui.review_data import LiveThresholds, SliderBounds

logger = logging.getLogger(__name__)

NOTICE_KEY = "review_notice"  # outcome of the last button callback, shown once
MAX_LISTED_REJECTED = 500
# Review band defaults on the combined score when the batch has none stored.
BAND_LOW_DEFAULT, BAND_HIGH_DEFAULT = 0.8, 1.25
BAND_STEP = 0.01
BAND_HIGH_MAX = 3.0


@dataclass(frozen=True)
class BatchView:
    """One batch as the Review page shows it; cached until the batch changes."""

    batch_id: int
    name: str
    status: str
    thresholds: dict[str, Any]  # the batch's stored (last applied) thresholds
    calibrated: dict[str, Any]  # the model version's calibrated thresholds
    model_name: str
    model_version: int
    frame: pd.DataFrame  # scored images, see review_data.scored_frame
    pending: int
    rejected: list[dict[str, Any]]  # up to MAX_LISTED_REJECTED, in upload order
    rejected_count: int
    recon_bounds: SliderBounds
    latent_bounds: SliderBounds


def batch_marker(session: Session, batch_id: int) -> tuple[Any, ...]:
    """Return a value that changes whenever the batch's scores or labels change.

    Every label (auto or human) gets a new, higher id, and scoring changes the
    batch's counts, so counts, status and the newest label id together
    identify the state of the batch. Raises ``batch_not_found``.
    """
    batch = get_batch(session, batch_id)
    newest_label = session.scalar(
        select(func.max(Label.id))
        .join(Image, Image.id == Label.image_id)
        .where(Image.batch_id == batch_id)
    )
    return (
        batch.image_count,
        batch.scored_count,
        batch.rejected_count,
        str(batch.status),
        newest_label,
    )


def _rejected_files(session: Session, batch_id: int) -> list[dict[str, Any]]:
    statement = (
        select(
            Image.file_name,
            Image.folder,
            Image.rejection_code,
            Image.rejection_message,
            Image.rejection_params,
        )
        .where(Image.batch_id == batch_id, Image.status == ImageStatus.REJECTED)
        .order_by(Image.position)
        .limit(MAX_LISTED_REJECTED)
    )
    return [
        {"name": name, "folder": folder, "code": code, "message": message, "params": params}
        for name, folder, code, message, params in session.execute(statement)
    ]


@st.cache_data(max_entries=8, show_spinner=False)
def _cached_view(home: str, database_url: str, batch_id: int, marker: tuple[Any, ...]) -> BatchView:
    # home and database_url only key the cache: a process may serve several data locations.
    with get_storage().database.read() as session:
        batch = get_batch(session, batch_id)
        model = registry.get_model_version(session, batch.model_version_id)
        rows = review.batch_table(session, batch_id)
        rejected = _rejected_files(session, batch_id) if batch.rejected_count else []
        thresholds, calibrated = dict(batch.thresholds), dict(model.thresholds)
        frame = review_data.scored_frame(rows, thresholds["latent_metric"])
        pending = sum(1 for row in rows if row.status == ImageStatus.PENDING)
        view = BatchView(
            batch_id=batch.id,
            name=batch.name,
            status=str(batch.status),
            thresholds=thresholds,
            calibrated=calibrated,
            model_name=model.name,
            model_version=model.version,
            frame=frame,
            pending=pending,
            rejected=rejected,
            rejected_count=batch.rejected_count,
            recon_bounds=review_data.slider_bounds(
                frame["recon"].to_numpy(), (thresholds["recon"], calibrated.get("recon"))
            ),
            latent_bounds=review_data.slider_bounds(
                frame["latent"].to_numpy(), (thresholds["latent"], calibrated.get("latent"))
            ),
        )
    logger.debug("review table of batch %s loaded: %d scored images", batch_id, len(frame))
    return view


def load_view(batch_id: int) -> BatchView:
    """Return the batch as the page shows it, read again only when it changed."""
    with get_storage().database.read() as session:
        marker = batch_marker(session, batch_id)
    settings = storage_settings()
    return _cached_view(str(settings.home), settings.database_url, batch_id, marker)


# -- session state keys ---------------------------------------------------------


def state_key(name: str, batch_id: int) -> str:
    """Return the session state key of one of a batch's controls, e.g. ``review_recon_3``."""
    return f"review_{name}_{batch_id}"


def _init_slider(key: str, default: float, bounds: SliderBounds) -> None:
    # Set before the widget exists, so the widget takes it without a default of its own.
    # A kept value that the range no longer contains (new scores arrived) is clamped.
    current = st.session_state.get(key)
    value = bounds.clamp(default if current is None else current)
    if value != current:
        st.session_state[key] = value


# -- threshold controls ---------------------------------------------------------


def threshold_controls(view: BatchView) -> LiveThresholds:
    """Draw the threshold sliders and the review band; return the thresholds they set."""
    batch_id = view.batch_id
    stored = view.thresholds
    recon_key, latent_key = state_key("recon", batch_id), state_key("latent", batch_id)
    _init_slider(recon_key, stored["recon"], view.recon_bounds)
    _init_slider(latent_key, stored["latent"], view.latent_bounds)

    left, right = st.columns(2)
    recon = left.slider(
        t(
            "common.recon_threshold",
            reduction=enum_text("common.reduction", stored["recon_reduction"]),
        ),
        min_value=view.recon_bounds.low,
        max_value=view.recon_bounds.high,
        step=view.recon_bounds.step,
        format=view.recon_bounds.format,
        key=recon_key,
        help=t("review.recon_help", calibrated=_number(view.calibrated.get("recon"))),
        persist_state="session",
    )
    latent = right.slider(
        t("common.latent_threshold", metric=enum_text("common.metric", stored["latent_metric"])),
        min_value=view.latent_bounds.low,
        max_value=view.latent_bounds.high,
        step=view.latent_bounds.step,
        format=view.latent_bounds.format,
        key=latent_key,
        help=t("review.latent_help", calibrated=_number(view.calibrated.get("latent"))),
        persist_state="session",
    )
    low, high = band_controls(view)
    return LiveThresholds(recon=recon, latent=latent, review_low=low, review_high=high)


def band_controls(view: BatchView) -> tuple[float | None, float | None]:
    """Draw the review band switch and its edges; return (low, high), or Nones when off."""
    batch_id = view.batch_id
    stored_low, stored_high = view.thresholds.get("review_low"), view.thresholds.get("review_high")
    band_key = state_key("band", batch_id)
    low_key, high_key = state_key("band_low", batch_id), state_key("band_high", batch_id)
    if band_key not in st.session_state:
        st.session_state[band_key] = stored_low is not None and stored_high is not None
    high_max = max(BAND_HIGH_MAX, float(stored_high or 0.0))
    low_bounds = SliderBounds(0.0, 1.0, BAND_STEP, "%.2f")
    high_bounds = SliderBounds(1.0, high_max, BAND_STEP, "%.2f")
    _init_slider(low_key, BAND_LOW_DEFAULT if stored_low is None else stored_low, low_bounds)
    _init_slider(high_key, BAND_HIGH_DEFAULT if stored_high is None else stored_high, high_bounds)

    enabled = st.toggle(
        t("review.band_toggle"), key=band_key, help=t("review.band_help"), persist_state="session"
    )
    if not enabled:
        return None, None
    left, right = st.columns(2)
    low = left.slider(
        t("review.band_low"),
        min_value=low_bounds.low,
        max_value=low_bounds.high,
        step=BAND_STEP,
        format=low_bounds.format,
        key=low_key,
        persist_state="session",
    )
    high = right.slider(
        t("review.band_high"),
        min_value=high_bounds.low,
        max_value=high_bounds.high,
        step=BAND_STEP,
        format=high_bounds.format,
        key=high_key,
        persist_state="session",
    )
    return low, high


def _number(value: float | None) -> str:
    return t("common.none") if value is None else f"{value:.6g}"


def format_score(value: float | None) -> str:
    if value is None or not np.isfinite(value):
        return t("common.none")
    return f"{value:.4g}"


def score_title(view: BatchView, kind: str) -> str:
    """Return the display name of the batch's reconstruction or latent score (``kind``)."""
    if kind == "recon":
        key = f"common.score_name.recon_{view.thresholds['recon_reduction']}"
        fallback = "common.chart.recon_score"
    else:
        key = f"common.score_name.latent_{view.thresholds['latent_metric']}"
        fallback = "common.chart.latent_distance"
    return t(key) if has_key(key) else t(fallback)


# -- actions --------------------------------------------------------------------


def set_notice(kind: str, **details: Any) -> None:
    st.session_state[NOTICE_KEY] = {"kind": kind, **details}


def pop_notice() -> dict[str, Any] | None:
    """Return the last action's outcome once, or None."""
    return st.session_state.pop(NOTICE_KEY, None)


def save_label(image_id: int, file_name: str, value: str) -> None:
    """Button callback: save a reviewer's label for one image at once."""
    name = reviewer()
    if not name:
        set_notice("reviewer_required")
        return
    try:
        labels.save_human_label(get_storage().database, image_id, value, name)
    except DavaeError as error:
        logger.warning("label %s for image %s by %s failed: %s", value, image_id, name, error)
        set_notice("error", code=error.code, params=error.params, message=str(error))
        return
    set_notice("label_saved", file_name=file_name, value=value)


def apply_live_thresholds(batch_id: int, thresholds: dict[str, Any]) -> None:
    """Button callback: store auto labels for the whole batch with these thresholds."""
    name = reviewer()
    if not name:
        set_notice("reviewer_required")
        return
    try:
        result = get_storage().database.run_write(
            lambda session: labels.apply_thresholds(session, batch_id, thresholds, name),
            action=f"apply thresholds to batch {batch_id}",
        )
    except DavaeError as error:
        logger.warning("applying thresholds to batch %s by %s failed: %s", batch_id, name, error)
        set_notice("error", code=error.code, params=error.params, message=str(error))
        return
    set_notice("applied", labelled=result.labelled, anomalous=result.anomalous)


def reset_to_calibrated(batch_id: int, calibrated: dict[str, Any]) -> None:
    """Button callback: move both sliders back to the model's calibrated thresholds."""
    for name in ("recon", "latent"):
        if calibrated.get(name) is not None:
            st.session_state[state_key(name, batch_id)] = float(calibrated[name])


def reviewed_text(reviewer_name: str | None, reviewed_at: datetime | None) -> str:
    """Describe who set a human label and when, in the session's language."""
    if reviewer_name is None or pd.isna(reviewer_name):
        return t("review.label_by_auto")
    # pandas stores the time as a Timestamp, whose astimezone() needs an argument.
    moment = None if pd.isna(reviewed_at) else pd.Timestamp(reviewed_at).to_pydatetime()
    return t("review.label_by_human", reviewer=reviewer_name, time=format_time(moment))
