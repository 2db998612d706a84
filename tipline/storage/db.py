"""Engine, sessions and migrations.

SQLite is the embedded default and is run for durability: WAL with `synchronous=FULL`, because a
tip acknowledged to the provider must survive a power cut (in WAL mode NORMAL may roll back a
committed transaction). Write transactions start with BEGIN IMMEDIATE so that two requests never
both read then both try to upgrade to a write lock (which SQLite resolves by failing one).
`secure_delete` overwrites what is deleted or replaced (an erased return address, a shredded data
key) with zeros instead of leaving it in free space, and `checkpoint` after an erasure folds the
WAL, which still holds the old pages, into the database and truncates it.
PostgreSQL is fully supported through psycopg 3; what erasure needs there is the operator's part
(VACUUM, WAL and backup retention, see README).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import CursorResult, Engine, Result, create_engine, event, make_url, update
from sqlalchemy.exc import InvalidatePoolError
from sqlalchemy.orm import Session, sessionmaker

T = TypeVar("T")
log = logging.getLogger(__name__)
MIGRATIONS = Path(__file__).parent / "migrations"
WRITE_LOCK_TIMEOUT = 60.0
PING_AFTER_IDLE = 0.25  # seconds: PostgreSQL connections idle longer are pinged before use


class _FileLock:
    """An exclusive flock on `<database>.writelock`, which every process using the database takes
    (none for an in-memory database). Opened at the first write, closed when the engine is disposed,
    and closed in a process forked from this one (`_forget_inherited_locks`)."""

    def __init__(self, url: str):
        database = make_url(url).database
        self.path = f"{database}.writelock" if database and database != ":memory:" else None
        self.fd: int | None = None

    def acquire(self) -> None:
        if self.path is None:
            return
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            _OPEN_LOCKS.add(self)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


_OPEN_LOCKS: weakref.WeakSet[_FileLock] = weakref.WeakSet()


def _forget_inherited_locks() -> None:
    """In a process just forked (rotation's read-ahead helper, a test's child): close the lock files
    inherited from the parent. An flock belongs to the open file, which the child's copy of the
    descriptor shares: kept open, it would hold a lock the parent took for as long as the child
    lives, even after the parent was killed, and every writer would wait on it. Closing the copy
    leaves the parent's lock to the parent; a write of the child's own opens the file again."""
    for lock in list(_OPEN_LOCKS):
        lock.close()


os.register_at_fork(after_in_child=_forget_inherited_locks)


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

        # SQLite has one writer at a time. Left to itself, a second writer polls with sleeps of up
        # to 100 ms (its busy handler), which turns a queue of a few milliseconds into a p99 of a
        # second. Writers of this process therefore queue on a lock, held from BEGIN to COMMIT, and
        # inside it on a lock file shared with the other processes (`serve --workers N`, a separate
        # dispatcher, a command), for the same span: flock hands over to the next writer at once.
        # The file lock is waited for without a bound: its holders wait on nothing but the disk.
        write_lock = threading.Lock()
        processes = _FileLock(url)

        def release() -> None:
            try:
                processes.release()
            finally:
                write_lock.release()

        @event.listens_for(engine, "engine_disposed")
        def _sqlite_disposed(_engine):  # type: ignore[no-untyped-def]
            if write_lock.acquire(blocking=False):  # never under a writer of this process
                try:
                    processes.close()
                finally:
                    write_lock.release()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(connection):  # type: ignore[no-untyped-def]
            if connection.get_execution_options().get("tipline_read_only"):
                connection.exec_driver_sql("BEGIN")
                return
            if not write_lock.acquire(timeout=WRITE_LOCK_TIMEOUT):
                raise TimeoutError("the database write lock was not released in time")
            connection.info["tipline_write_lock"] = True
            try:
                processes.acquire()
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                # SQLAlchemy may already have rolled back (and so released) on the failed BEGIN:
                # release only if still held, or "database is locked" turns into a RuntimeError.
                if connection.info.pop("tipline_write_lock", False):
                    release()
                raise

        # End the transaction ourselves, then release: the DBAPI's own commit/rollback that
        # SQLAlchemy issues next finds no open transaction and does nothing.
        @event.listens_for(engine, "commit")
        def _sqlite_commit(connection):  # type: ignore[no-untyped-def]
            if connection.info.pop("tipline_write_lock", False):
                dbapi_connection = connection.connection.dbapi_connection
                try:
                    dbapi_connection.commit()
                except BaseException:
                    dbapi_connection.rollback()  # a failed COMMIT leaves the transaction open
                    raise
                finally:
                    release()

        @event.listens_for(engine, "rollback")
        def _sqlite_rollback(connection):  # type: ignore[no-untyped-def]
            if connection.info.pop("tipline_write_lock", False):
                try:
                    connection.connection.dbapi_connection.rollback()
                finally:
                    release()

        return engine
    return _postgres_engine(url)


def _postgres_engine(url: str) -> Engine:
    """A pool that makes sure a connection still works before handing it out, when it might not.

    A connection idle for more than PING_AFTER_IDLE may have been cut (a server restarted, a proxy
    or firewall that drops idle connections): it is pinged first, and the pool's connections are
    replaced if the ping fails, so the first message after an outage is answered normally. Under
    load a connection is back in use within milliseconds and is handed out as it is: pinging it
    would cost every message a round trip. Should it have died in that moment (the server killed
    it), its first statement fails, the pool replaces every connection it holds, and intake runs the
    message again once (`Intake.receive`); other requests fail as in an outage.
    """
    engine = create_engine(url, pool_size=10, max_overflow=10, hide_parameters=True)

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection, record):  # type: ignore[no-untyped-def]
        record.info["tipline_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection, record, _proxy):  # type: ignore[no-untyped-def]
        since = record.info.get("tipline_idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE:
            return  # just connected, or in use moments ago
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool replaces every connection it holds (those made before were likely cut
            # too) and checks out again.
            raise InvalidatePoolError(str(error)) from error

    return engine


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextlib.contextmanager
def read_only(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A session for reading only: on SQLite it does not take the write lock."""
    with factory() as session:
        session.connection(execution_options={"tipline_read_only": True})
        yield session
        session.expunge_all()  # what was read stays usable after the transaction ends
        session.rollback()


