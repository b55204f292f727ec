"""Fixtures for the storage tests: one real database per test, on SQLite and PostgreSQL.

Every test that uses ``database`` runs twice: on an SQLite file in its own
temporary directory, and on PostgreSQL in a schema of its own when
DAVAE_TEST_DATABASE_URL names a server (scripts/test.sh starts one).
Without the variable the PostgreSQL cases are skipped.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from storage_helpers import register_model

from storage.db import Database, Storage, StorageSettings, open_storage
from storage.files import FileStore
from storage.models import ModelVersion
from storage.retry import RetryPolicy

TEST_URL_ENV = "DAVAE_TEST_DATABASE_URL"
BACKENDS = ("sqlite", "postgresql")
# Short delays keep the retry tests fast; enough attempts to ride out the
# lock waits that the concurrency tests provoke on a busy two-core machine.
TEST_RETRY_POLICY = RetryPolicy(attempts=8, first_delay_s=0.01, max_delay_s=0.2)


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the test server, for creating and dropping schemas."""
    url = os.environ.get(TEST_URL_ENV)
    if not url:
        pytest.skip(f"PostgreSQL tests need {TEST_URL_ENV} (scripts/test.sh sets it)")
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


def postgres_schema_url(base_url: str, schema: str, **server_settings: str) -> str:
    """Return ``base_url`` with ``schema`` first on the search path, plus server settings."""
    options = " ".join(
        [f"-csearch_path={schema}"] + [f"-c{key}={value}" for key, value in server_settings.items()]
    )
    return (
        make_url(base_url)
        .update_query_dict({"options": options})
        .render_as_string(hide_password=False)
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def database_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A URL to an empty database of the backend under test."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'db' / 'davae.db'}"
        return
    admin = request.getfixturevalue("postgres_admin")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    yield postgres_schema_url(os.environ[TEST_URL_ENV], schema)
    with admin.connect() as connection:
        connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> StorageSettings:
    return StorageSettings(home=tmp_path / "home", database_url=database_url)


@pytest.fixture
def storage(settings: StorageSettings) -> Iterator[Storage]:
    """Storage opened as the app opens it, with the schema at the latest revision."""
    opened = open_storage(settings, retry_policy=TEST_RETRY_POLICY)
    yield opened
    opened.database.dispose()


@pytest.fixture
def database(storage: Storage) -> Database:
    return storage.database


@pytest.fixture
def files(storage: Storage) -> FileStore:
    return storage.files


@pytest.fixture
def model(database: Database, files: FileStore) -> ModelVersion:
    """A registered model version with the helpers' thresholds."""
    return register_model(database, files)
