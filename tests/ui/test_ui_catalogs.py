"""The message catalogs: same keys in both languages, every error code, every key used."""

from __future__ import annotations

import ast
import string
from pathlib import Path

import pytest

from davae.errors import ERROR_CODES
from ui.i18n import LANGUAGES, load_catalog

ROOT = Path(__file__).resolve().parents[2]
UI_SOURCES = sorted(
    [ROOT / "app.py", *(ROOT / "app_pages").glob("*.py"), *(ROOT / "ui").glob("*.py")]
)
PAGE_SECTIONS = ("train", "score", "review", "export", "models", "logs", "evaluate")


def fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_catalogs_have_same_keys() -> None:
    english, korean = load_catalog("en"), load_catalog("ko")
    assert sorted(set(english) - set(korean)) == [], "keys missing from ko.toml"
    assert sorted(set(korean) - set(english)) == [], "keys missing from en.toml"


@pytest.mark.parametrize("key", sorted(load_catalog("en")))
def test_catalog_fields_match(key: str) -> None:
    assert fields(load_catalog("en")[key]) == fields(load_catalog("ko")[key])


@pytest.mark.parametrize("language", LANGUAGES)
def test_every_error_code_has_entry(language: str) -> None:
    catalog = load_catalog(language)
    missing = [code for code in ERROR_CODES if f"error.{code}" not in catalog]
    assert missing == []


@pytest.mark.parametrize("code", sorted(ERROR_CODES))
def test_error_entries_use_code_params(code: str) -> None:
    for language in LANGUAGES:
        used = fields(load_catalog(language)[f"error.{code}"])
        assert used <= set(ERROR_CODES[code]), (
            f"{language}: unknown fields {used - set(ERROR_CODES[code])}"
        )


@pytest.mark.parametrize("section", PAGE_SECTIONS)
def test_every_page_has_title_and_intro(section: str) -> None:
    for language in LANGUAGES:
        catalog = load_catalog(language)
        assert catalog[f"{section}.title"].strip()
        assert catalog[f"{section}.intro"].strip()


def literal_keys(path: Path) -> list[tuple[int, str]]:
    """Return (line, key) for every t("...") call with a literal key in a source file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "t"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


@pytest.mark.parametrize("path", UI_SOURCES, ids=lambda path: str(path.relative_to(ROOT)))
def test_keys_used_in_code_exist(path: Path) -> None:
    catalog = load_catalog("en")
    missing = [f"line {line}: {key}" for line, key in literal_keys(path) if key not in catalog]
    assert missing == []
