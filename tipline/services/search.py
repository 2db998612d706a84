"""Search by what tips say, with no plaintext index anywhere: a keyed blind index.

Each distinct searchable word of a tip (core/search.py cuts and normalises them) is stored as
HMAC-SHA256 under the `search` key, truncated to 8 bytes, in `search_terms` with the key version.
A query's words are hashed the same way, under every live version of the key (a rotation may be
half done), and a tip matches when it holds every word. What this leaks to someone with the
database but not the key, and why that is accepted, is in README ("Search and what it leaks").

What is indexed: the tip's fields (what, where, when), the tipster's thread messages (a photo's
caption arrives as the text of its message and is one of them) and detectives' notes. Never bot
texts (the same words in every tip), agency replies, or anything about the sender: the index is
computed from text alone, so nothing in it derives from a phone number or chat id, and FORGET or
retention, which erase those, have nothing to erase here. The words stay as long as the tip does.

Rows are written in the transaction that writes the text, with one executemany per message and
one HMAC per distinct word.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import ColumnElement, and_, delete, exists, false, or_, select
from sqlalchemy.orm import Session

from tipline.core import search as words
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import KeyPurpose, MessageKind
from tipline.storage import records
from tipline.storage.models import DataUpgrade, Message, SearchTerm, Tip, to_minute

INDEXED_KINDS = (MessageKind.TIPSTER.value, MessageKind.NOTE.value)
TOKEN_BYTES = 8  # 64 bits: collisions among a tip line's vocabulary are negligible, rows stay small

# Intake indexes every message, so this is a hot path. As in rotation's hot loop, the statement is
# fixed text handed to the driver (SQLAlchemy's per-row parameter processing cost more than the
# HMACs: 0.2 ms a message against 0.12 ms); only values are bound. Insert-or-keep, spelt alike in
# SQLite and PostgreSQL: a word already indexed for a tip (said again in a follow-up) is no new row.
_INSERT_SQL = "INSERT INTO search_terms (token, key_version, tip_id) VALUES ({0}, {0}, {0}) ON CONFLICT DO NOTHING"


def token(keyring: Keyring, word: str, version: int) -> int:
    """The blind token of a normalised word under one version of the search key."""
    digest = keyring.mac(KeyPurpose.SEARCH, word.encode(), version)[1]
    return int.from_bytes(bytes.fromhex(digest[: 2 * TOKEN_BYTES]), "big", signed=True)


def query_tokens(keyring: Keyring, query: str) -> str:
    """A query's words as the audit log records them: "v<version>:" and each word's blind token in
    hex under the primary search key, sorted (the order words were typed in does not matter), and
    "ref" when the query may name a reference."""
    version = keyring.primary_version(KeyPurpose.SEARCH)
    tokens = sorted(f"{token(keyring, w, version) & (2**64 - 1):016x}" for w in words.query_words(query))
    marks = ["ref"] if words.reference_prefix(query) is not None else []
    return f"v{version}:" + " ".join(tokens + marks)


def live_versions(keyring: Keyring) -> list[int]:
    """Every search key version this process holds: the primary, and older ones a rotation has not
    finished with (their rows may still be the only ones of some tips)."""
    primary = keyring.primary_version(KeyPurpose.SEARCH)
    return sorted({primary} | {v for (p, v) in keyring.keks if p == KeyPurpose.SEARCH})


def _insert(session: Session, rows: list[tuple[int, int, int]]) -> None:
    """Insert (token, key version, tip id) rows, keeping those already there."""
    if rows:
        connection = session.connection()
        connection.exec_driver_sql(_INSERT_SQL.format("?" if connection.dialect.paramstyle == "qmark" else "%s"), rows)


def index(session: Session, keyring: Keyring, texts: Iterable[tuple[int, str]]) -> int:
    """Index (tip id, text) pairs under the primary search key, in the caller's transaction.

    Returns how many (tip, word) pairs were offered; those already there are kept as they are.
    """
    version = keyring.primary_version(KeyPurpose.SEARCH)
    per_tip: dict[int, set[str]] = {}
    for tip_id, text in texts:
        per_tip.setdefault(tip_id, set()).update(words.words(text))
    hashed = {w: token(keyring, w, version) for w in set().union(*per_tip.values())} if per_tip else {}
    rows = [(hashed[w], version, tip_id) for tip_id, found in per_tip.items() for w in found]
    _insert(session, rows)
    return len(rows)


def matching(keyring: Keyring, query: str) -> ColumnElement[bool]:
    """The condition on `Tip` for a detective's query: every word is in the tip, or the query is
    (the start of) the tip's reference. A query of stop words alone matches nothing."""
    versions = live_versions(keyring)
    conditions = [
        Tip.id.in_(
            select(SearchTerm.tip_id).where(
                SearchTerm.token.in_([token(keyring, w, v) for v in versions]),
                SearchTerm.key_version.in_(versions),
            )
        )
        for w in words.query_words(query)
    ]
    prefix = words.reference_prefix(query)
    either: list[ColumnElement[bool]] = []
    if conditions:
        either.append(conditions[0] if len(conditions) == 1 else and_(*conditions))
    if prefix is not None:
        either.append(Tip.reference.like(prefix + "%"))
    if not either:
        return false()
    return either[0] if len(either) == 1 else or_(*either)


# Re-indexing: the search key's rotation and the upgrade to 0.3 -------------------------------------


def tip_texts(session: Session, keyring: Keyring, tip: Tip) -> list[str]:
    """Every text of a tip that is indexed, decrypted (in memory only)."""
    key = records.tip_dek(keyring, tip)
    texts = [text for name in records.TIP_FIELDS if (text := records.read_tip_field(tip, key, name))]
    messages = session.scalars(select(Message).where(Message.tip_id == tip.id, Message.kind.in_(INDEXED_KINDS)))
    texts.extend(records.read_message(tip, key, message) for message in messages)
    return texts


def reindex(session: Session, keyring: Keyring, tip: Tip, version: int) -> int:
    """Write a tip's index under `version` and drop its rows under any other; returns 1.

    The caller holds the tip's row lock (writers of its text take it too), so no word written
    meanwhile under an older version is dropped without its new row.
    """
    found = words.distinct_words(tip_texts(session, keyring, tip))
    _insert(session, [(token(keyring, w, version), version, tip.id) for w in found])
    session.execute(delete(SearchTerm).where(SearchTerm.tip_id == tip.id, SearchTerm.key_version != version))
    return 1


def stale(version: int) -> ColumnElement[bool]:
    """The condition on `Tip` for tips with index rows under a version other than `version`."""
    return exists().where(SearchTerm.tip_id == Tip.id, SearchTerm.key_version != version)


SEARCH_INDEX_UPGRADE = "0.3-search-index"


def index_existing_tips(session: Session, keyring: Keyring, now: dt.datetime) -> int:
    """Index every tip written before the search index existed (`tipline init`, once); returns how many."""
    if session.get(DataUpgrade, SEARCH_INDEX_UPGRADE) is not None:
        return 0
    version = keyring.primary_version(KeyPurpose.SEARCH)
    indexed = sum(reindex(session, keyring, tip, version) for tip in session.scalars(select(Tip)))
    session.add(DataUpgrade(name=SEARCH_INDEX_UPGRADE, done_at=to_minute(now)))
    return indexed


def names(query: str, reference: str) -> bool:
    """Whether a query names this reference, in full or by its start ("7k3", "T-7K3Q9X"): the
    console then opens the tip at once when it is the only match."""
    prefix = words.reference_prefix(query)
    return prefix is not None and words.names_one_tip(query) and reference.startswith(prefix)
