"""A migrated database to copy from, so that `tipline init` in a test does not run every migration.

Running the migrations is most of what initialising a test's database costs (about half a second:
Alembic loads and runs each migration script). The first test of a session that initialises a
database builds a template with the real migrations (`db.upgrade`); every later initialisation of an
empty database at head copies that template instead: on SQLite with SQLite's backup API, on
PostgreSQL by replaying `pg_dump` of the template's schema into the test's own schema.

Only a completely empty database upgraded to head is copied: an upgrade from an older revision,
or to any other target, runs the real migrations. tests/test_migrations.py runs them always (the
`real_migrations` marker), so the migrations themselves stay tested on both databases.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import sqlite3
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

from tests.support.scratch import PG_URL, scratch_database

Upgrade = Callable[..., None]


class Templates:
    """The session's template databases, built on first use with `upgrade` (the real db.upgrade).

    The PostgreSQL template lives on the tests' own server (`pg_url`), whatever server a test's URL
    names (a test may reach PostgreSQL through a proxy it stops): it is dropped at the session's end."""

    def __init__(self, upgrade: Upgrade, pg_url: str = PG_URL):
        self._upgrade = upgrade
        self._pg_url = pg_url
        self._directory: Path | None = None
        self._sqlite: Path | None = None
        self._pg: tuple[str, str] | None = None  # (template schema, its dump)
        self._stack = contextlib.ExitStack()

    def upgrade(self, url: str, target: str = "head") -> None:
        """db.upgrade, copying the template into an empty database instead of migrating it."""
        if target == "head" and url.startswith("sqlite") and _sqlite_empty(_sqlite_path(url)):
            _sqlite_copy(self._sqlite_template(), _sqlite_path(url))
        elif target == "head" and url.startswith("postgresql") and self._pg_url and _pg_empty(url):
            server, schema = _pg_parts(url)
            template, dump = self._pg_template()
            with psycopg.connect(server, autocommit=True) as connection:
                connection.execute(dump.replace(template, schema).encode())
        else:
            self._upgrade(url, target)

    def close(self) -> None:
        self._stack.close()
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)

    def _sqlite_template(self) -> Path:
        if self._sqlite is None:
            self._directory = Path(tempfile.mkdtemp(prefix="tipline-template-"))
            path = self._directory / "template.db"
            self._upgrade(f"sqlite:///{path}")
            self._sqlite = path
        return self._sqlite

    def _pg_template(self) -> tuple[str, str]:
        if self._pg is None:
            template_url = self._stack.enter_context(scratch_database(self._pg_url))
            self._upgrade(template_url)
            server, template = _pg_parts(template_url)
            self._pg = (template, _pg_dump(server, template))
        return self._pg


def _sqlite_path(url: str) -> Path:
    database = make_url(url).database
    assert database, url
    return Path(database)


def _sqlite_empty(path: Path) -> bool:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


def _sqlite_copy(template: Path, path: Path) -> None:
    with contextlib.closing(sqlite3.connect(template)) as source, contextlib.closing(sqlite3.connect(path)) as target:
        source.backup(target)


def _pg_parts(url: str) -> tuple[str, str]:
    """The server's conninfo (without the schema option) and the schema a scratch URL points at."""
    parsed = make_url(url)
    found = re.fullmatch(r"-csearch_path=(\w+)", str(parsed.query.get("options", "")))
    assert found is not None, "a scratch database URL names its schema"
    server = parsed.difference_update_query(["options"]).set(drivername="postgresql")
    return server.render_as_string(hide_password=False), found.group(1)


def _pg_empty(url: str) -> bool:
    server, schema = _pg_parts(url)
    with psycopg.connect(server) as connection:
        row = connection.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (schema,)).fetchone()
    return row is not None and row[0] == 0


def _pg_dump(server: str, schema: str) -> str:
    """The template schema as SQL (tables, constraints, indexes, the rows migrations insert), every
    name qualified with `schema`; without the schema's own creation and psql's meta-commands."""
    dump = subprocess.run(
        ["pg_dump", "--dbname", server, "--schema", schema, "--inserts", "--no-owner", "--no-privileges"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    kept = [line for line in dump.splitlines() if not line.startswith(("\\", "CREATE SCHEMA", "COMMENT ON SCHEMA"))]
    return "\n".join(kept)


@contextlib.contextmanager
def templates(upgrade: Upgrade) -> Iterator[Templates]:
    made = Templates(upgrade)
    try:
        yield made
    finally:
        made.close()
