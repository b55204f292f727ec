"""Settings, engine, sessions, and bringing a database to the latest schema revision.

The data directory ``DAVAE_HOME`` (default ``~/.davae``) contains the SQLite
database ``davae.db`` and the stored files. ``DAVAE_DATABASE_URL`` selects any
other SQLAlchemy URL, such as ``postgresql+psycopg://user@host/dbname``.

SQLite connections run in WAL mode, in which readers do not wait for the
writer. They also get a busy timeout, foreign keys and ``synchronous=FULL``,
which makes a committed label survive a power cut on disks that honour fsync.

Write transactions start with ``BEGIN IMMEDIATE``, so they wait for the write
lock at their start. A transaction that read first and then tried to write
could otherwise fail at once with SQLITE_BUSY instead of waiting.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from davae.errors import DavaeError, invalid_setting
from storage.files import FileStore
from storage.retry import RetryPolicy, describe_failure, is_transient, run_with_retry

logger = logging.getLogger(__name__)

T = TypeVar("T")

HOME_ENV = "DAVAE_HOME"
DATABASE_URL_ENV = "DAVAE_DATABASE_URL"
DEFAULT_HOME = "~/.davae"
SQLITE_FILE_NAME = "davae.db"
# How long an SQLite statement waits for another connection's write lock
# before it fails with SQLITE_BUSY and storage.retry takes over.
DEFAULT_BUSY_TIMEOUT_MS = 5000

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Execution option read by the SQLite "begin" hook: "DEFERRED" or "IMMEDIATE".
_BEGIN_MODE = "davae_sqlite_begin"
# Key of the PostgreSQL advisory lock that serialises concurrent migrations.
_MIGRATION_LOCK_KEY = 0x0DA7AE


@dataclass(frozen=True)
class StorageSettings:
    """Location of the data: the data directory and the database URL."""

    home: Path
    database_url: str
    sqlite_busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StorageSettings:
        """Read ``DAVAE_HOME`` and ``DAVAE_DATABASE_URL``, with their defaults."""
        environ = os.environ if environ is None else environ
        home = Path(environ.get(HOME_ENV) or DEFAULT_HOME).expanduser().absolute()
        url = environ.get(DATABASE_URL_ENV) or f"sqlite:///{home / SQLITE_FILE_NAME}"
        return cls(home=home, database_url=url)

    @property
    def display_url(self) -> str:
        """The database URL with any password masked, safe to log and show."""
        return make_url(self.database_url).render_as_string(hide_password=True)


def normalize_url(url: str | URL) -> URL:
    """Parse a database URL; plain ``postgresql://`` selects the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except Exception as error:  # ArgumentError for text that is no URL at all
        raise invalid_setting(DATABASE_URL_ENV, str(url), "a SQLAlchemy database URL") from error
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise invalid_setting(
            DATABASE_URL_ENV,
            parsed.render_as_string(hide_password=True),
            "an SQLite URL that names a file, such as sqlite:////path/to/davae.db",
        )
    return parsed


