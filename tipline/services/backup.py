"""Backups: a consistent copy of the database taken while tips arrive, and its restore.

One format for every installation: a backup is a single SQLite file (journal mode DELETE, so no
`-wal` beside it) whose header carries `APPLICATION_ID` and which holds a `tipline_backup` table
(format, schema revision, counts) next to the tip line's own tables at that revision.

- On SQLite the file is made with SQLite's online backup API (`sqlite3.Connection.backup`) in a
  single step: one read snapshot of the WAL database, while writers go on. (A step-by-step copy
  restarts whenever another connection writes, so under a steady flow of tips it might never end.)
- On PostgreSQL the file is filled from inside ONE `REPEATABLE READ READ ONLY` transaction, the
  snapshot `pg_dump` also uses: the schema is built in the file by the same Alembic migrations at
  the database's revision, then every table is copied row by row, read and written through tables
  reflected from each side so that types convert (bytea to BLOB, timestamp to DATETIME, ...).
  Why not drive `pg_dump`: its output is restorable only into PostgreSQL of a compatible version,
  needs client binaries of the server's version on the machine, and would give two formats and
  two restore paths. This way one restore serves both, and a backup moves an installation from
  SQLite to PostgreSQL or back.

What a backup holds: ciphertext, wrapped keys and keyed hashes, exactly as the database holds them.
Never the master key (it is not in the database), so a backup alone opens nothing. Console sessions
and process heartbeats are left out: a session must not survive onto another machine.

A backup is authenticated, because it is kept on storage that need not be trusted: ciphertext
cannot be read there, but rows could be added (an account whose password the attacker knows),
removed (an audit entry) or changed, and the schema too (a trigger). When the file is complete, an
HMAC-SHA256 of its logical content (its schema, then every row of every table in a canonical order
and encoding) is written into the info table, keyed by a key derived from the master key (never
the master key itself). Restore computes it again over the file, in the same read transaction it
copies from, and refuses a mismatch before it writes anything. What it cannot tell: an older
genuine backup restored in place of a newer one.

The file is made inside a private directory created with a random name in FILE's directory (0700,
ours alone: whoever else can write FILE's directory can plant nothing in it, so no link of theirs
is ever followed), made durable, then renamed to FILE (a rename replaces a link at FILE, never
follows it) and the directory removed. A failed backup removes its directory; a killed one leaves
it, and the next backup to the same FILE removes it (only directories of ours that no running
backup holds locked). Nothing is spooled anywhere else (SQLite's temporary storage is in memory).

Restore brings a backup into an EMPTY installation: its database (for PostgreSQL, the schema first
on the search path) holds no keys, accounts, senders, tips or audit entries: no tables at all, or
only what a migration (bookkeeping rows) or a failed restore left. An installation where `tipline
init` ran holds keys and an admin, so it is not empty. Before anything is written, the
current master key must open the backup's keys. The schema is built at the backup's revision, the
rows are copied in one transaction in dependency order (a failed copy leaves an empty schema, and
restore can simply run again), PostgreSQL's sequences are moved past the copied ids, and the
schema is upgraded to this code's newest migration.

Rows are copied through tables reflected from each database, not through the models: the models
describe this code's newest schema, while a backup is at the revision it was taken at, and both
sides of a copy are at that revision (built by the same migrations). So every table is copied,
whatever a later migration adds, and an older backup restores into newer code.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import hmac
import logging
import os
import shutil
import sqlite3
import stat
import struct
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, Engine, MetaData, Table, create_engine, event, func, inspect, select, table, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import StaticPool

from tipline.config import Settings
from tipline.core import crypto
from tipline.services import audit
from tipline.services.context import ServiceContext
from tipline.storage import db
from tipline.storage.keystore import KeyStore, KeyStoreError, load_master_key, master_key_path
from tipline.storage.models import (
    AuditEntry,
    ConsoleSession,
    Contact,
    KeyVersion,
    ProcessBeat,
    Tip,
    User,
    to_minute,
    utcnow,
)

FORMAT = "1"
APPLICATION_ID = 0x7469706C  # "tipl": the SQLite header says this file is a tipline backup
INFO_TABLE = "tipline_backup"
VERSION_TABLE = "alembic_version"
# Tied to one machine and one moment: never copied, so nobody is signed in after a restore.
TRANSIENT = (str(ConsoleSession.__tablename__), str(ProcessBeat.__tablename__))
NOT_COPIED = {*TRANSIENT, VERSION_TABLE, INFO_TABLE}
BATCH = 500  # rows per INSERT while copying
# What a backup or restore may meet besides a refusal: a full disk, a lost server, keys that do not open.
FAILURES = (OSError, sqlite3.Error, SQLAlchemyError, KeyStoreError)
LOCK_WAIT = 120.0  # seconds a SQLite backup waits for a database another process locked exclusively
TAG = "authentication"  # the info table's row that holds the HMAC of everything else in the file
TAG_INFO = b"tipline backup authentication v1"  # HKDF info: the tag's key is good for nothing else


class BackupError(Exception):
    """A backup or restore cannot go on; the message is one line that says what to do."""


@dataclass(frozen=True)
class BackupInfo:
    """What a backup holds, as the summary prints it: counts and the schema, never content."""

    revision: str
    tips: int
    size: int
    source: str  # sqlite or postgresql: the database it was taken from


@dataclass(frozen=True)
class Account:
    """A restored console account, as the restore's summary shows it: who can sign in, never a hash."""

    username: str
    roles: str
    enrolled: bool  # has an authenticator (2fa)
    disabled: bool