def claim_due(factory: sessionmaker[Session], model: Any, query: Any, values: dict[str, object]) -> list[Any]:
    """Lease the rows `query` (a select of `model.id`) finds: set `values` on them, return their ids.

    It looks first without the write lock, so an idle queue costs intake nothing; then, on
    PostgreSQL, candidates are locked with SKIP LOCKED so that several workers never take one row
    (on SQLite the claim is serialised by the write lock).
    """
    with read_only(factory) as session:
        if session.scalar(query) is None:
            return []
    with factory.begin() as session:
        if is_postgres(session):
            query = query.with_for_update(skip_locked=True)
        ids = list(session.scalars(query).all())
        if ids:
            session.execute(update(model).where(model.id.in_(ids)).values(**values))
        return ids


def rowcount(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE touched."""
    return int(result.rowcount or 0) if isinstance(result, CursorResult) else 0


def is_postgres(session_or_engine: Session | Engine) -> bool:
    bind = session_or_engine.get_bind() if isinstance(session_or_engine, Session) else session_or_engine
    return bind.dialect.name == "postgresql"


def checkpoint(factory: sessionmaker[Session]) -> bool:
    """On SQLite, fold the WAL into the database and truncate it, so erased bytes leave the disk.

    Run after a commit that erased something (a return address, a data key): until then the old
    pages are still in the WAL. It waits (busy_timeout) for readers of older snapshots to finish;
    returns False if it could not truncate (a reader held on), True otherwise. On PostgreSQL it
    does nothing: dead tuples and WAL there are the operator's (VACUUM, WAL and backup retention).
    """
    engine = factory.kw["bind"]
    if engine.dialect.name != "sqlite":
        return True
    raw = engine.raw_connection()  # outside any transaction, as a checkpoint must be
    try:
        busy, _, _ = raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        raw.close()
    if busy:
        log.warning("WAL checkpoint after an erasure did not complete: a reader held on; the next one will")
    return not busy


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, target: str = "head") -> None:
    """Create or upgrade the schema to the newest migration (or to `target`, for upgrade tests)."""
    from alembic import command

    command.upgrade(alembic_config(url), target)


class Unreachable(Exception):
    """The database did not answer; the message is `error_line()`."""


class SchemaError(Exception):
    """The database's schema is not one this code can run on or upgrade; the message says why."""


@dataclass(frozen=True)
class SchemaState:
    """Where the database's schema stands against the migrations this code ships."""

    current: str | None  # the database's Alembic revision; None before the first migration
    head: str  # the newest migration of this code: the revision it needs
    known: bool  # False when a newer tipline migrated the database past what this code knows

    @property
    def behind(self) -> bool:
        return self.known and self.current != self.head

    def problem(self) -> str | None:
        """Why code at `head` must not run on this database, or None when the revisions agree.

        Checked once at start: code that reads a column a migration has not added yet fails request
        by request (a webhook answered 500, a tip the provider retries), so it refuses whole instead.
        """
        if not self.known:
            return (
                f"the database schema is at {self.current}, which this tipline does not know (it needs {self.head}): "
                "this tipline is older than the database; run the newer release that upgraded it"
            )
        if self.behind:
            return (
                f"the database schema is at {self.current or 'no revision'} but this tipline needs {self.head}: "
                "run `tipline init` to upgrade"
            )
        return None


def head_revision() -> str:
    """The schema revision this code needs (its newest migration), for `tipline --version`."""
    return schema_scripts().get_current_head() or ""


def schema_scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config(""))


