"""Search every byte the program wrote for things that must never be there in plaintext."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import Engine, MetaData, select


def phone_formats(e164: str) -> list[str]:
    """A North American number in the forms people and systems write it."""
    digits = e164.lstrip("+")
    national = digits[1:] if digits.startswith("1") and len(digits) == 11 else digits
    area, exchange, line = national[:3], national[3:6], national[6:]
    return [
        e164,
        digits,
        national,
        f"{area}-{exchange}-{line}",
        f"({area}) {exchange}-{line}",
        f"{area} {exchange} {line}",
        f"{area}.{exchange}.{line}",
        f"+1 {area} {exchange} {line}",
        f"+1-{area}-{exchange}-{line}",
        f"{exchange}-{line}",
    ]


def _variants(needle: str | bytes) -> list[bytes]:
    if isinstance(needle, bytes):
        return [needle]  # a ciphertext or key: exactly these bytes
    forms = {needle, needle.lower(), needle.upper()}
    out = []
    for form in forms:
        out.append(form.encode("utf-8"))
        out.append(form.encode("utf-16-le"))
    return out


# A short run of digits (a ZIP code like "00599") turns up by chance in what the program writes
# at random, and CI failed on it:
# - the microseconds of a timestamp as SQLAlchemy writes one ("19:45:07.500599"): a given five
#   digits are in about two of every 100,000 such values;
# - an id (uuid4 in hex, 32 characters) or a keyed hash (64 hex characters): about one id in
#   37,000 holds a given five digits.
# So a short number within the six digits after "HH:MM:SS." is not a hit, nor one inside a run of
# hex digits exactly as long as an id or a keyed hash. In SQLite's own files a record puts a
# column's bytes right beside the next one's, so an id there often runs on into its neighbours
# ("delete", "2026-..."): inside any hex run of an id's length or more, a short number is not a
# hit there. A number the program stored would still be found, value by value, by scan_database;
# and beside an id in any other file (a log, an export) it makes a longer run than any id.
SHORT_NUMBER = 6
_IN_MICROSECONDS = b"".join(rb"(?<![0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{%d})" % n for n in range(SHORT_NUMBER))
_HEX = frozenset(b"0123456789abcdefABCDEF")
_RANDOM_HEX_LENGTHS = (32, 64)
_SQLITE_FILES = (".db", ".db-wal", ".db-journal", ".db-shm")


def _short_number(needle: str | bytes) -> bool:
    return isinstance(needle, str) and needle.isdigit() and len(needle) <= SHORT_NUMBER


def _pattern(needle: str | bytes) -> re.Pattern[bytes]:
    forms = b"|".join(re.escape(v) for v in _variants(needle))
    return re.compile(_IN_MICROSECONDS + b"(?:" + forms + b")" if _short_number(needle) else forms)


def _in_random_hex(data: bytes, start: int, end: int, sqlite: bool) -> bool:
    """Whether data[start:end] lies in a run of hex digits that an id or a keyed hash explains."""
    while start > 0 and data[start - 1] in _HEX:
        start -= 1
    while end < len(data) and data[end] in _HEX:
        end += 1
    run = end - start
    return run >= _RANDOM_HEX_LENGTHS[0] if sqlite else run in _RANDOM_HEX_LENGTHS


def occurs(needle: str | bytes, data: bytes, sqlite: bool = False) -> bool:
    """Whether needle is in data, as scan_files and scan_database search it (`sqlite`: data is a
    SQLite database, journal or WAL file)."""
    matches = _pattern(needle).finditer(data)
    if not _short_number(needle):
        return next(matches, None) is not None
    return any(not _in_random_hex(data, m.start(), m.end(), sqlite) for m in matches)


def scan_files(
    root: Path, needles: Sequence[str | bytes], extra_files: Sequence[Path] = ()
) -> list[tuple[str, str | bytes]]:
    """Every (file, needle) pair where a needle occurs in a file under root (or in extra_files).

    Text needles are searched in UTF-8 and UTF-16 and in any case; bytes needles exactly."""
    hits: list[tuple[str, str | bytes]] = []
    files = [p for p in root.rglob("*") if p.is_file()] + list(extra_files)
    assert files, f"nothing to scan under {root}"
    for path in files:
        data = path.read_bytes()
        sqlite = path.name.endswith(_SQLITE_FILES)
        for needle in needles:
            if occurs(needle, data, sqlite):
                hits.append((str(path), needle))
    return hits


def scan_database(engine: Engine, needles: Sequence[str | bytes]) -> list[tuple[str, str | bytes]]:
    """Every (table.column, needle) pair where a needle occurs in a stored value (any database)."""
    metadata = MetaData()
    metadata.reflect(engine)
    hits: list[tuple[str, str | bytes]] = []
    with engine.connect() as connection:
        for table in metadata.sorted_tables:
            for row in connection.execute(select(table)):
                for column, value in zip(table.columns, row, strict=True):
                    if value is None:
                        continue
                    if isinstance(value, int) and not isinstance(value, bool):
                        # A number stores a number whole. Keyed-hash tokens (search_terms) are random
                        # 64-bit integers whose 19 digits hold a 5-digit ZIP like "00599" by chance
                        # about once in 5,000 tokens: CI saw it. Such a column matches whole numbers only.
                        digits = str(abs(value))
                        for needle in needles:
                            wanted = "".join(c for c in str(needle) if c.isdigit())
                            if len(wanted) >= 5 and int(wanted) == int(digits):  # not "0" for 0
                                hits.append((f"{table.name}.{column.name}", needle))
                        continue
                    data = value if isinstance(value, bytes | memoryview) else str(value).encode()
                    data = bytes(data)
                    for needle in needles:
                        if occurs(needle, data):
                            hits.append((f"{table.name}.{column.name}", needle))
    return hits
