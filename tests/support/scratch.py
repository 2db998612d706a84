"""A scratch PostgreSQL schema, dropped afterwards: every test and benchmark gets a database of its own."""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Iterator

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

# The database the tests run against: a PostgreSQL URL, or empty for SQLite in each test's data directory.
PG_URL = os.environ.get("TIPLINE_TEST_DATABASE_URL", "").strip()


@contextlib.contextmanager
def scratch_database(url: str) -> Iterator[str]:
    """Yield `url` itself for SQLite or empty; for PostgreSQL, a fresh schema in that database."""
    if not url or not url.startswith("postgresql"):
        yield url
        return
    import psycopg
    from sqlalchemy.engine import make_url

    parsed = make_url(url.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = "bench_" + secrets.token_hex(4)
    conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as connection:
        connection.execute(f"CREATE SCHEMA {schema}")
    try:
        yield parsed.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
    finally:
        with psycopg.connect(conninfo, autocommit=True) as connection:
            connection.execute(f"DROP SCHEMA {schema} CASCADE")


_LOCK_WAITERS = text(
    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()"
)


def lock_waiters(engine: Engine) -> int:
    """How many sessions of the test database wait for a lock (a row another holds) right now."""
    with engine.connect() as connection:
        return int(connection.execute(_LOCK_WAITERS).scalar_one())


def wait_for_lock_waiters(engine: Engine, count: int, timeout: float = 10.0) -> None:
    """Wait until `count` sessions of the test database wait for a lock (a row another holds)."""
    deadline = time.monotonic() + timeout
    while lock_waiters(engine) < count:
        assert time.monotonic() < deadline, f"fewer than {count} sessions came to wait for a lock"
        time.sleep(0.02)


def cut_the_pooled_connection(engine: Engine) -> int:
    """Leave `engine`'s pool holding one PostgreSQL connection and have the server end it, as a
    restart or an administrator's pg_terminate_backend would; returns that connection's backend pid."""
    engine.dispose()  # the pool now holds the one connection made next
    with engine.connect() as connection:
        backend = connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
    killer = create_engine(engine.url, poolclass=NullPool)
    try:
        with killer.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}).scalar()
    finally:
        killer.dispose()
    return int(backend)