def make_engine(
    url: str | URL, *, sqlite_busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS, **kwargs: Any
) -> Engine:
    """Create an engine; SQLite files get WAL mode, a busy timeout and foreign keys.

    Extra keyword arguments go to ``sqlalchemy.create_engine``.
    """
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "postgresql":
        return _make_postgresql_engine(parsed, **kwargs)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True, **kwargs)

    Path(parsed.database).expanduser().absolute().parent.mkdir(parents=True, exist_ok=True)
    connect_args = {"timeout": sqlite_busy_timeout_ms / 1000, **kwargs.pop("connect_args", {})}
    engine = create_engine(parsed, connect_args=connect_args, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, connection_record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide when a transaction begins.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            mode = cursor.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode.lower() != "wal":
                # WAL needs shared memory, which some network file systems lack.
                logger.warning(
                    "SQLite did not switch to WAL mode (journal_mode=%s); "
                    "readers will wait for writers",
                    mode,
                )
            cursor.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_ms)}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_sqlite(connection: Any) -> None:
        mode = connection.get_execution_options().get(_BEGIN_MODE, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _make_postgresql_engine(url: URL, **kwargs: Any) -> Engine:
    engine = create_engine(url, pool_pre_ping=True, **kwargs)

    @event.listens_for(engine, "connect")
    def _configure_postgresql(dbapi_connection: Any, connection_record: Any) -> None:
        # JIT compilation added about 50 ms to a 60 ms read of 10,000 images on
        # PostgreSQL 15, and this application runs no query long enough to gain from it.
        with dbapi_connection.cursor() as cursor:
            cursor.execute("SET jit = off")
        dbapi_connection.commit()

    return engine


class Database:
    """An engine, its one sessionmaker, and the retry policy for writes.

    Open one unit of work per user action: ``with database.read() as
    session`` for queries, ``database.run_write(work, action=...)`` for
    changes, which retries on transient conflicts. ``database.write()`` opens
    a single write transaction without retries.
    """

    def __init__(self, engine: Engine, *, retry_policy: RetryPolicy | None = None) -> None:
        self.engine = engine
        self.sessionmaker = sessionmaker(engine, expire_on_commit=False)
        self.retry_policy = retry_policy or RetryPolicy()

    @property
    def dialect_name(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Session]:
        """Open a transaction for queries, which all read one consistent snapshot."""
        with self.sessionmaker.begin() as session:
            yield session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """Open a write transaction that commits on success and rolls back on error."""
        with self.sessionmaker.begin() as session:
            if self.dialect_name == "sqlite":
                session.connection(execution_options={_BEGIN_MODE: "IMMEDIATE"})
            yield session

    def run_write(
        self,
        work: Callable[[Session], T],
        *,
        action: str,
        on_failure: Callable[[BaseException], DavaeError] | None = None,
    ) -> T:
        """Run ``work`` in a write transaction, retrying transient conflicts.

        See ``storage.retry.run_with_retry`` for the contract of ``work``.
        """
        return run_with_retry(
            self.write, work, policy=self.retry_policy, action=action, on_failure=on_failure
        )

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


def alembic_config() -> Config:
    """Build an Alembic configuration that finds the migrations from any directory."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def head_revision() -> str:
    """Return the newest revision in storage/migrations/versions."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "storage/migrations/versions holds no migration"
    return head


def current_revision(engine: Engine) -> str | None:
    """Return the revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_latest(engine: Engine) -> str:
    """Apply every migration the database lacks and return the revision reached.

    Safe to call from several processes at once: SQLite serialises them on
    the write lock, PostgreSQL on an advisory lock, and each migration runs in
    one transaction. A database at a revision this code does not know (written
    by a newer version) raises ``database_version`` and is left unchanged.
    """
    config = alembic_config()
    scripts = ScriptDirectory.from_config(config)
    with engine.connect() as connection:
        if engine.dialect.name == "sqlite":
            connection = connection.execution_options(**{_BEGIN_MODE: "IMMEDIATE"})
        with connection.begin():
            if engine.dialect.name == "postgresql":
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY}
                )
            found = MigrationContext.configure(connection).get_current_revision()
            known = {script.revision for script in scripts.walk_revisions()}
            if found is not None and found not in known:
                raise DavaeError(
                    "database_version",
                    f"the database is at schema revision {found}, which this version of "
                    f"DA-VAE Inspector does not know (newest known: {scripts.get_current_head()}); "
                    "upgrade the application",
                    found=found,
                    supported=scripts.get_current_head(),
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            reached = MigrationContext.configure(connection).get_current_revision()
    if reached != found:
        logger.info("database schema upgraded from %s to %s", found or "empty", reached)
    return reached or ""


@dataclass(frozen=True)
class Storage:
    """Everything a page or worker needs: settings, database and file store."""

    settings: StorageSettings
    database: Database
    files: FileStore = field(repr=False)


def _unavailable(settings: StorageSettings, error: BaseException) -> DavaeError:
    # A refused connection or an unusable folder is worth showing as the
    # driver or the OS words it; a busy database gets the plain explanation.
    if is_transient(error):
        detail = describe_failure(error)
    else:
        detail = str(getattr(error, "orig", None) or error)
    return DavaeError(
        "database_unavailable",
        f"cannot open the database {settings.display_url}: {detail}",
        url=settings.display_url,
        detail=detail,
    )


def open_storage(
    settings: StorageSettings | None = None,
    *,
    upgrade: bool = True,
    retry_policy: RetryPolicy | None = None,
) -> Storage:
    """Open the data directory and database, and upgrade the schema if ``upgrade`` is true.

    Call once per process (for example under ``st.cache_resource``); the
    result is thread-safe. Raises ``database_unavailable`` when the database
    cannot be reached.
    """
    settings = settings or StorageSettings.from_env()
    engine = None
    try:
        settings.home.mkdir(parents=True, exist_ok=True)
        engine = make_engine(
            settings.database_url, sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms
        )
        if upgrade:
            upgrade_to_latest(engine)
        else:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError, OSError) as error:
        if engine is not None:
            engine.dispose()
        raise _unavailable(settings, error) from error
    logger.info("storage opened: home %s, database %s", settings.home, settings.display_url)
    return Storage(
        settings=settings,
        database=Database(engine, retry_policy=retry_policy),
        files=FileStore(settings.home),
    )