def schema_state(engine: Engine) -> SchemaState:
    """Read the database's revision (one query on `alembic_version`) and compare it with the code's."""
    scripts = schema_scripts()
    with engine.connect() as connection:
        connection = connection.execution_options(tipline_read_only=True)  # SQLite: no write lock
        current = MigrationContext.configure(connection).get_current_revision()
    known = current is None or current in {script.revision for script in scripts.walk_revisions()}
    return SchemaState(current, scripts.get_current_head() or "", known)


def error_line(error: BaseException, url: str) -> str:
    """Why the database did not answer, in one line an operator can act on.

    The driver's own first line says it (connection refused at host:port, password authentication
    failed, database "x" does not exist, timeout expired), where the exception's type alone said
    nothing. The password of the URL is never repeated, however the driver quotes it.
    """
    cause = getattr(error, "orig", None) or error
    lines = str(cause).strip().splitlines()
    line = lines[0].strip() if lines else type(cause).__name__
    line = line.removeprefix("connection failed: ").replace("FATAL:  ", "")
    password = make_url(url).password if "://" in url else None
    for secret in {str(password), quote(str(password), safe="")} if password else ():
        line = line.replace(secret, "***")
    return line


class GroupCommitter:
    """Run units of work from many threads in shared transactions: one durable commit for many.

    On SQLite every commit is an fsync (WAL, synchronous=FULL), and only one writer runs at a
    time, so under concurrent webhooks the disk, not the CPU, sets the pace. Work submitted while a
    batch is committing waits and then goes into the next transaction together. `run` returns only
    after the transaction holding the unit has committed, so an acknowledgement still means
    "durably stored". (PostgreSQL groups WAL flushes of concurrent commits by itself.)

    One unit's failure must not undo the others'. A SAVEPOINT around each unit would see to it, at
    a cost of about 0.3 ms a unit (two statements and SQLAlchemy's nested transaction) paid by
    every message for a failure that is rare. So a batch runs without them, and if a unit fails,
    the whole transaction is rolled back and the batch run again, each unit in its own savepoint.
    Units must therefore be safe to run again after a rollback (intake's are: everything they do
    is in the transaction). An exception type in `clean` is one a unit raises only before it wrote
    anything (intake's Duplicate, a redelivery): it fails that unit alone, without a second run.
    """

    def __init__(self, factory: sessionmaker[Session], max_batch: int = 64, clean: tuple[type[Exception], ...] = ()):
        self._factory = factory
        self._max_batch = max_batch
        self._clean = clean
        self._pending: list[tuple[Callable[[Session], Any], Future[Any]]] = []
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None
        self.reruns = 0  # batches run again unit by unit after a failure (tests, benchmarks)
        self.batches = 0  # transactions committed (tests, benchmarks)

    def run(self, work: Callable[[Session], T]) -> T:
        future: Future[T] = Future()
        with self._condition:
            self._pending.append((work, future))
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(target=self._loop, name="group-commit", daemon=True)
                self._worker.start()
            self._condition.notify()
        return future.result()

    def _loop(self) -> None:
        while True:
            with self._condition:
                while not self._pending:
                    if not self._condition.wait(timeout=5.0) and not self._pending:
                        self._worker = None  # idle: let the thread end; run() starts another
                        return
            self._commit()

    def _take(self) -> list[tuple[Callable[[Session], Any], Future[Any]]]:
        with self._condition:
            batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
        return batch

    def _commit(self) -> None:
        batch: list[tuple[Callable[[Session], Any], Future[Any]]] = []  # filled by _attempt, once it may write
        try:
            try:
                outcomes = self._attempt(batch, isolated=False)
            except _UnitFailed as failed:
                if len(batch) == 1:  # the transaction was the unit's alone: its rollback was the unit's
                    outcomes = [(batch[0][1], None, failed.error)]
                else:
                    self.reruns += 1
                    outcomes = self._attempt(batch, isolated=True)
        except Exception as error:  # noqa: BLE001 - the commit failed: nothing in the batch is stored
            for _, future in batch or self._take():
                future.set_exception(error)
            return
        self.batches += 1
        log.debug("group commit: %d units in one transaction", len(batch))
        for future, result, failure in outcomes:
            if failure is None:
                future.set_result(result)
            else:
                future.set_exception(failure)

    def _attempt(
        self, batch: list[tuple[Callable[[Session], Any], Future[Any]]], *, isolated: bool
    ) -> list[tuple[Future[Any], Any, BaseException | None]]:
        """Run the batch in one transaction and commit it. Not `isolated`: a unit's failure (other
        than a `clean` one) rolls everything back and raises _UnitFailed; `isolated`: each unit in
        a savepoint, so a failing unit is rolled back alone.

        An empty `batch` is filled once the transaction has begun. On SQLite, beginning waits for
        the write lock, perhaps held by another process's batch; what is submitted meanwhile then
        joins this transaction rather than waiting for the next one and its own durable commit."""
        outcomes: list[tuple[Future[Any], Any, BaseException | None]] = []
        with self._factory.begin() as session:
            if not batch:
                session.connection()  # BEGIN (IMMEDIATE, on SQLite: the wait for the write lock)
                batch.extend(self._take())
            for work, future in batch:
                try:
                    if isolated:
                        with session.begin_nested():
                            result = work(session)
                    else:
                        result = work(session)
                except self._clean as error:
                    outcomes.append((future, None, error))
                except Exception as error:  # noqa: BLE001 - handed to the waiting request
                    if not isolated:
                        raise _UnitFailed(error) from error
                    outcomes.append((future, None, error))
                else:  # in a savepoint, only once it is released: releasing can fail too
                    outcomes.append((future, result, None))
        return outcomes


class _UnitFailed(Exception):
    """A unit of a batch run without savepoints failed: the batch was rolled back (GroupCommitter)."""

    def __init__(self, error: Exception):
        super().__init__(str(error))
        self.error = error
