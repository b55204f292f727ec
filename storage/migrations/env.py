"""Alembic environment: runs migrations on a connection handed over by storage.db.

``storage.db.upgrade_to_latest`` passes its open connection in
``config.attributes["connection"]``. When Alembic runs from the command line
(``alembic -c alembic.ini ...``) there is none, and the database comes from
``DAVAE_HOME`` and ``DAVAE_DATABASE_URL`` as in the app.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from storage.models import Base


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        # SQLite cannot ALTER most things in place; batch mode rebuilds the table.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        # storage.db emits its own BEGIN on SQLite, so DDL runs inside the
        # transaction there too and a failed migration leaves nothing behind.
        transactional_ddl=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return

    from storage.db import StorageSettings, make_engine

    if context.config.config_file_name is not None:
        fileConfig(context.config.config_file_name)
    settings = StorageSettings.from_env()
    engine = make_engine(settings.database_url)
    try:
        with engine.connect() as new_connection:
            run_on(new_connection)
            new_connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run against a database")
run_migrations_online()
