"""The batch selector of the Review and Export pages, tied to the session's current batch."""

from __future__ import annotations

import contextlib

import streamlit as st

from davae.errors import DavaeError
from storage import batches
from storage.models import Batch
from ui.context import CURRENT_BATCH_KEY, get_storage
from ui.i18n import option_labels, t

RECENT_BATCHES = 100


def recent_batches() -> list[Batch]:
    """Return the newest batches, newest first, plus the current batch if it is older."""
    with get_storage().database.read() as session:
        recent = batches.list_batches(session, limit=RECENT_BATCHES)
        current = st.session_state.get(CURRENT_BATCH_KEY)
        if isinstance(current, int) and current not in {batch.id for batch in recent}:
            # batch_not_found: the current batch is gone, so the newest is shown.
            with contextlib.suppress(DavaeError):
                recent.append(batches.get_batch(session, current))
    return recent


def _remember_choice(key: str) -> None:
    st.session_state[CURRENT_BATCH_KEY] = st.session_state[key]


def batch_selector(section: str, recent: list[Batch]) -> int:
    """Draw the batch selector and return the chosen batch id.

    It starts on ``st.session_state["current_batch_id"]`` (set by the Score
    page, the Review page and the Export page), else on the newest batch, and
    a choice here becomes the current batch, so the pages follow one another.
    Labels come from ``<section>.batch`` and ``<section>.batch_option``.
    """
    key = f"{section}_batch"
    ids = [batch.id for batch in recent]
    names = {batch.id: batch.name for batch in recent}
    current = st.session_state.get(CURRENT_BATCH_KEY)
    # Set before the widget is drawn, so the page follows a batch chosen elsewhere.
    wanted = current if current in ids else ids[0]
    if st.session_state.get(key) != wanted:
        st.session_state[key] = wanted
    chosen = st.selectbox(
        t(f"{section}.batch"),
        ids,
        format_func=option_labels(
            ids,
            lambda batch_id: t(f"{section}.batch_option", batch_id=batch_id, name=names[batch_id]),
        ),
        key=key,
        on_change=_remember_choice,
        args=(key,),
    )
    st.session_state[CURRENT_BATCH_KEY] = chosen
    return chosen
