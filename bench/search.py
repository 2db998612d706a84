"""Searching 20,000 tips by what they say, through the console, in under 200 ms.

Fills a database with tips whose descriptions read like real ones (a few dozen words drawn from a
tip line's vocabulary, common words far more often than rare ones, as in speech), each sealed under
its own data key and indexed through the blind index exactly as intake does it (services/search.py).
Then a signed-in detective searches the list page through the WSGI app: one, two and three words
taken from real tips (so every search finds something, from a handful of tips to thousands), and a
reference prefix. Prints p50 and p95 per query type and how many tips each kind of query matched.

    python bench/search.py [--tips 20000] [--repeat 40] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import insert, select, text  # noqa: E402

from bench.console_list import PASSWORD, sign_in  # noqa: E402
from tests.support.scratch import scratch_database  # noqa: E402
from tipline.config import load_settings  # noqa: E402
from tipline.core import crypto  # noqa: E402
from tipline.core import search as words  # noqa: E402
from tipline.core.vocabulary import KeyPurpose  # noqa: E402
from tipline.runtime import build_runtime  # noqa: E402
from tipline.services import search  # noqa: E402
from tipline.services.accounts import add_user  # noqa: E402
from tipline.setup import initialise  # noqa: E402
from tipline.storage import records  # noqa: E402
from tipline.storage.models import SearchTerm, Tip, utcnow  # noqa: E402
from tipline.web.app import create_app  # noqa: E402


def pool(text: str) -> list[str]:
    """A list of words, most common first."""
    return text.split()


PEOPLE = pool("man woman guy kid teenager couple neighbour dealer driver boyfriend cousin landlord stranger")
LOOKS = pool("tall short heavy skinny bald bearded tattooed young older masked hooded limping")
COLOURS = pool("white black grey silver red blue green dark")
VEHICLES = pool("van pickup truck sedan suv motorcycle minivan hatchback coupe")
MAKES = pool("ford chevy honda toyota nissan dodge jeep hyundai kia bmw")
PLACES = pool(
    "garage alley school park motel laundromat gas station church bridge warehouse apartment trailer "
    "parking lot mall bus stop bar corner store playground river trail pharmacy"
)
STREETS = pool("elm pine maple oak birch cedar main river lake hill mill church market spring willow")
ACTS = pool(
    "sells selling deals dealing stores hides unloads loads meets fights steals stole breaks broke "
    "threatens threatened carries carrying follows watches"
)
GOODS = pool(
    "heroin fentanyl pills meth cocaine guns pistol rifle bikes phones catalytic converters copper "
    "tools boxes cash packages laptops"
)
TIMES = pool("night nights morning evening weekend weekends midnight tuesday friday saturday sunday")
FILLER = pool(
    "every always usually around behind near outside inside back front next across after before since "
    "about maybe think saw seen heard people car house door window windows lights cars lot times"
)


def zipf_choice(rng: random.Random, pool: list[str]) -> str:
    """Words at the front of a pool come up far more often, as they do in real speech."""
    weights = [1 / (rank + 1) for rank in range(len(pool))]
    return rng.choices(pool, weights)[0]


def description(rng: random.Random) -> str:
    parts = [
        f"A {zipf_choice(rng, LOOKS)} {zipf_choice(rng, PEOPLE)} in a {zipf_choice(rng, COLOURS)} "
        f"{zipf_choice(rng, MAKES)} {zipf_choice(rng, VEHICLES)}",
        f"{zipf_choice(rng, ACTS)} {zipf_choice(rng, GOODS)} behind the {zipf_choice(rng, PLACES)}",
        f"on {zipf_choice(rng, STREETS).capitalize()} Street every {zipf_choice(rng, TIMES)}",
    ]
    filler = " ".join(zipf_choice(rng, FILLER) for _ in range(rng.randint(8, 18)))
    extra = f"also {zipf_choice(rng, ACTS)} {zipf_choice(rng, GOODS)} near the {zipf_choice(rng, PLACES)}"
    return f"{parts[0]} {parts[1]} {parts[2]}, {filler}, {extra}. Plate starts {rng.randint(100, 999)}."


def unique_reference(rng: random.Random, taken: set[str]) -> str:
    """A reference as records.new_reference makes them, never one already used: among 20,000 random
    ones a collision is likely (the birthday bound), which intake retries and a bulk fill cannot."""
    while True:
        reference = "T-" + "".join(rng.choice(records.REFERENCE_ALPHABET) for _ in range(records.REFERENCE_LENGTH))
        if reference not in taken:
            taken.add(reference)
            return reference


def fill(runtime, count: int, seed: int = 20261203) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    """`count` submitted tips, sealed and indexed; returns (reference, description) of each."""
    keyring = runtime.keys.keyring
    rng = random.Random(seed)
    now = utcnow()
    made: list[tuple[str, str]] = []
    taken: set[str] = set()
    for start in range(0, count, 1000):
        rows, texts = [], []
        for _ in range(min(1000, count - start)):
            reference = unique_reference(rng, taken)
            what = description(rng)
            where = f"{rng.randint(1, 999)} {zipf_choice(rng, STREETS).capitalize()} St"
            dek = crypto.new_key()
            version, wrapped = keyring.wrap_dek(KeyPurpose.TIPS, dek, reference)
            rows.append(
                {
                    "reference": reference,
                    "alias": f"{rng.randrange(65536):04X}",
                    "channel": "sms",
                    "status": rng.choice(["new", "new", "in_review", "actionable", "closed"]),
                    "urgent": False,
                    "kek_version": version,
                    "wrapped_dek": wrapped,
                    "what_ct": crypto.seal(dek, what.encode(), crypto.aad("tips", "what", reference)),
                    "where_ct": crypto.seal(dek, where.encode(), crypto.aad("tips", "where", reference)),
                    "message_count": 2,
                    "unread": 0,
                    "created_at": now,
                    "submitted_at": now,
                    "updated_at": now,
                    "active_at": now,
                }
            )
            texts.append((reference, what, where))
            made.append((reference, what))
        with runtime.factory.begin() as session:
            session.execute(insert(Tip), rows)
            wanted = [reference for reference, *_ in texts]
            found = session.execute(select(Tip.reference, Tip.id).where(Tip.reference.in_(wanted))).all()
            ids = dict(found)
            search.index(session, keyring, [(ids[r], t) for r, *pair in texts for t in pair])
    return made


def queries(rng: random.Random, made: list[tuple[str, str]], n: int, count: int) -> list[str]:
    """`count`-word queries drawn from real descriptions (every one finds at least that tip)."""
    out = []
    for _ in range(n):
        _, what = rng.choice(made)
        found = list(dict.fromkeys(words.words(what)))
        out.append(" ".join(rng.sample(found, count)))
    return out


def timed(client, query: str) -> tuple[float, int]:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    response = client.get("/console/", query_string={"q": query})
    elapsed = (time.perf_counter() - start) * 1000
    assert response.status_code in (200, 302), (query, response.status_code)
    if response.status_code == 302:
        return elapsed, 1
    page = response.get_data(as_text=True)
    total = int(page.split('<span class="count">', 1)[1].split("<", 1)[0])
    return elapsed, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tips", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=40, help="queries per query type")
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
        start = time.perf_counter()
        made = fill(runtime, args.tips)
        filled = time.perf_counter() - start
        if runtime.factory.kw["bind"].dialect.name == "postgresql":
            # Planner statistics for the freshly bulk-filled tables, as autovacuum keeps them on a live server.
            with runtime.factory.begin() as session:
                session.execute(text("ANALYZE"))
        with runtime.factory() as session:
            terms = session.query(SearchTerm).count()
        rng = random.Random(7)
        kinds = {
            "one word": queries(rng, made, args.repeat, 1),
            "two words": queries(rng, made, args.repeat, 2),
            "three words": queries(rng, made, args.repeat, 3),
            "reference prefix": [rng.choice(made)[0][: rng.choice((5, 6))] for _ in range(args.repeat)],
        }
        client.get("/console/", query_string={"q": "warm up"})
        print(
            f"search through the console's list page (WSGI app, page rendered, excerpts decrypted and audited), "
            f"{args.tips} tips, {terms} index rows ({terms / args.tips:.1f} per tip), filled in {filled:.1f} s; "
            f"database {'SQLite' if not args.database_url else 'PostgreSQL'}, {os.cpu_count()} CPUs"
        )
        print(f"{'query':18} {'p50':>9} {'p95':>9} {'max':>9} {'tips matched (median, max)':>28}")
        worst = 0.0
        for name, batch in kinds.items():
            results = [timed(client, q) for q in batch]
            ms = sorted(r[0] for r in results)
            matched = [r[1] for r in results]
            p95 = ms[int(0.95 * (len(ms) - 1))]
            worst = max(worst, p95)
            print(
                f"{name:18} {statistics.median(ms):6.1f} ms {p95:6.1f} ms {ms[-1]:6.1f} ms "
                f"{statistics.median(matched):>18.0f}, {max(matched)}"
            )
        print(f"worst p95: {worst:.1f} ms (target: under 200 ms)")
        runtime.close()


if __name__ == "__main__":
    main()
