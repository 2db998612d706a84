"""The search that proves anonymity: it must find what the program writes, and not chance digits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table, create_engine, insert

from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.harness import CARRIER_ZIP, TIPSTER


def test_a_zip_code_is_found_where_written_and_not_inside_a_timestamp(tmp_path: Path) -> None:
    needles = [*phone_formats(TIPSTER), CARRIER_ZIP]
    # Microseconds that happen to hold the ZIP's digits: CI once failed on such a WAL page; and ids
    # (uuid4 in hex) or keyed hashes that do
    (tmp_path / "wal").write_bytes(b"\x00\x01" + b"2026-12-04 19:45:07.5" + CARRIER_ZIP.encode() + b"\x00")
    (tmp_path / "ids").write_bytes(
        b"\x1d" + b"a3f4" + CARRIER_ZIP.encode() + b"e" * 23 + b"sms" + b"c" * 40 + CARRIER_ZIP.encode() + b"f" * 19
    )
    assert scan_files(tmp_path, needles) == []

    written = {
        "form": f"FromZip={CARRIER_ZIP}&Body=hi".encode(),
        "json": f'{{"FromZip": "{CARRIER_ZIP}"}}'.encode("utf-16-le"),
        "line": f"zip {CARRIER_ZIP.lower()}\n".encode(),
        "number": f"call {TIPSTER[2:]}0 now".encode(),  # a phone number is found inside digits too
        # Beside other digits: a SQLite record's next column (a timestamp), a percent-encoded space,
        # a UTF-16 character whose high byte is a digit's (U+3012, the postal mark)
        "record": b"\x1f" + CARRIER_ZIP.encode() + b"2026-12-04 19:45:07.000000",
        "url": f"/where?loc=NH%20{CARRIER_ZIP}".encode(),
        "postal": f"\u3012{CARRIER_ZIP}".encode("utf-16-le"),
        "beside an id": b"\x1d" + b"a3f4" * 8 + CARRIER_ZIP.encode() + b"sms",
    }
    for name, data in written.items():
        (tmp_path / name).write_bytes(data)
    hits = {Path(path).name for path, _ in scan_files(tmp_path, needles)}
    assert hits == set(written)


def test_the_database_scan_skips_chance_digits_in_stored_times(tmp_path: Path) -> None:
    engine = create_engine(f"sqlite:///{tmp_path / 'scan.db'}")
    table = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("at", DateTime), Column("s", String))
    table.metadata.create_all(engine)
    chance = dt.datetime(2026, 12, 4, 19, 45, 7, int("5" + CARRIER_ZIP))
    with engine.begin() as connection:
        connection.execute(insert(table), [{"at": chance, "s": "nothing"}])
    assert scan_database(engine, [CARRIER_ZIP]) == []

    with engine.begin() as connection:
        connection.execute(insert(table), [{"at": chance, "s": f"zip {CARRIER_ZIP}"}])
    assert scan_database(engine, [CARRIER_ZIP]) == [("t.s", CARRIER_ZIP)]


def test_in_sqlite_s_files_an_id_running_on_into_its_neighbours_is_no_hit(tmp_path: Path) -> None:
    """A record's columns lie side by side: an outbox id holding the ZIP by chance runs on into
    its kind ("delete") and is still an id. A review found the exact-length rule missed about half
    of the ids and hashes in the WAL."""
    chance_id = b"3b7e" + CARRIER_ZIP.encode() + b"c" * 23
    (tmp_path / "tipline.db-wal").write_bytes(b"\x0bA" + chance_id + b"delete" + b"\x00" * 8)
    assert scan_files(tmp_path, [CARRIER_ZIP]) == []
    # Stored beside a timestamp it is a hit, in the same file
    (tmp_path / "tipline.db-wal").write_bytes(b"\x0bA" + chance_id + b"\x17" + CARRIER_ZIP.encode() + b"2026-12-04")
    assert scan_files(tmp_path, [CARRIER_ZIP]) == [(str(tmp_path / "tipline.db-wal"), CARRIER_ZIP)]
