"""Uploads and inputs: the file uploader with its size limit, saving uploads for a job,
checking a server folder, and listing rejected files with translated reasons.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
import streamlit as st
from streamlit.runtime.uploaded_file_manager import UploadedFile

from davae.errors import DavaeError
from davae.worker_io import new_upload_dir, path_entry, upload_entry
from storage.db import Storage
from storage.files import write_atomic
from ui.i18n import error_text, format_bytes, option_labels, t

SOURCE_UPLOAD = "upload"
SOURCE_FOLDER = "folder"


def upload_limit_bytes() -> int:
    """Return the largest upload Streamlit accepts, from ``server.maxUploadSize`` (MB)."""
    return int(st.get_option("server.maxUploadSize")) * 1024 * 1024


def source_selector(key: str) -> str:
    """Let the user choose between uploading files and naming a folder on the server."""
    choice = st.segmented_control(
        t("common.source"),
        (SOURCE_UPLOAD, SOURCE_FOLDER),
        default=SOURCE_UPLOAD,
        required=True,
        format_func=option_labels(
            (SOURCE_UPLOAD, SOURCE_FOLDER), lambda value: t(f"common.source_{value}")
        ),
        key=key,
        persist_state="session",
    )
    return choice or SOURCE_UPLOAD


def file_uploader(label_key: str, key: str) -> list[UploadedFile]:
    """Draw a multi-file uploader that states the upload limit; return the files."""
    limit = format_bytes(upload_limit_bytes())
    files = st.file_uploader(
        t(label_key),
        accept_multiple_files=True,
        key=key,
        help=t("common.upload_help", limit=limit),
    )
    st.caption(t("common.upload_limit", limit=limit))
    return list(files or [])


def folder_input(label_key: str, key: str) -> str:
    return st.text_input(
        t(label_key),
        key=key,
        placeholder=t("common.folder_placeholder"),
        help=t("common.folder_help"),
        persist_state="session",
    ).strip()


def check_server_path(text: str) -> Path:
    """Return the path the user typed; raise ``input_not_found`` when nothing is there.

    A relative path is read from the server's working directory, so the error
    names the absolute path that was looked up.
    """
    path = Path(text).expanduser()
    if not text or not path.exists():
        name = str(path.absolute()) if text else text
        raise DavaeError("input_not_found", f"{name}: no such file or folder", name=name)
    return path.absolute()


def save_uploads(
    storage: Storage, files: Sequence[UploadedFile]
) -> tuple[str, list[dict[str, str]]]:
    """Save uploads under ``DAVAE_HOME/uploads/<uuid>/`` for a job; return the folder and entries.

    Files are saved under their position and extension, because a browser
    name may repeat or be too long for the file system. The job entry keeps
    the name as the browser sent it.
    """
    upload_dir = new_upload_dir()
    entries = []
    for index, uploaded in enumerate(files):
        suffix = PurePosixPath(uploaded.name).suffix.lower()[:11]
        relative = f"{upload_dir}/{index:05d}{suffix}"
        write_atomic(storage.files.resolve(relative), uploaded.getvalue())
        entries.append(upload_entry(relative, uploaded.name))
    return upload_dir, entries


def job_inputs(
    storage: Storage, source: str, files: Sequence[UploadedFile], folder: str
) -> tuple[str | None, list[dict[str, str]]]:
    """Return the upload folder (None for a server path) and the job's input entries.

    Raises ``input_not_found`` for a missing server path.
    """
    if source == SOURCE_FOLDER:
        return None, [path_entry(check_server_path(folder))]
    return save_uploads(storage, files)


def listed_files_frame(
    rejected: Iterable[Mapping[str, Any]], ignored: Iterable[Mapping[str, Any]] = ()
) -> pd.DataFrame:
    """Build a table of rejected files (reason translated by code) and ignored files."""
    rows = [
        {
            t("common.column_file"): item.get("name", ""),
            t("common.column_folder"): item.get("folder", ""),
            t("common.column_reason"): error_text(
                item.get("code"), item.get("params"), item.get("message")
            ),
        }
        for item in rejected
    ]
    rows += [
        {
            t("common.column_file"): item.get("name", ""),
            t("common.column_folder"): item.get("folder", ""),
            t("common.column_reason"): t("common.ignored_reason"),
        }
        for item in ignored
    ]
    columns = [t("common.column_file"), t("common.column_folder"), t("common.column_reason")]
    return pd.DataFrame(rows, columns=columns)


def show_listed_files(
    rejected: Sequence[Mapping[str, Any]],
    ignored: Sequence[Mapping[str, Any]] = (),
    *,
    rejected_count: int | None = None,
    ignored_count: int | None = None,
) -> None:
    """Show rejected and ignored files with name and reason; nothing when there are none."""
    rejected_count = len(rejected) if rejected_count is None else rejected_count
    ignored_count = len(ignored) if ignored_count is None else ignored_count
    if not rejected_count and not ignored_count:
        return
    st.warning(
        t("common.files_not_used", rejected=rejected_count, ignored=ignored_count),
        icon=":material/warning:",
    )
    st.dataframe(listed_files_frame(rejected, ignored), hide_index=True)
    if rejected_count > len(rejected) or ignored_count > len(ignored):
        st.caption(t("common.list_cut", shown=len(rejected) + len(ignored)))
