"""Fixtures for the dashboard tests: a fresh data directory per test and AppTest helpers.

Each test gets its own ``DAVAE_HOME`` with a real SQLite file. Streamlit's
caches are cleared before and after each test, so no test gets another
test's storage handle or worker.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import streamlit as st
import torch
from review_helpers import ScoredBatch, build_scored_home, copy_home
from streamlit.testing.v1 import AppTest
from ui_helpers import APP_PATH, REVIEWER, normal_pixels, tiny_config

from storage import registry
from storage.db import Storage, open_storage
from storage.models import ModelVersion

# Tiny models gain nothing from more threads, and the machine runs other work.
torch.set_num_threads(1)


@pytest.fixture
def davae_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point DAVAE_HOME at an empty folder and clear Streamlit's caches around the test."""
    home = tmp_path / "davae_home"
    monkeypatch.setenv("DAVAE_HOME", str(home))
    monkeypatch.delenv("DAVAE_DATABASE_URL", raising=False)
    monkeypatch.delenv("DAVAE_LANGUAGE", raising=False)
    st.cache_resource.clear()
    st.cache_data.clear()
    yield home
    st.cache_resource.clear()
    st.cache_data.clear()


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny detector trained once per session on 24 generated normals, saved as a bundle."""
    import numpy as np

    from davae.bundle import save_bundle
    from davae.training import train_detector

    rng = np.random.default_rng(0)
    images = [normal_pixels(rng)[..., None].astype(np.float32) / 255 for _ in range(24)]
    detector = train_detector(images, tiny_config())
    path = tmp_path_factory.mktemp("bundle") / "tiny.pt"
    save_bundle(detector, path)
    return path


@pytest.fixture
def storage_handle(davae_home: Path) -> Iterator[Storage]:
    """Storage opened on the test's DAVAE_HOME, closed after the test."""
    storage = open_storage()
    yield storage
    storage.database.dispose()


@pytest.fixture
def registered_model(storage_handle: Storage, tiny_bundle: Path) -> ModelVersion:
    """The session's tiny bundle registered as version 1 of "needles", the default model."""
    stored = storage_handle.files.store_model_bundle(tiny_bundle)
    from davae.bundle import load_bundle

    thresholds = load_bundle(tiny_bundle).thresholds.to_dict()
    return storage_handle.database.run_write(
        lambda session: registry.register_model_version(
            session,
            name="needles",
            bundle=stored,
            config=tiny_config().to_dict(),
            thresholds={**thresholds, "review_low": None, "review_high": None},
            created_by=REVIEWER,
        ),
        action="register the test model",
    )


@pytest.fixture
def open_app(davae_home: Path) -> Callable[..., AppTest]:
    """Factory: run app.py as a new browser session, optionally on one page.

    ``open_app("score", language="ko")`` sets the language and reviewer the way
    the sidebar would, runs the router, then switches to the page.
    """

    def open_page(
        page: str | None = None, *, language: str = "en", reviewer: str = REVIEWER
    ) -> AppTest:
        at = AppTest.from_file(str(APP_PATH), default_timeout=120)
        at.session_state["language"] = language
        at.session_state["reviewer"] = reviewer
        at.run()
        if page is not None:
            at.switch_page(f"app_pages/{page}.py").run()
        return at

    return open_page


@pytest.fixture(scope="session")
def scored_template(
    tmp_path_factory: pytest.TempPathFactory, tiny_bundle: Path
) -> tuple[Path, ScoredBatch]:
    """A data directory with the tiny model and a batch scored by the real worker, made once."""
    home = tmp_path_factory.mktemp("scored") / "davae_home"
    return home, build_scored_home(home, tiny_bundle)


@pytest.fixture
def scored_batch(davae_home: Path, scored_template: tuple[Path, ScoredBatch]) -> ScoredBatch:
    """The session's scored batch, copied into this test's DAVAE_HOME."""
    template, batch = scored_template
    copy_home(template, davae_home)
    return batch


@pytest.fixture
def scored_storage(scored_batch: ScoredBatch) -> Iterator[Storage]:
    """Storage opened on the copy of the scored batch (use it instead of ``storage_handle``)."""
    storage = open_storage()
    yield storage
    storage.database.dispose()
