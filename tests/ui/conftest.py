"""Fixtures for the dashboard tests: a fresh data directory per test and AppTest helpers.

Each test gets its own ``DAVAE_HOME`` with a real SQLite file. Streamlit's
caches are cleared before and after each test, so no test gets another
test's storage handle or worker.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import streamlit as st
import torch

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
