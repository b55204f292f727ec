"""The router: sidebar, navigation, language and reviewer across page switches."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from ui_helpers import APP_PATH

from ui.i18n import load_catalog

PAGES = ("train", "score", "review", "export", "models", "evaluate", "logs")


def test_no_pages_folder_beside_app() -> None:
    # Streamlit runs a script in pages/ without app.py when it opens such a page directly.
    assert not (APP_PATH.parent / "pages").exists()


@pytest.mark.parametrize("page", PAGES)
def test_page_opens_directly(davae_home: Path, page: str) -> None:
    at = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    at.switch_page(f"app_pages/{page}.py").run()
    assert not at.exception
    assert at.title[0].value == load_catalog("en")[f"{page}.title"]
    assert at.sidebar.selectbox(key="language").value == "en"


def test_language_survives_page_switch(davae_home: Path) -> None:
    at = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    at.sidebar.selectbox(key="language").set_value("ko").run()
    at.sidebar.text_input(key="reviewer").set_value("김검사").run()
    at.switch_page("app_pages/logs.py").run()
    assert at.title[0].value == load_catalog("ko")["logs.title"]
    assert at.sidebar.selectbox(key="language").value == "ko"
    assert at.sidebar.text_input(key="reviewer").value == "김검사"


def test_language_from_environment(davae_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAVAE_LANGUAGE", "ko")
    at = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    assert at.sidebar.selectbox(key="language").value == "ko"
    assert at.title[0].value == load_catalog("ko")["train.title"]


def test_unknown_language_falls_back_to_english(
    davae_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAVAE_LANGUAGE", "fr")
    at = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    assert at.sidebar.selectbox(key="language").value == "en"


def test_language_from_secrets(davae_home: Path) -> None:
    at = AppTest.from_file(str(APP_PATH), default_timeout=60)
    at.secrets["language"] = "ko"
    at.run()
    assert at.sidebar.selectbox(key="language").value == "ko"


def test_unreachable_database_shows_error(
    davae_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file where the SQLite folder should be makes the database impossible to open.
    blocker = davae_home.parent / "not_a_folder"
    blocker.write_text("x")
    monkeypatch.setenv("DAVAE_DATABASE_URL", f"sqlite:///{blocker}/davae.db")
    at = AppTest.from_file(str(APP_PATH), default_timeout=60).run()
    assert not at.exception
    assert at.error[0].value.startswith("The database")
