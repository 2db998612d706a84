"""Key rotation speed against its physical floor, on SQLite and (with --database-url) PostgreSQL.

Creates N tips' worth of wrapped data keys (a fast path through the database driver), then in the
same run measures:
  floor   = AES-GCM unwrap + wrap of N keys in a tight loop, plus one bulk UPDATE of the same rows;
  rotation = `tipline keys rotate --purpose tips` as the product runs it (batches, compare-and-swap);
and prints keys/s for both and their ratio (target: rotation within 2.5x of the floor). A rotation
is not done before every process has seen the new key (rotation.PROPAGATION, 5 s after it starts),
so below a few hundred thousand keys that wait dominates: the time the rows took to move is printed
too. It also times intake (one SMS conversation step at a time) alone and while a rotation moves
rows, p50/p99.

    python bench/rotation.py [--keys 1000000] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # noqa: E402
from sqlalchemy import text  # noqa: E402

from tests.support.scratch import scratch_database  # noqa: E402
from tipline.config import load_settings  # noqa: E402
from tipline.core import crypto  # noqa: E402
from tipline.core.vocabulary import KeyPurpose
from tipline.runtime import build_runtime  # noqa: E402
from tipline.services import rotation
from tipline.setup import initialise  # noqa: E402
from tipline.storage.keystore import load_master_key  # noqa: E402
from tipline.storage.models import utcnow  # noqa: E402


def fill(runtime, count: int) -> None:  # type: ignore[no-untyped-def]
    keyring = runtime.keys.keyring
    now = utcnow()
    columns = (
        "reference, alias, channel, status, urgent, kek_version, wrapped_dek, message_count, unread, "
        "created_at, updated_at, active_at"
    )
    engine = runtime.engine
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        chunk = 50_000
        for start in range(0, count, chunk):
            rows = []
            for n in range(start, min(start + chunk, count)):
                reference = f"T-R{n:07d}"
                version, wrapped = keyring.wrap_dek(KeyPurpose.TIPS, os.urandom(32), reference)
                rows.append((reference, "BNCH", "sms", "new", False, version, wrapped, 0, 0, now, now, now))
            if engine.dialect.name == "postgresql":
                with cursor.copy(f"COPY tips ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                if start == 0:
                    cursor.execute("BEGIN")
                cursor.executemany(f"INSERT INTO tips ({columns}) VALUES ({', '.join('?' * 12)})", rows)
        if engine.dialect.name == "sqlite":
            cursor.execute("COMMIT")
        else:
            raw.commit()
        if engine.dialect.name == "postgresql":
            cursor.execute("ANALYZE tips")
            raw.commit()
    finally:
        raw.close()


def floor(runtime, count: int) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Seconds for the unavoidable work: unwrap + wrap every key, and one bulk UPDATE of every row.

    SQLite does not write a row that an UPDATE leaves as it was, so the bulk UPDATE of issue 15's
    floor (every column set to itself) writes no page there. The second figure replaces it with a
    bulk UPDATE that changes every row, as a rotation must (PostgreSQL writes a new row version
    either way).
    """
    old, new = AESGCM(crypto.new_key()), AESGCM(crypto.new_key())
    nonce = os.urandom(12)
    samples = [
        (old.encrypt(nonce, os.urandom(32), f"tipline/dek/v1|tips|T-R{n:07d}|kek=1".encode()), n) for n in range(1000)
    ]
    start = time.perf_counter()
    for i in range(count):
        blob, n = samples[i % 1000]
        associated = f"tipline/dek/v1|tips|T-R{n:07d}|kek=1".encode()
        dek = old.decrypt(nonce, blob, associated)
        new.encrypt(os.urandom(12), dek, associated)
    crypto_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with runtime.engine.begin() as connection:
        connection.execute(text("UPDATE tips SET wrapped_dek = wrapped_dek, kek_version = kek_version"))
    update_seconds = time.perf_counter() - start
    start = time.perf_counter()
    with runtime.engine.begin() as connection:
        connection.execute(text("UPDATE tips SET kek_version = -kek_version"))
    write_seconds = time.perf_counter() - start
    with runtime.engine.begin() as connection:
        connection.execute(text("UPDATE tips SET kek_version = -kek_version"))  # back as it was
    print(
        f"floor: crypto {crypto_seconds:.2f} s + one bulk UPDATE {update_seconds:.2f} s "
        f"(one that changes every row: {write_seconds:.2f} s)",
        flush=True,
    )
    return crypto_seconds + update_seconds, crypto_seconds + write_seconds