@dataclass(frozen=True)
class RestoreReport:
    revision: str  # the backup's schema revision
    head: str  # the revision the restored database is at now (this code's newest)
    tips: int
    rows: int
    accounts: tuple[Account, ...]


# ---------------------------------------------------------------------------------------------
# Backup


def create(ctx: ServiceContext, target: Path, *, force: bool = False, actor: str | None = None) -> BackupInfo:
    """Write a backup of the database to `target` (atomically, 0600) and audit it."""
    target = check_target(target, force=force)
    engine: Engine = ctx.factory.kw["bind"]
    try:
        key = tag_key(load_master_key(ctx.settings))
        with _workspace(target) as partial:
            if engine.dialect.name == "sqlite":
                _copy_sqlite(engine, partial)
            else:
                _copy_database(engine, partial)
            info = _seal(partial, engine.dialect.name, key)
            _publish(partial, target, force)
    except FAILURES as error:
        raise BackupError(f"backup failed, nothing was written to {target} ({cause(error)})") from None
    audit.log_event(
        ctx, "backup.create", actor=actor, detail={"tips": info.tips, "bytes": info.size, "schema": info.revision}
    )
    return info


def cause(error: BaseException) -> str:
    """The first line of what failed ("database or disk is full", "connection refused"), never a traceback."""
    reason = getattr(error, "orig", None) or error
    lines = str(reason).strip().splitlines()
    return lines[0][:200] if lines else type(reason).__name__


def check_target(target: Path, *, force: bool = False) -> Path:
    """Where the backup goes, refused at once if it cannot (before the database is even opened)."""
    target = target.absolute()
    if not target.parent.is_dir():
        raise BackupError(f"{target.parent} is not a directory")
    if target.exists() and not force:
        raise BackupError(f"{target} exists: choose another name, or add --force to replace it")
    return target


