"""The Review gallery: paged image cards with original, reconstruction and heatmap overlay.

Only the cards of the visible page read files. The overlay and the
reconstruction are the display files the worker wrote at scoring time
(``davae.worker_io.display_files``). The original's thumbnail is made from
the stored original on first view. All three are kept in ``st.cache_data``,
keyed by their stored paths, which are content-addressed and never change,
so paging back and moving sliders never reads or resizes them again.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import streamlit as st
from PIL import Image as PILImage

from davae.errors import DavaeError
from davae.imageio import decode_image, to_uint8_image
from davae.worker_io import display_files
from storage.files import FileStore
from ui import review_data
from ui.context import reviewer, storage_settings
from ui.i18n import option_labels, t
from ui.review_data import ANOMALOUS_LABEL, LABEL_VALUES, NO_LABEL, Decisions
from ui.review_state import BatchView, format_score, reviewed_text, save_label, state_key

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 512  # pixels, as the worker's display files
PAGE_SIZES = (6, 12, 24, 48)
DEFAULT_PAGE_SIZE = 12
CARDS_PER_ROW = 2
FILTER_KEY = "review_filter"
SORT_KEY = "review_sort"
PAGE_SIZE_KEY = "review_page_size"
# Markdown characters escaped in file and folder names, which are data.
_MARKDOWN_SPECIAL = set("\\`*_{}[]<>()#+-.!|~$:")


@st.cache_data(max_entries=3000, show_spinner=False)
def display_file(home: str, relative_path: str) -> bytes | None:
    """Return a stored display file's bytes, or None when it is missing."""
    try:
        return FileStore(Path(home)).resolve(relative_path).read_bytes()
    except FileNotFoundError:
        logger.warning("display file %s is missing under %s", relative_path, home)
        return None