def intake_latencies(runtime, count: int, stop: threading.Event | None = None) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    """(when it started, milliseconds) of each of `count` SMS conversation steps, until `stop`."""
    from adapters.sms import parse_inbound

    out = []
    for n in range(count):
        if stop is not None and stop.is_set():
            break
        form = {
            "MessageSid": "SM" + os.urandom(16).hex(),
            "From": f"+1555{n % 10_000_000:07d}",
            "Body": "A tip during a rotation",
            "NumMedia": "0",
        }
        start = time.perf_counter()
        runtime.intake.receive(parse_inbound(form))
        out.append((start, (time.perf_counter() - start) * 1000))
    return out


def rotate(runtime, master: bytes) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    """Run a rotation of the tips key: (when it started, when its last row moved, when it was done)."""
    rotation_id = rotation.start(runtime.ctx, master, "tips", actor="bench")
    moved: list[float] = []
    start = time.perf_counter()
    rotation.run(runtime.ctx, rotation_id, progress=lambda _: moved.append(time.perf_counter()))
    return start, moved[-1], time.perf_counter()


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="tipline-bench-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        env = {
            "TIPLINE_DATA_DIR": str(Path(tmp) / "var"),
            "TIPLINE_LOG_LEVEL": "WARNING",
            "TIPLINE_PROVIDER_DELETE": "0",
        }
        if database_url:
            env["TIPLINE_DATABASE_URL"] = database_url
        settings = load_settings(env)
        initialise(settings)
        runtime = build_runtime(settings, channels={})
        name = "SQLite (WAL, synchronous=FULL)" if not args.database_url else "PostgreSQL"
        print(f"{args.keys:,} wrapped data keys, {name}, {os.cpu_count()} CPUs", flush=True)
        start = time.perf_counter()
        fill(runtime, args.keys)
        print(f"setup (fast path): {time.perf_counter() - start:.1f} s", flush=True)
        floor_seconds, writing_floor = floor(runtime, args.keys)

        master = load_master_key(settings)
        start, moved, done = rotate(runtime, master)
        seconds = done - start
        with runtime.factory() as session:
            left = rotation.remaining(session, "tips", 2)
        assert left == 0, f"{left} rows were not rotated"
        print(f"rotation: {seconds:.2f} s for {args.keys:,} keys = {args.keys / seconds:,.0f} keys/s")
        print(f"floor:    {floor_seconds:.2f} s = {args.keys / floor_seconds:,.0f} keys/s")
        print(f"ratio rotation/floor: {seconds / floor_seconds:.2f} (target: at most 2.5)")
        print(
            f"rows moved in {moved - start:.2f} s = {args.keys / (moved - start):,.0f} keys/s, "
            f"ratio {(moved - start) / floor_seconds:.2f} (the rest waits out rotation.PROPAGATION)"
        )
        print(
            f"against a floor whose UPDATE changes every row ({writing_floor:.2f} s): ratio "
            f"{seconds / writing_floor:.2f}, rows moved {(moved - start) / writing_floor:.2f}",
            flush=True,
        )

        # Intake while a second rotation runs (same process: it also shares the interpreter's lock).
        alone = [ms for _, ms in intake_latencies(runtime, 300)]
        sampled: list[tuple[float, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=lambda: sampled.extend(intake_latencies(runtime, 100_000, stop)))
        sampler.start()
        start, moved, _ = rotate(runtime, master)
        stop.set()
        sampler.join()
        during = [ms for began, ms in sampled if start <= began < moved]  # not while it waits out PROPAGATION
        print(f"intake alone:            p50 {statistics.median(alone):.2f} ms  p99 {p(alone, 99):.2f} ms")
        print(
            f"intake while rows move: p50 {statistics.median(during):.2f} ms  p99 {p(during, 99):.2f} ms  "
            f"({len(during)} messages)"
        )
        runtime.close()


if __name__ == "__main__":
    main()