@contextlib.contextmanager
def _workspace(target: Path) -> Iterator[Path]:
    """The file to fill, new (0600) in a private directory beside `target`; the directory goes afterwards.

    `mkdtemp` creates the directory atomically, 0700, with a random name: nobody else can plant or
    swap anything in it, so SQLite may open the file (and its journal) by path. The directory is
    locked while this backup lives (the kernel drops the lock if it is killed), so that another
    backup to the same FILE, clearing what killed ones left, never takes it for a leftover.
    """
    _remove_leftovers(target)
    directory = tempfile.mkdtemp(dir=target.parent, prefix=_leftover_prefix(target))
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not os.path.samestat(os.fstat(fd), os.lstat(directory)):  # cleared by another backup meanwhile
                raise BackupError(f"another backup to {target} is starting; try again")
            partial = Path(directory, target.name)
            os.close(os.open(partial, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600))
            yield partial
        finally:
            os.close(fd)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _leftover_prefix(target: Path) -> str:
    return f".{target.name}.partial-"


def _remove_leftovers(target: Path) -> None:
    """Remove the private directories killed backups to `target` left: directories of ours, not links,
    that no running backup holds locked. `shutil.rmtree` works through file descriptors and follows
    no link inside them."""
    prefix = _leftover_prefix(target)
    with os.scandir(target.parent) as entries:
        leftovers = [entry.path for entry in entries if entry.name.startswith(prefix)]
    for path in leftovers:
        try:
            status = os.lstat(path)
            if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid():
                continue
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        except OSError:  # gone meanwhile, or swapped for a link
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # a backup that is running
            continue
        else:
            shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(fd)


