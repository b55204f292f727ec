"""Shared page context: the storage handle, the background worker, the reviewer, display helpers.

Storage is opened once per server process and per data location with
``st.cache_resource``. The cache key is the data directory and database URL,
so a process whose ``DAVAE_HOME`` changes (as in the tests) never gets
another location's handle.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import streamlit as st

from davae.worker import BackgroundWorker, Worker
from storage.db import Storage, StorageSettings, open_storage
from storage.models import ModelVersion
from ui.i18n import t

logger = logging.getLogger(__name__)

# Set to 0 when a separate `python -m davae worker` process runs the jobs.
APP_WORKER_ENV = "DAVAE_APP_WORKER"
REVIEWER_KEY = "reviewer"
# The batch a user last scored or opened; Review and Export start from it.
CURRENT_BATCH_KEY = "current_batch_id"


def _dispose_storage(storage: Storage) -> None:
    storage.database.dispose()


@st.cache_resource(show_spinner=False, on_release=_dispose_storage)
def _open_storage(home: str, database_url: str) -> Storage:
    return open_storage(StorageSettings(home=Path(home), database_url=database_url))


def storage_settings() -> StorageSettings:
    """Return the data location from ``DAVAE_HOME`` and ``DAVAE_DATABASE_URL``."""
    return StorageSettings.from_env()


def get_storage() -> Storage:
    """Return the process's storage handle; raises ``database_unavailable`` if it cannot open."""
    settings = storage_settings()
    return _open_storage(str(settings.home), settings.database_url)


def _stop_worker(background: BackgroundWorker) -> None:
    background.stop()
    background.worker.storage.database.dispose()


@st.cache_resource(show_spinner=False, on_release=_stop_worker)
def _app_worker(home: str, database_url: str) -> BackgroundWorker:
    # The worker gets its own storage handle, so it outlives no page's handle.
    storage = open_storage(StorageSettings(home=Path(home), database_url=database_url))
    return BackgroundWorker(Worker(storage)).start()


def start_app_worker() -> BackgroundWorker | None:
    """Start this server process's background worker once; None when ``DAVAE_APP_WORKER=0``.

    The worker runs in a thread of the server, not of a session, so closing a
    tab or switching pages never stops a job.
    """
    if os.environ.get(APP_WORKER_ENV, "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    settings = storage_settings()
    return _app_worker(str(settings.home), settings.database_url)


@st.cache_resource(show_spinner=False, max_entries=4)
def _load_detector(bundle_sha256: str, path: str) -> Any:
    from davae.bundle import load_bundle

    return load_bundle(path)


def load_detector(model: ModelVersion) -> Any:
    """Load a registered model's bundle once per process, keyed by its SHA-256.

    Raises ``bundle_invalid`` when the file is missing or damaged.
    """
    path = get_storage().files.resolve(model.bundle_path)
    return _load_detector(model.bundle_sha256, str(path))


def reviewer_input() -> str:
    """Draw the reviewer name box in the sidebar; return the stripped name ("" when unset)."""
    if REVIEWER_KEY not in st.session_state:
        st.session_state[REVIEWER_KEY] = ""
    st.sidebar.text_input(
        t("sidebar.reviewer"),
        key=REVIEWER_KEY,
        max_chars=200,
        placeholder=t("sidebar.reviewer_placeholder"),
        help=t("sidebar.reviewer_help"),
    )
    return reviewer()


def reviewer() -> str:
    """Return the session's reviewer name, stripped; "" when none is set."""
    return str(st.session_state.get(REVIEWER_KEY) or "").strip()


def require_reviewer() -> str:
    """Return the reviewer name, or show a warning and stop the page when none is set."""
    name = reviewer()
    if not name:
        st.warning(t("common.reviewer_required"), icon=":material/person:")
        st.stop()
    return name


def page_header(section: str) -> None:
    """Draw a page's title and one-line introduction from ``<section>.title`` and ``.intro``."""
    st.title(t(f"{section}.title"))
    st.caption(t(f"{section}.intro"))


def format_time(moment: datetime | None) -> str:
    """Format a stored UTC time in the server's local time zone, to the second."""
    if moment is None:
        return ""
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")
