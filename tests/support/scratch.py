"""A scratch PostgreSQL schema, dropped afterwards: every test and benchmark gets a database of its own."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

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
