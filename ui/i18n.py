"""Message catalogs, the language of a session, and translated error messages.

Every string a user reads comes from ``ui/locales/<language>.toml``: English
(``en``) and Korean (``ko``). A catalog has one table per page
(``[train]``, ``[score]``, ...) plus ``[common]``, ``[sidebar]`` and
``[error]``. Nested tables add key parts: ``[common.job_status]``
``running = "..."`` is the key ``common.job_status.running``. Values are
``str.format`` templates with named fields only: ``t("score.progress",
done=3, total=10)``.

The language of a new session is ``DAVAE_LANGUAGE``, else the ``language`` key
of ``.streamlit/secrets.toml``, else English. The sidebar selector stores the
choice in ``st.session_state["language"]``, so it survives page switches.

Errors from ``davae`` and ``storage`` carry a stable code and parameters
(``davae.errors.ERROR_CODES``); :func:`error_text` renders them from the
catalog entry ``error.<code>``, never from the English message.
"""

from __future__ import annotations

import functools
import logging
import os
import tomllib
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from davae.errors import ERROR_CODES, DavaeError

logger = logging.getLogger(__name__)

LANGUAGES = ("en", "ko")
DEFAULT_LANGUAGE = "en"
LANGUAGE_ENV = "DAVAE_LANGUAGE"
SECRETS_KEY = "language"
SESSION_KEY = "language"
LOCALES_DIR = Path(__file__).resolve().parent / "locales"
# Each language is offered under its own name, whatever the current language.
LANGUAGE_NAMES = {"en": "English", "ko": "한국어"}

# Error parameters shown as a size in bytes, and those shown with thousands separators.
_BYTE_PARAMS = frozenset({"size_bytes", "limit_bytes"})
_COUNT_PARAMS = frozenset({"count", "limit", "limit_pixels", "width", "height", "minimum"})


@functools.cache
def load_catalog(language: str) -> dict[str, str]:
    """Read one language's catalog into a flat ``{"section.key": template}`` dict."""
    if language not in LANGUAGES:
        raise ValueError(f"unknown language {language!r}; expected one of {LANGUAGES}")
    with open(LOCALES_DIR / f"{language}.toml", "rb") as stream:
        return flatten_catalog(tomllib.load(stream))


def flatten_catalog(table: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Join nested TOML tables into dotted keys; every leaf must be a string."""
    flat: dict[str, str] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten_catalog(value, key + "."))
        elif isinstance(value, str):
            flat[key] = value
        else:
            raise ValueError(f"catalog entry {key} is {type(value).__name__}; expected a string")
    return flat


def default_language() -> str:
    """Return the language a new session starts in: env, then secrets, then English."""
    configured = os.environ.get(LANGUAGE_ENV, "").strip().lower()
    source = LANGUAGE_ENV
    if not configured:
        try:
            configured = str(st.secrets.get(SECRETS_KEY, "") or "").strip().lower()
        except FileNotFoundError:  # no .streamlit/secrets.toml
            configured = ""
        source = ".streamlit/secrets.toml"
    if not configured:
        return DEFAULT_LANGUAGE
    if configured not in LANGUAGES:
        logger.warning(
            "%s sets the language %r, which has no catalog; using %s (choose from %s)",
            source,
            configured,
            DEFAULT_LANGUAGE,
            ", ".join(LANGUAGES),
        )
        return DEFAULT_LANGUAGE
    return configured


def current_language() -> str:
    """Return the session's language, choosing the default on first use."""
    if SESSION_KEY not in st.session_state:
        st.session_state[SESSION_KEY] = default_language()
    language = st.session_state[SESSION_KEY]
    return language if language in LANGUAGES else DEFAULT_LANGUAGE


def translate(language: str, key: str, **params: Any) -> str:
    """Return the catalog text of ``key`` in ``language`` with ``params`` filled in.

    Raises KeyError for a key missing from the catalog or a parameter the
    template needs but was not given, so a typo fails loudly in the tests.
    """
    template = load_catalog(language)[key]
    return template.format_map(params) if params else template


def t(key: str, **params: Any) -> str:
    """Return the text of ``key`` in the session's language."""
    return translate(current_language(), key, **params)


def has_key(key: str) -> bool:
    return key in load_catalog(DEFAULT_LANGUAGE)


def enum_text(section: str, value: object) -> str:
    """Translate a stored enumeration value such as a job status, or show it unchanged."""
    key = f"{section}.{str(value).replace('.', '_')}"
    return t(key) if has_key(key) else str(value)


class _LenientParams(dict):
    # Errors read back from the database may lack parameters; show a dash for them.
    def __missing__(self, key: str) -> str:
        return "—"


def format_bytes(size: float) -> str:
    """Format a byte count as KB, MB or GB (powers of 1024, as Streamlit's upload limit)."""
    for unit, factor in (("GB", 1024**3), ("MB", 1024**2), ("KB", 1024)):
        if size >= factor:
            return f"{size / factor:,.1f} {unit}"
    return f"{int(size):,} B"


def _format_param(code: str, name: str, value: Any) -> str:
    if value is None:
        return "—"
    if name in _BYTE_PARAMS and isinstance(value, int | float):
        return format_bytes(value)
    if name in _COUNT_PARAMS and isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if code == "batch_status_conflict" and name in ("status", "action"):
        return enum_text("common.batch_status", value)
    if code == "label_not_saved" and name == "value":
        return enum_text("common.label", value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def error_text(
    code: str | None, params: Mapping[str, Any] | None = None, fallback: str | None = None
) -> str:
    """Render an error by its code in the session's language.

    An unknown or missing code falls back to ``fallback`` (the stored English
    message), because an error from a newer version must still be shown.
    """
    key = f"error.{code}"
    if code is None or code not in ERROR_CODES or not has_key(key):
        return fallback or t("common.unknown_error")
    values = _LenientParams(
        {name: _format_param(code, name, value) for name, value in (params or {}).items()}
    )
    return load_catalog(current_language())[key].format_map(values)


def show_error(error: DavaeError) -> None:
    """Show a ``DavaeError`` in the session's language."""
    st.error(error_text(error.code, error.params, str(error)), icon=":material/error:")


def option_labels(options: Iterable[Any], label: Callable[[Any], str]) -> Callable[[Any], str]:
    """Return a widget ``format_func`` with every option's label translated now.

    Streamlit may call ``format_func`` outside the script run (AppTest does),
    where the session's language cannot be read, so the labels are fixed here.
    """
    return {option: label(option) for option in options}.__getitem__


def language_selector() -> str:
    """Draw the language selector in the sidebar and return the chosen language."""
    current_language()  # sets the default before the widget reads the key
    st.sidebar.selectbox(
        t("sidebar.language"),
        LANGUAGES,
        key=SESSION_KEY,
        format_func=LANGUAGE_NAMES.__getitem__,
    )
    return current_language()
