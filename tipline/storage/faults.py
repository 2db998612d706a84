"""What went wrong with the database, in words an operator can act on, without quoting the error.

An exception's text may quote the statement's parameters (ciphertext, a pseudonym, worse), so log
lines and /healthz name the cause from error codes only: SQLite's result code (`sqlite_errorcode`),
PostgreSQL's SQLSTATE (`sqlstate`), and the exception's class. "database unavailable
(OperationalError)" said nothing; "database or disk is full" says what to do.
"""

from __future__ import annotations

import enum
import sqlite3

from sqlalchemy.exc import DBAPIError, InterfaceError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout


class Cause(enum.StrEnum):
    """Why the database failed; the value is what /healthz shows as `database`."""

    FULL = "full"
    UNREACHABLE = "unreachable"
    LOCKED = "locked"
    READ_ONLY = "read-only"
    IO = "io-error"
    DAMAGED = "damaged"
    DENIED = "denied"
    BUSY = "busy"
    TIMEOUT = "timeout"
    ERROR = "error"


# What a database call may raise: SQLAlchemy's errors, the sqlite3 module's own from the COMMIT that
# db.make_engine issues itself, and the TimeoutError of its write lock.
ERRORS = (SQLAlchemyError, sqlite3.Error, TimeoutError)

PHRASES = {
    Cause.FULL: "database or disk is full",
    Cause.UNREACHABLE: "database unreachable",
    Cause.LOCKED: "database is locked",
    Cause.READ_ONLY: "database is read-only",
    Cause.IO: "disk I/O error",
    Cause.DAMAGED: "database file is damaged",
    Cause.DENIED: "database refused access",
    Cause.BUSY: "no database connection free in time",
    Cause.TIMEOUT: "database statement timed out",
    Cause.ERROR: "database error",
}

# SQLite's primary result codes (https://sqlite.org/rescode.html); an extended code's low byte is one.
SQLITE = {
    3: Cause.DENIED,  # SQLITE_PERM
    5: Cause.LOCKED,  # SQLITE_BUSY: another connection holds the write lock
    6: Cause.LOCKED,  # SQLITE_LOCKED
    8: Cause.READ_ONLY,  # SQLITE_READONLY
    10: Cause.IO,  # SQLITE_IOERR
    11: Cause.DAMAGED,  # SQLITE_CORRUPT
    13: Cause.FULL,  # SQLITE_FULL
    14: Cause.UNREACHABLE,  # SQLITE_CANTOPEN: the file or its directory is gone
    23: Cause.DENIED,  # SQLITE_AUTH
    26: Cause.DAMAGED,  # SQLITE_NOTADB
}

# PostgreSQL's SQLSTATE codes (https://www.postgresql.org/docs/current/errcodes-appendix.html),
# longest prefix first.
POSTGRES = (
    ("53100", Cause.FULL),  # disk_full
    ("53300", Cause.BUSY),  # too_many_connections
    ("25006", Cause.READ_ONLY),  # read_only_sql_transaction (a standby, or default_transaction_read_only)
    ("55P03", Cause.LOCKED),  # lock_not_available
    ("40P01", Cause.LOCKED),  # deadlock_detected
    ("57014", Cause.TIMEOUT),  # query_canceled (statement_timeout)
    ("57P", Cause.UNREACHABLE),  # admin_shutdown, crash_shutdown, cannot_connect_now
    ("58030", Cause.IO),  # io_error
    ("XX001", Cause.DAMAGED),  # data_corrupted
    ("XX002", Cause.DAMAGED),  # index_corrupted
    ("08", Cause.UNREACHABLE),  # connection_exception
    ("28", Cause.DENIED),  # invalid_authorization_specification
    ("42501", Cause.DENIED),  # insufficient_privilege
    ("3D000", Cause.UNREACHABLE),  # invalid_catalog_name: the database does not exist
)


def cause(error: BaseException) -> Cause:
    """The cause of a database error, from codes and classes only."""
    if isinstance(error, PoolTimeout):
        return Cause.BUSY
    if isinstance(error, TimeoutError):  # our SQLite write lock (db.make_engine) was not released in time
        return Cause.LOCKED
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return Cause.UNREACHABLE
    driver = getattr(error, "orig", None) or error
    code = getattr(driver, "sqlite_errorcode", None)
    if isinstance(code, int):
        return SQLITE.get(code & 0xFF, Cause.ERROR)
    state = getattr(driver, "sqlstate", None)
    if isinstance(state, str) and state:
        return next((found for prefix, found in POSTGRES if state.startswith(prefix)), Cause.ERROR)
    # psycopg raises OperationalError without a SQLSTATE when no server answers at all (connection
    # refused, the connection dropped): there was no server to give one.
    no_server = type(driver).__module__.startswith("psycopg") and type(driver).__name__ == "OperationalError"
    return Cause.UNREACHABLE if no_server or isinstance(error, InterfaceError) else Cause.ERROR


def describe(error: BaseException) -> str:
    """A short cause for a log line ("database or disk is full"); never the exception's text."""
    return PHRASES[cause(error)]
