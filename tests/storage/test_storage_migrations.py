"""Schema migrations, engine settings and opening storage."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from davae.errors import DavaeError
from storage.db import (
    DEFAULT_BUSY_TIMEOUT_MS,
    StorageSettings,
    current_revision,
    head_revision,
    make_engine,
    normalize_url,
    open_storage,
    upgrade_to_latest,
)
from storage.models import Base

TABLES = {"model_versions", "batches", "images", "scores", "labels", "audit_log", "jobs"}


def test_migrations_create_every_table(database):
    names = set(inspect(database.engine).get_table_names())
    assert names >= TABLES
    assert "alembic_version" in names
    assert current_revision(database.engine) == head_revision()


def test_autogenerate_finds_no_difference(database):
    with database.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        differences = compare_metadata(context, Base.metadata)
    assert differences == []


def test_upgrade_twice_changes_nothing(database):
    assert upgrade_to_latest(database.engine) == head_revision()
    assert current_revision(database.engine) == head_revision()


def test_concurrent_upgrades_both_succeed(database_url):
    # Two processes starting at once (app and worker) both upgrade an empty database.
    engines = [make_engine(database_url), make_engine(database_url)]
    errors: list[BaseException] = []

    def upgrade(engine):
        try:
            upgrade_to_latest(engine)
        except BaseException as error:  # collected and asserted below
            errors.append(error)

    threads = [threading.Thread(target=upgrade, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for engine in engines:
        assert current_revision(engine) == head_revision()
        engine.dispose()
    assert errors == []


def test_unknown_revision_is_refused(database):
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = 'from_the_future'"))
    with pytest.raises(DavaeError) as caught:
        upgrade_to_latest(database.engine)
    assert caught.value.code == "database_version"
    assert caught.value.params["found"] == "from_the_future"
    assert current_revision(database.engine) == "from_the_future"


def test_open_storage_from_other_directory(settings, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    opened = open_storage(settings)
    try:
        assert current_revision(opened.database.engine) == head_revision()
    finally:
        opened.database.dispose()


def test_sqlite_connection_pragmas(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'new' / 'davae.db'}")
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == (
                DEFAULT_BUSY_TIMEOUT_MS
            )
            assert connection.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL
    finally:
        engine.dispose()


def test_settings_defaults(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = StorageSettings.from_env({})
    assert settings.home == tmp_path / ".davae"
    assert settings.database_url == f"sqlite:///{tmp_path / '.davae' / 'davae.db'}"


def test_settings_from_environment(tmp_path):
    settings = StorageSettings.from_env(
        {
            "DAVAE_HOME": str(tmp_path / "data"),
            "DAVAE_DATABASE_URL": "postgresql://reviewer:secret@127.0.0.1:5432/davae",
        }
    )
    assert settings.home == tmp_path / "data"
    assert settings.database_url.endswith("@127.0.0.1:5432/davae")
    assert "secret" not in settings.display_url


def test_relative_home_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = StorageSettings.from_env({"DAVAE_HOME": "data"})
    assert settings.home == tmp_path / "data"


def test_plain_postgresql_url_uses_psycopg():
    assert normalize_url("postgresql://u@127.0.0.1/d").drivername == "postgresql+psycopg"


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "not a url"])
def test_unusable_url_is_rejected(url):
    with pytest.raises(DavaeError) as caught:
        normalize_url(url)
    assert caught.value.code == "invalid_setting"
    assert caught.value.params["setting"] == "DAVAE_DATABASE_URL"


def test_unusable_sqlite_folder_reports_unavailable(tmp_path):
    blocker = tmp_path / "not_a_directory"
    blocker.write_text("a file where the database folder should be")
    url = f"sqlite:///{blocker / 'davae.db'}"
    with pytest.raises(DavaeError) as caught:
        open_storage(StorageSettings(home=tmp_path / "home", database_url=url))
    assert caught.value.code == "database_unavailable"
    assert str(blocker) in caught.value.params["url"]


def test_refused_postgresql_connection_reports_unavailable(tmp_path):
    import socket

    # A loopback port that nothing listens on: bind it, read the number, close it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"postgresql+psycopg://nobody:hidden@127.0.0.1:{port}/davae?connect_timeout=2"
    with pytest.raises(DavaeError) as caught:
        open_storage(StorageSettings(home=tmp_path / "home", database_url=url))
    assert caught.value.code == "database_unavailable"
    assert "hidden" not in caught.value.message
    assert "hidden" not in caught.value.params["url"]


def test_database_file_lives_in_home(tmp_path):
    settings = StorageSettings.from_env({"DAVAE_HOME": str(tmp_path / "data")})
    opened = open_storage(settings)
    try:
        assert Path(tmp_path / "data" / "davae.db").is_file()
    finally:
        opened.database.dispose()


def test_postgresql_sessions_run_without_jit(database, backend):
    if backend != "postgresql":
        pytest.skip("JIT compilation is a PostgreSQL setting")
    with database.read() as session:
        assert session.execute(text("SHOW jit")).scalar() == "off"
