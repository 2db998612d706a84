"""Engine, sessions and migrations.

SQLite is the embedded default and is run for durability: WAL with `synchronous=FULL`, because a
tip acknowledged to the provider must survive a power cut (in WAL mode NORMAL may roll back a
committed transaction). Write transactions start with BEGIN IMMEDIATE so that two requests never
both read then both try to upgrade to a write lock (which SQLite resolves by failing one).
`secure_delete` overwrites erased return addresses instead of leaving them in free pages.
PostgreSQL is fully supported through psycopg 3.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record):  # type: ignore[no-untyped-def]
            # Take transaction control away from the sqlite3 module: we issue BEGIN ourselves.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA secure_delete=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.execute("PRAGMA trusted_schema=OFF")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):  # type: ignore[no-untyped-def]
            if connection.get_execution_options().get("tipline_read_only"):
                connection.exec_driver_sql("BEGIN")
            else:
                connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=10, max_overflow=10, pool_pre_ping=True, hide_parameters=True)


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only: on SQLite it does not take the write lock."""
    with factory() as session:
        session.connection(execution_options={"tipline_read_only": True})
        yield session
        session.rollback()


def is_postgres(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


def alembic_config(url: str):  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str) -> None:
    """Create or upgrade the schema to the newest migration."""
    from alembic import command

    command.upgrade(alembic_config(url), "head")
