"""The audit log: who did what, to which object, when, and whether it worked.

Entries are append-only and hash-chained: each entry's `hash` is HMAC-SHA256, under the `audit`
key, of the previous entry's hash and this entry's fields. Editing or deleting an entry breaks
the chain at that point, and without the key nobody can rebuild a consistent chain, so
`tipline audit verify` (and the admin page) detect it. Entries never hold tip content or anything
about a tipster: only console usernames, tip references and actions.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

from sqlalchemy import select, text
from sqlalchemy.orm import Session

from tipline.core import crypto
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import KeyPurpose
from tipline.services.context import ServiceContext
from tipline.storage.models import AuditEntry, utcnow

GENESIS = "0" * 64
_PG_CHAIN_LOCK = 7_311_771  # advisory lock id: one appender at a time on PostgreSQL


def _digest_input(prev_hash: str, entry: AuditEntry) -> bytes:
    fields = [
        prev_hash,
        entry.at.isoformat(timespec="microseconds"),
        entry.actor,
        entry.action,
        entry.object_type,
        entry.object_id,
        entry.outcome,
        entry.detail,
    ]
    return json.dumps(fields, separators=(",", ":"), ensure_ascii=True).encode()


def record(
    session: Session,
    keyring: Keyring,
    action: str,
    *,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    outcome: str = "ok",
    detail: dict[str, object] | None = None,
    now: dt.datetime | None = None,
) -> AuditEntry:
    """Append one entry, inside the caller's transaction (so the event and its effect commit together)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_CHAIN_LOCK})
    last = session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(1)).first()
    prev_hash = last.hash if last is not None else GENESIS
    entry = AuditEntry(
        at=now or utcnow(),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        outcome=outcome,
        detail=json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))[:500],
        prev_hash=prev_hash,
    )
    entry.key_version, entry.hash = keyring.mac(KeyPurpose.AUDIT, _digest_input(prev_hash, entry))
    session.add(entry)
    session.flush()
    return entry


def log_event(
    ctx: ServiceContext,
    action: str,
    *,
    actor: str | None = None,
    object_type: str | None = None,
    object_id: str | None = None,
    outcome: str = "ok",
    detail: dict[str, object] | None = None,
) -> None:
    """Append one entry in its own transaction (for events with no other write, like a refused sign-in)."""
    with ctx.factory.begin() as session:
        record(
            session,
            ctx.keyring,
            action,
            actor=actor,
            object_type=object_type,
            object_id=object_id,
            outcome=outcome,
            detail=detail,
            now=ctx.now(),
        )


@dataclass(frozen=True)
class Verification:
    entries: int
    broken_at: int | None  # id of the first entry that does not verify, None if the chain is intact
    reason: str | None

    @property
    def intact(self) -> bool:
        return self.broken_at is None


def verify(ctx: ServiceContext) -> Verification:
    """Recompute the whole chain; report the first entry that was altered, inserted or follows a deletion."""
    keyring = ctx.keyring
    prev_hash = GENESIS
    count = 0
    previous_id = 0
    with ctx.factory() as session:
        for entry in session.scalars(select(AuditEntry).order_by(AuditEntry.id)).yield_per(1000):
            count += 1
            if entry.prev_hash != prev_hash:
                reason = f"entry {entry.id} does not follow entry {previous_id}: one was deleted or reordered"
                return Verification(count, entry.id, reason)
            try:
                _, expected = keyring.mac(KeyPurpose.AUDIT, _digest_input(prev_hash, entry), entry.key_version)
            except crypto.MissingKeyError:
                return Verification(count, entry.id, f"entry {entry.id} names an audit key this keyring lacks")
            if expected != entry.hash:
                return Verification(count, entry.id, f"entry {entry.id} was altered")
            prev_hash = entry.hash
            previous_id = entry.id
    return Verification(count, None, None)


def recent(ctx: ServiceContext, limit: int = 200) -> list[AuditEntry]:
    """The newest entries, newest first."""
    with ctx.factory() as session:
        return list(session.scalars(select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)))