@st.cache_data(max_entries=1000, show_spinner=False)
def original_thumbnail(home: str, stored_path: str, max_side: int) -> bytes | None:
    """Return a PNG of the stored original, longest side at most ``max_side``; None if missing.

    The original is decoded as for scoring (EXIF orientation, 16-bit scaling),
    so the thumbnail matches the overlay beside it.
    """
    try:
        data = FileStore(Path(home)).resolve(stored_path).read_bytes()
        pixels = decode_image(data, PurePosixPath(stored_path).name, channels=3).pixels
    except (FileNotFoundError, DavaeError):
        logger.warning("original %s under %s is missing or unreadable", stored_path, home)
        return None
    image = to_uint8_image(pixels)
    image.thumbnail((max_side, max_side), PILImage.Resampling.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def markdown_text(text: str) -> str:
    """Escape a data value (a file or folder name) for Markdown."""
    return "".join(f"\\{char}" if char in _MARKDOWN_SPECIAL else char for char in text)


def _escaped(value: Any) -> str | None:
    return markdown_text(value) if isinstance(value, str) else None


def label_text(code: int) -> str:
    return t(f"common.label.{LABEL_VALUES[code]}")


# -- controls -------------------------------------------------------------------


def gallery_controls() -> tuple[str, str, int]:
    """Draw the filter, order and page size; return them."""
    filter_column, sort_column, size_column = st.columns([3, 1, 1])
    with filter_column:
        chosen = st.segmented_control(
            t("review.filter"),
            review_data.FILTERS,
            default="all",
            required=True,
            format_func=option_labels(review_data.FILTERS, lambda name: t(f"review.filter_{name}")),
            key=FILTER_KEY,
            persist_state="session",
        )
    with sort_column:
        sort = st.selectbox(
            t("review.sort"),
            review_data.SORTS,
            format_func=option_labels(review_data.SORTS, lambda name: t(f"review.sort_{name}")),
            key=SORT_KEY,
            persist_state="session",
        )
    if PAGE_SIZE_KEY not in st.session_state:
        st.session_state[PAGE_SIZE_KEY] = DEFAULT_PAGE_SIZE
    with size_column:
        page_size = st.selectbox(
            t("review.page_size"), PAGE_SIZES, key=PAGE_SIZE_KEY, persist_state="session"
        )
    return chosen or "all", sort, int(page_size)


def page_control(batch_id: int, view_name: str, total: int, page_size: int) -> review_data.PageSpan:
    """Draw the page selector; return the rows of the chosen page.

    Each batch, filter, order and page size has its own page number
    (``view_name`` names the last three), so a new filter starts on page 1
    and going back to an earlier one returns to where the reviewer was.
    """
    pages = review_data.page_span(total, 1, page_size).pages
    left, right = st.columns([3, 2], vertical_alignment="center")
    with left:
        page = st.pagination(
            pages, key=state_key(f"page_{view_name}", batch_id), persist_state="session"
        )
    span = review_data.page_span(total, page, page_size)
    if total:
        right.caption(t("review.showing", first=span.start + 1, last=span.stop, total=total))
    return span


# -- cards ----------------------------------------------------------------------


def _image(column: Any, data: bytes | None, caption: str) -> None:
    if data is None:
        column.caption(t("review.image_missing", image=caption))
    else:
        column.image(data, caption=caption, width="stretch")


def render_card(view: BatchView, row: pd.Series, decisions: Decisions, index: int) -> None:
    """Draw one image: three pictures, its scores, its labels and the label buttons."""
    home = str(storage_settings().home)
    image_id = int(row["image_id"])
    auto = int(decisions.auto[index])
    human = int(decisions.human[index])
    shown = human if human != NO_LABEL else auto
    in_review = decisions.current[index] == review_data.REVIEW

    title = f"**{markdown_text(row['file_name'])}**"
    if row["folder"]:
        title += f" · {markdown_text(row['folder'])}"
    st.markdown(title)

    original, reconstruction, overlay = st.columns(3)
    _image(
        original, original_thumbnail(home, row["stored_path"], THUMBNAIL_SIDE), t("review.original")
    )
    files = display_files(row["heatmap_path"]) if row["heatmap_path"] else None
    _image(
        reconstruction,
        display_file(home, files.reconstruction) if files else None,
        t("review.reconstruction"),
    )
    _image(overlay, display_file(home, files.overlay) if files else None, t("review.heatmap"))

    st.caption(
        t(
            "review.card_scores",
            combined=format_score(decisions.combined[index]),
            recon=format_score(row["recon"]),
            latent=format_score(row["latent"]),
        )
    )
    current = t("review.class.review") if in_review else label_text(shown)
    st.markdown(
        t(
            "review.card_labels",
            auto=label_text(auto),
            current=current,
            source=reviewed_text(_escaped(row["reviewer"]), row["reviewed_at"]),
        )
    )

    can_edit = bool(reviewer())
    help_text = None if can_edit else t("common.reviewer_required")
    other = 1 - shown
    confirm, flip = st.columns(2)
    confirm.button(
        t("review.confirm", label=label_text(shown)),
        key=f"review_confirm_{image_id}",
        icon=":material/check:",
        on_click=save_label,
        args=(image_id, row["file_name"], LABEL_VALUES[shown]),
        disabled=not can_edit,
        help=help_text,
        width="stretch",
    )
    flip.button(
        t("review.flip", label=label_text(other)),
        key=f"review_flip_{image_id}",
        icon=":material/swap_horiz:",
        type="primary" if other == ANOMALOUS_LABEL else "secondary",
        on_click=save_label,
        args=(image_id, row["file_name"], LABEL_VALUES[other]),
        disabled=not can_edit,
        help=help_text,
        width="stretch",
    )


def render_gallery(view: BatchView, decisions: Decisions) -> None:
    """Draw the gallery controls and the cards of the chosen page."""
    filter_name, sort, page_size = gallery_controls()
    mask = review_data.filter_mask(decisions, filter_name)
    order = review_data.gallery_order(view.frame, decisions, mask, sort)
    span = page_control(view.batch_id, f"{filter_name}_{sort}_{page_size}", len(order), page_size)
    if not len(order):
        st.info(t("review.no_images_filter"), icon=":material/filter_alt_off:")
        return
    visible = order[span.start : span.stop]
    for first in range(0, len(visible), CARDS_PER_ROW):
        columns = st.columns(CARDS_PER_ROW)
        for column, index in zip(columns, visible[first : first + CARDS_PER_ROW], strict=False):
            with column, st.container(border=True):
                render_card(view, view.frame.iloc[int(index)], decisions, int(index))
