"""Errors that reach users, each with a stable code.

The code is what the dashboard looks up in its message catalogs, so the text
shown to a user can be translated without parsing the English message. Codes
are part of the public interface: add new ones, never rename old ones.
"""

from __future__ import annotations

from typing import Any

# Every code a DavaeError can carry, with the parameters its message uses.
# The UI catalogs have one entry per code under "error.<code>".
ERROR_CODES: dict[str, tuple[str, ...]] = {
    # Rejected input files.
    "empty_file": ("name",),
    "file_too_large": ("name", "size_bytes", "limit_bytes"),
    "unsupported_type": ("name", "extension", "supported"),
    "unsupported_format": ("name", "format", "supported"),
    "not_an_image": ("name", "detail"),
    "truncated_image": ("name", "detail"),
    "too_many_pixels": ("name", "width", "height", "limit_pixels"),
    "unsupported_mode": ("name", "mode"),
    "unreadable_file": ("name", "detail"),
    # ZIP archives and their members.
    "zip_invalid": ("name", "detail"),
    "zip_too_many_members": ("name", "count", "limit"),
    "zip_too_large": ("name", "size_bytes", "limit_bytes"),
    "zip_unsafe_path": ("name",),
    "zip_encrypted": ("name",),
    "input_not_found": ("name",),
    # Settings and datasets.
    "invalid_setting": ("setting", "value", "expected"),
    "too_few_images": ("count", "minimum"),
    "dataset_layout": ("path", "detail"),
    # Model bundles.
    "bundle_invalid": ("path", "detail"),
    "bundle_version": ("path", "found", "supported"),
    "bundle_mismatch": ("detail",),
    # Long work.
    "cancelled": (),
    # Storage: database, stored files and the records in them.
    "database_unavailable": ("url", "detail"),
    "database_version": ("found", "supported"),
    "write_failed": ("action", "detail"),
    "label_not_saved": ("image_id", "file_name", "value", "detail"),
    "batch_not_found": ("batch_id",),
    "image_not_found": ("image_id",),
    "model_not_found": ("model_version_id",),
    "job_not_found": ("job_id",),
    "batch_status_conflict": ("batch_id", "status", "action"),
    "stored_file_missing": ("path",),
    "worker_lost": ("job_id", "heartbeat_at"),
    # Comparative studies.
    "study_invalid": ("path", "detail"),
}


class DavaeError(ValueError):
    """An error a user can act on, with a stable code and its parameters.

    ``str(error)`` is the English message; ``code`` and ``params`` let a UI
    render it in another language.
    """

    def __init__(self, code: str, message: str, **params: Any) -> None:
        if code not in ERROR_CODES:
            raise KeyError(f"unknown error code {code!r}; add it to ERROR_CODES")
        super().__init__(message)
        self.code = code
        self.params = params

    @property
    def message(self) -> str:
        return str(self)


class TrainingCancelled(DavaeError):
    """Raised inside training or scoring when the caller asked to cancel."""

    def __init__(self) -> None:
        super().__init__("cancelled", "cancelled by the user")


def invalid_setting(setting: str, value: Any, expected: str) -> DavaeError:
    """Build the error for a setting outside its allowed values."""
    return DavaeError(
        "invalid_setting",
        f"invalid value {value!r} for {setting}: expected {expected}",
        setting=setting,
        value=value,
        expected=expected,
    )
