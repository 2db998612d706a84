"""The console's tip list stays fast however many tips there are.

Fills a database with tips (a fast path: rows written in bulk with real wrapped data keys and
sealed fields, no conversations), signs a detective in, and times the tip-list page through the
WSGI app: first with 200 tips, then with 20,000. Prints median and p95 per page for the newest
page, a deep page, a filtered page and a reference search, and the ratio 20,000 / 200 (flat means
about 1). Target: under 100 ms per page.

    python bench/console_list.py [--tips 20000] [--repeat 30] [--database-url URL]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, text  # noqa: E402

from tests.support.scratch import scratch_database  # noqa: E402
from tipline.config import load_settings  # noqa: E402
from tipline.core import crypto  # noqa: E402
from tipline.core.vocabulary import KeyPurpose
from tipline.runtime import build_runtime
from tipline.services.accounts import add_user  # noqa: E402
from tipline.setup import initialise  # noqa: E402
from tipline.storage import records  # noqa: E402
from tipline.storage.models import Tip, utcnow  # noqa: E402
from tipline.web.app import create_app  # noqa: E402

PASSWORD = "benchmark passphrase long enough"


def bench_reference(n: int) -> str:
    """The n-th made-up reference, written in the real references' alphabet (T-B then 5 letters), so
    that a search for it is a reference search as it would be for a detective."""
    alphabet = records.REFERENCE_ALPHABET
    letters = []
    for _ in range(5):
        n, digit = divmod(n, len(alphabet))
        letters.append(alphabet[digit])
    return "T-B" + "".join(reversed(letters))


def fill(runtime, count: int, start: int) -> None:  # type: ignore[no-untyped-def]
    keyring = runtime.keys.keyring
    rows = []
    now = utcnow()
    rng = random.Random(start)
    for n in range(start, start + count):
        reference = bench_reference(n)
        dek = crypto.new_key()
        version, wrapped = keyring.wrap_dek(KeyPurpose.TIPS, dek, reference)
        rows.append(
            {
                "reference": reference,
                "alias": f"{n % 65536:04X}",
                "channel": "sms",
                "status": rng.choice(["new", "new", "in_review", "actionable", "closed"]),
                "urgent": rng.random() < 0.05,
                "category": rng.choice([None, "drugs", "property", "violence"]),
                "kek_version": version,
                "wrapped_dek": wrapped,
                "what_ct": crypto.seal(
                    dek, b"a realistic description of what the tipster saw" * 3, crypto.aad("tips", "what", reference)
                ),
                "message_count": 3,
                "unread": rng.randint(0, 2),
                "created_at": now,
                "submitted_at": now,
                "updated_at": now,
                # Latest activity spread over a month: the list sorts by it, pinned urgent tips first.
                "active_at": now - dt.timedelta(minutes=rng.randint(0, 30 * 24 * 60)),
            }
        )
    with runtime.factory.begin() as session:
        for i in range(0, len(rows), 2000):
            session.execute(insert(Tip), rows[i : i + 2000])
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("ANALYZE tips"))  # as autovacuum would after a bulk load


def sign_in(app):  # type: ignore[no-untyped-def]
    import re

    import pyotp

    client = app.test_client()
    page = client.get("/console/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    client.post(
        "/console/login", data={"csrf_token": token, "username": "bench", "password": PASSWORD, "ack": "1", "code": ""}
    )
    enrol = client.get("/console/enrol").get_data(as_text=True)
    secret = re.search(r'data-totp-secret="([A-Z2-7]+)"', enrol).group(1)
    token = re.search(r'name="csrf_token" value="([^"]+)"', enrol).group(1)
    client.post("/console/enrol", data={"csrf_token": token, "code": pyotp.TOTP(secret).now()})
    return client


def timings(client, path: str, repeat: int) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(path)
        out.append((time.perf_counter() - start) * 1000)
        assert response.status_code in (200, 302), (path, response.status_code)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tips", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", default="")
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory(prefix="tipline-bench-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        env = {"TIPLINE_DATA_DIR": str(Path(tmp) / "var"), "TIPLINE_LOG_LEVEL": "WARNING"}
        if database_url:
            env["TIPLINE_DATABASE_URL"] = database_url
        settings = load_settings(env)
        initialise(settings)
        runtime = build_runtime(settings, channels={})
        app = create_app(runtime)
        add_user(runtime.ctx, "bench", ["detective"], PASSWORD)
        client = sign_in(app)
        small = 200
        fill(runtime, small, 0)
        pages = {
            "newest page": "/console/",
            "page 4 (deep)": "/console/?page=4",
            "filtered (status+urgent)": "/console/?status=new&urgent=no",
            "reference search": f"/console/?q={bench_reference(150)}",
        }
        before = {name: timings(client, path, args.repeat) for name, path in pages.items()}
        fill(runtime, args.tips - small, small)
        pages["page 4 (deep)"] = "/console/?page=4"
        pages["page 399 (deepest)"] = f"/console/?page={args.tips // 50 - 1}"
        after = {name: timings(client, path, args.repeat) for name, path in pages.items()}
        print(
            f"tip list through the WSGI app, {args.repeat} requests each, database "
            f"{'SQLite' if not args.database_url else args.database_url}, {os.cpu_count()} CPUs"
        )
        print(f"{'page':28} {'200 tips: p50':>14} {f'{args.tips} tips: p50':>18} {'p95':>8} {'ratio':>7}")
        for name in pages:
            b = statistics.median(before[name]) if name in before else float("nan")
            a = after[name]
            p95 = sorted(a)[int(0.95 * (len(a) - 1))]
            print(
                f"{name:28} {b:11.1f} ms {statistics.median(a):15.1f} ms {p95:6.1f} ms "
                f"{statistics.median(a) / b if b == b else float('nan'):7.2f}"
            )
        worst = max(sorted(a)[int(0.95 * (len(a) - 1))] for a in after.values())
        print(f"worst p95 with {args.tips} tips: {worst:.1f} ms (target: under 100 ms per page)")
        runtime.close()


if __name__ == "__main__":
    main()