def _copy_sqlite(engine: Engine, partial: Path) -> None:
    """SQLite's online backup API, in one step: one consistent read snapshot, writers unhindered."""
    deadline = time.monotonic() + LOCK_WAIT

    def progress(status: int, _remaining: int, _total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > deadline:
            raise BackupError(f"the database stayed locked for {LOCK_WAIT:.0f} s; try again")

    raw = engine.raw_connection()
    try:
        destination = sqlite3.connect(partial, isolation_level=None)
        try:
            destination.execute("PRAGMA temp_store=MEMORY")
            source: sqlite3.Connection = raw.driver_connection  # type: ignore[assignment]
            source.backup(destination, pages=-1, progress=progress)
        finally:
            destination.close()
    finally:
        raw.close()


def _copy_database(engine: Engine, partial: Path) -> None:
    """Fill `partial` from a PostgreSQL snapshot: schema by the migrations, then every table's rows."""
    snapshot = engine.connect().execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    with snapshot as source:
        revision = _revision_of(source)  # the transaction's first query: the snapshot starts here
        if revision is None:
            raise BackupError("the database has no tipline schema: nothing to back up")
        _check_known(revision, "the database")
        url = _sqlite_url(partial)
        _migrate(url, revision)
        file = db.make_engine(url)
        event.listen(file, "connect", _in_memory_temp)
        try:
            _copy_rows(source, file)
        finally:
            file.dispose()


def _in_memory_temp(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    """SQLite's temporary files (sorts, statement journals) stay in memory: nothing goes to /tmp."""
    dbapi_connection.execute("PRAGMA temp_store=MEMORY")


def _seal(partial: Path, source: str, key: bytes) -> BackupInfo:
    """Make `partial` a backup: transient rows out, the info table in, authenticated, one durable file."""
    connection = sqlite3.connect(partial, isolation_level=None)
    try:
        connection.execute("PRAGMA secure_delete=ON")  # deleted sessions are overwritten, not left in free pages
        connection.execute("PRAGMA temp_store=MEMORY")
        connection.execute("PRAGMA journal_mode=DELETE")  # no -wal beside the file: one file is the backup
        names = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        connection.execute("BEGIN IMMEDIATE")
        for name in TRANSIENT:
            if name in names:
                connection.execute(f'DELETE FROM "{name}"')
        revision = str(connection.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchone()[0])
        tips = int(connection.execute(f'SELECT count(*) FROM "{Tip.__tablename__}"').fetchone()[0])
        connection.execute(f"CREATE TABLE {INFO_TABLE} (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        info = {
            "format": FORMAT,
            "revision": revision,
            "source": source,
            "tips": str(tips),
            "created": to_minute(utcnow()).isoformat(),
        }
        connection.executemany(f"INSERT INTO {INFO_TABLE} VALUES (?, ?)", info.items())
        connection.execute(f"PRAGMA application_id={APPLICATION_ID}")
        connection.execute("COMMIT")
    finally:
        connection.close()
    _authenticate(partial, key)
    _fsync(partial)
    return BackupInfo(revision, tips, partial.stat().st_size, source)


# ---------------------------------------------------------------------------------------------
# Authentication


def tag_key(master: bytes) -> bytes:
    """The key of a backup's tag, derived from the master key: the tag reveals nothing of the master key."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=TAG_INFO).derive(master)


def authenticate(path: Path, master: bytes) -> None:
    """Write the tag of the backup at `path` under `master` (what `tipline backup` does as it finishes;
    tests use it to make a backup as another installation or release would have)."""
    _authenticate(path, tag_key(master))


def _authenticate(path: Path, key: bytes) -> None:
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA temp_store=MEMORY")  # a sort the tag may need spills nowhere
        connection.execute("BEGIN IMMEDIATE")
        tag = _tag(connection, key)
        connection.execute(f"INSERT OR REPLACE INTO {INFO_TABLE} VALUES (?, ?)", (TAG, tag))
        connection.execute("COMMIT")
    finally:
        connection.close()


def _check_authentic(connection: sqlite3.Connection, master: bytes, path: Path) -> None:
    """Refuse a backup whose tag is missing or does not match its content under this master key."""
    stored = connection.execute(f"SELECT value FROM {INFO_TABLE} WHERE key = ?", (TAG,)).fetchone()
    try:
        expected = _tag(connection, tag_key(master))
    except (sqlite3.Error, ValueError):  # a name that is not UTF-8, a table that cannot be read: not a backup's
        expected = ""
    if stored is None or not expected or not hmac.compare_digest(str(stored[0]).encode(), expected.encode()):
        raise BackupError(f"{path}: the backup was altered, or was made under another master key; nothing restored")


class _Text(bytes):
    """A TEXT value as its raw bytes, told apart from a BLOB with the same bytes."""


def _tag(connection: sqlite3.Connection, key: bytes) -> str:
    """HMAC-SHA256 of the file's logical content: the schema, then every table's rows (but the tag's own).

    Canonical, so that the backup and the restore compute it alike over the same file: the schema
    ordered by type and name; tables by name; rows by primary key, then every column (bytewise);
    every value type-tagged and length-prefixed, so no two different contents encode alike.
    """
    mac = hmac.new(key, TAG_INFO, hashlib.sha256)
    previous = connection.text_factory
    connection.text_factory = _Text
    try:
        schema = connection.execute("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name, sql")
        for row in schema:
            _feed(mac, b"S", row)
        names = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        for name in sorted(bytes(row[0]).decode() for row in names):
            _feed(mac, b"T", (name,))
            for row in connection.execute(_rows_in_order(connection, name)):
                _feed(mac, b"R", row)
    finally:
        connection.text_factory = previous
    return mac.hexdigest()


def _rows_in_order(connection: sqlite3.Connection, name: str) -> str:
    columns = connection.execute(f"PRAGMA table_info({_quoted(name)})").fetchall()  # cid, name, type, notnull, dflt, pk
    every = [_quoted(bytes(column[1]).decode()) for column in columns]
    keys = [_quoted(bytes(column[1]).decode()) for column in sorted(columns, key=lambda c: c[5]) if column[5]]
    order = ", ".join([*keys, *(f"{column} COLLATE BINARY" for column in every)])
    where = f" WHERE key <> '{TAG}'" if name == INFO_TABLE else ""
    return f"SELECT {', '.join(every)} FROM {_quoted(name)}{where} ORDER BY {order}"


def _quoted(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _feed(mac: hmac.HMAC, kind: bytes, values: tuple[Any, ...]) -> None:
    mac.update(kind + struct.pack(">I", len(values)))
    for value in values:
        mac.update(_encoded(value))


def _encoded(value: object) -> bytes:
    """One value, type-tagged and length-prefixed: NULL, INTEGER, REAL, TEXT or BLOB."""
    if value is None:
        return b"N"
    if isinstance(value, int):
        return b"I" + struct.pack(">q", value)
    if isinstance(value, float):
        return b"F" + struct.pack(">d", value)
    text = isinstance(value, (_Text, str))
    data = value.encode() if isinstance(value, str) else bytes(value)  # type: ignore[call-overload]
    return (b"T" if text else b"B") + struct.pack(">Q", len(data)) + data


def _publish(partial: Path, target: Path, force: bool) -> None:
    """Rename the finished file to its name; without --force never replace a file that appeared meanwhile."""
    if force:
        os.replace(partial, target)
    else:
        try:
            os.link(partial, target)
        except FileExistsError:
            raise BackupError(f"{target} appeared meanwhile: choose another name, or add --force") from None
        partial.unlink()
    _fsync(target.parent)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------------
# Reading a backup


def describe(path: Path) -> BackupInfo:
    """What the backup at `path` holds; BackupError if it is not a tipline backup."""
    with _opened(path) as connection:
        info = _info(connection, path)
    return BackupInfo(info["revision"], int(info.get("tips", "0")), path.stat().st_size, info.get("source", "?"))


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[sqlite3.Connection]:
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    connection = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        yield connection
    finally:
        connection.close()


def _info(connection: sqlite3.Connection, path: Path) -> dict[str, str]:
    not_a_backup = BackupError(f"{path} is not a tipline backup (made by `tipline backup`)")
    try:
        application_id = connection.execute("PRAGMA application_id").fetchone()[0]
        info = {str(k): str(v) for k, v in connection.execute(f"SELECT key, value FROM {INFO_TABLE}")}
    except sqlite3.Error:  # not SQLite at all, or a database without the info table
        raise not_a_backup from None
    if application_id != APPLICATION_ID or "revision" not in info:
        raise not_a_backup
    if info.get("format") != FORMAT:
        raise BackupError(f"{path} is a backup in format {info.get('format')}, which this tipline cannot read")
    return info


def _check_master_key(connection: sqlite3.Connection, master: bytes) -> None:
    """One key version per purpose must open under `master`, or the restored data would open nothing."""
    cursor = connection.execute("SELECT * FROM key_versions ORDER BY is_primary DESC, version DESC")
    names = [column[0] for column in cursor.description]
    chosen: dict[str, dict[str, Any]] = {}
    for row in (dict(zip(names, values, strict=True)) for values in cursor):
        if row["wrapped_key"] and row.get("retired_at") is None:  # a retired version's key is destroyed
            chosen.setdefault(row["purpose"], row)
    if not chosen:
        raise BackupError("the backup holds no keys: it cannot be restored")
    for purpose, row in chosen.items():
        try:
            crypto.unwrap_kek(master, purpose, row["version"], row["wrapped_key"])
        except crypto.IntegrityError:
            raise BackupError(
                f"the master key does not open this backup's keys ({purpose} v{row['version']}): put the ORIGINAL "
                "master key in place (TIPLINE_MASTER_KEY, or master.key in the data directory), restored from "
                "its offline copy, then run restore again; nothing was written"
            ) from None


# ---------------------------------------------------------------------------------------------
# Restore


def restore(settings: Settings, source: Path, *, actor: str | None = None) -> RestoreReport:
    """Bring the backup at `source` into the empty installation `settings` describe; audited.

    The backup is read in ONE read transaction of one connection, from its checks to the last row
    copied: what is authenticated is what is copied, even if the file changed meanwhile."""
    with _reading(source) as (reader, connection):
        info = _info(connection, source)
        _check_known(info["revision"], str(source))
        master = _master_key(settings)
        _check_master_key(connection, master)
        _check_authentic(connection, master, source)
        if settings.sqlite_path is not None:
            settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = db.make_engine(settings.database_url)
        try:
            _check_empty(settings, engine)
            revision = info["revision"]
            _schema_at(settings.database_url, engine, revision)
            counts = _copy_rows(reader, engine)
            _migrate(settings.database_url, "head")
            head = _revision_of_engine(engine) or revision
            factory = db.make_sessionmaker(engine)
            ctx = ServiceContext(factory, KeyStore(factory, master), settings)
            tips = counts.get(str(Tip.__tablename__), 0)
            rows = sum(counts.values())
            audit.log_event(ctx, "backup.restore", actor=actor, detail={"tips": tips, "rows": rows, "schema": revision})
            return RestoreReport(revision, head, tips, rows, _accounts(ctx))
        finally:
            engine.dispose()


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[tuple[Connection, sqlite3.Connection]]:
    """The backup, read-only, in one read transaction: as a SQLAlchemy connection and as its sqlite3 one."""
    if not path.is_file():
        raise BackupError(f"{path}: no such file")
    uri = f"{path.absolute().as_uri()}?mode=ro"
    engine = create_engine(
        "sqlite://", creator=lambda: sqlite3.connect(uri, uri=True, isolation_level=None), poolclass=StaticPool
    )
    try:
        with engine.connect() as reader:  # SQLAlchemy's first-connect rollback is behind us from here
            connection: sqlite3.Connection = reader.connection.driver_connection  # type: ignore[assignment]
            connection.execute("PRAGMA temp_store=MEMORY")
            connection.execute("BEGIN")  # ended by SQLAlchemy's rollback as `reader` closes
            yield reader, connection
    finally:
        engine.dispose()


def _accounts(ctx: ServiceContext) -> tuple[Account, ...]:
    """Who can sign in to the restored console, for the operator to see (no hash, no secret)."""
    with ctx.factory() as session:
        users = session.scalars(select(User).order_by(User.username))
        return tuple(Account(u.username, u.roles, u.totp_secret_ct is not None, u.disabled) for u in users)


def _master_key(settings: Settings) -> bytes:
    """The master key, never a new one: a restore needs the key the backup's keys are wrapped under."""
    if settings.master_key is None and not master_key_path(settings).exists():
        raise BackupError(
            f"no master key: put the backup's master key in TIPLINE_MASTER_KEY or {master_key_path(settings)} "
            "(restored from its offline copy), then run restore again"
        )
    try:
        return load_master_key(settings)
    except KeyStoreError as error:
        raise BackupError(str(error)) from None


EMPTY_HINT = (
    "restore needs an empty installation: point TIPLINE_DATABASE_URL at a new, empty database "
    "(PostgreSQL: `createdb`), or for SQLite TIPLINE_DATA_DIR at a new directory (or move tipline.db and its "
    "-wal and -shm out of it), keep the same master key, "
    "and do not run `tipline init` before restoring"
)
# What makes an installation: keys, accounts, senders, tips and the audit log. A schema whose
# migrations alone wrote rows (bookkeeping such as alembic_version or a health probe), or that a
# failed restore left, holds none of these, and a restore replaces every row anyway.
INSTALLATION = tuple(str(model.__tablename__) for model in (KeyVersion, User, Contact, Tip, AuditEntry))


def _check_empty(settings: Settings, engine: Engine) -> None:
    """Refuse a database that holds keys, accounts, senders, tips or audit entries (`tipline init` made some)."""
    if settings.sqlite_path is not None and not settings.sqlite_path.exists():
        return
    with engine.connect().execution_options(tipline_read_only=True) as connection:
        names = set(inspect(connection).get_table_names())
        holding = [
            name
            for name in INSTALLATION
            if name in names and connection.scalar(select(func.count()).select_from(table(name)))
        ]
    if holding:
        raise BackupError(f"this installation is not empty (it holds {', '.join(holding)}): {EMPTY_HINT}")


def _schema_at(url: str, engine: Engine, revision: str) -> None:
    """Bring the (empty) schema to the backup's revision: built from nothing, or moved there."""
    current = _revision_of_engine(engine)
    _migrate(url, revision, down=current is not None and not _is_ancestor(current, revision))


def _copy_rows(source: Connection, engine: Engine) -> dict[str, int]:
    """Copy every table `engine`'s schema has from `source`, parents first, in one transaction."""
    source_tables = MetaData()
    source_tables.reflect(source)
    target_tables = MetaData()
    with engine.connect().execution_options(tipline_read_only=True) as connection:
        target_tables.reflect(connection)
    counts: dict[str, int] = {}
    with engine.begin() as target:
        for destination in reversed(target_tables.sorted_tables):  # rows the migrations wrote: the copy replaces them
            if destination.name not in NOT_COPIED and destination.name in source_tables.tables:
                target.execute(destination.delete())
        for destination in target_tables.sorted_tables:
            origin = source_tables.tables.get(destination.name)
            if destination.name in NOT_COPIED or origin is None:
                continue
            counts[destination.name] = _copy_table(source, origin, target, destination)
        if target.dialect.name == "postgresql":
            _advance_sequences(target, target_tables)
    return counts


def _copy_table(source: Connection, origin: Table, target: Connection, destination: Table) -> int:
    columns = [column.name for column in destination.columns if column.name in origin.columns]
    result = source.execution_options(yield_per=BATCH).execute(select(*(origin.c[name] for name in columns)))
    copied = 0
    for batch in result.partitions():
        target.execute(destination.insert(), [dict(zip(columns, row, strict=True)) for row in batch])
        copied += len(batch)
    return copied


def _advance_sequences(target: Connection, tables: MetaData) -> None:
    """Move each serial column's sequence past the copied ids, so that new rows do not collide."""
    for destination in tables.sorted_tables:
        for column in destination.primary_key.columns:
            sequence = target.scalar(
                text("SELECT pg_get_serial_sequence(:t, :c)"), {"t": destination.name, "c": column.name}
            )
            if sequence is None:
                continue
            highest = target.scalar(select(func.max(column))) or 0
            target.execute(text("SELECT setval(:s, :v, false)"), {"s": sequence, "v": int(highest) + 1})


# ---------------------------------------------------------------------------------------------
# Schema revisions


@contextlib.contextmanager
def _quiet_migrations() -> Iterator[None]:
    """Alembic names every migration it runs at INFO: noise in a backup's or restore's summary."""
    logger = logging.getLogger("alembic")
    previous = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(previous)


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    with _quiet_migrations():
        (command.downgrade if down else command.upgrade)(db.alembic_config(url), revision)


def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(db.alembic_config(""))


def _check_known(revision: str, what: str) -> None:
    """Refuse a revision this code's migrations do not know: a newer tipline wrote it."""
    scripts = _scripts()
    if revision not in {script.revision for script in scripts.walk_revisions()}:
        raise BackupError(
            f"{what} is from a newer tipline (schema {revision}; this one knows up to {scripts.get_current_head()}): "
            "use that release or a newer one"
        )


def _is_ancestor(older: str, newer: str) -> bool:
    return older in {script.revision for script in _scripts().iterate_revisions(newer, "base")}


def _revision_of(connection: Connection) -> str | None:
    with _quiet_migrations():
        revision: Any = MigrationContext.configure(connection).get_current_revision()
    return str(revision) if revision is not None else None


def _revision_of_engine(engine: Engine) -> str | None:
    with engine.connect().execution_options(tipline_read_only=True) as connection:
        return _revision_of(connection)


def _sqlite_url(path: Path) -> str:
    return f"sqlite:///{path}"
