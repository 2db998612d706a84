"""The audit log: who did what, to which object, when, and whether it worked.

Entries are append-only and hash-chained: each entry's `hash` is HMAC-SHA256, under the `audit`
key, of the previous entry's hash and this entry's fields. Editing or deleting an entry breaks
the chain at that point, and without the key nobody can rebuild a consistent chain, so
`tipline audit verify` (and the admin page) detect it. Entries never hold tip content or anything
about a tipster: only console usernames, tip references and actions.

Each entry is also logged by the `tipline.audit` logger once its transaction has committed (an
entry rolled back is not logged: it never happened), so that it can be shipped to syslog or a SIEM
(tipline/logs.py: text or JSON lines). The log line holds the entry's fields and its id, with the
time to the minute like every line of ours; the chain in the database stays the record of truth.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace

from sqlalchemy import ColumnElement, event, func, inspect, select, text
from sqlalchemy.orm import Session, SessionTransaction

from tipline import logs
from tipline.core import crypto
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import KeyPurpose
from tipline.services.context import ServiceContext
from tipline.storage.models import AuditEntry, utcnow

GENESIS = "0" * 64
_PG_CHAIN_LOCK = 7_311_771  # advisory lock id: one appender at a time on PostgreSQL
_UNLOGGED = "tipline_audit_unlogged"  # Session.info key: entries of the open transaction, not yet logged
stream = logging.getLogger(logs.AUDIT)


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
    session.info.setdefault(_UNLOGGED, []).append(entry)
    return entry


@event.listens_for(Session, "after_commit")
def _log_committed(session: Session) -> None:
    """Log the entries this transaction committed (not those of a savepoint rolled back)."""
    for entry in session.info.pop(_UNLOGGED, []):
        if inspect(entry).persistent:
            _log(entry)


@event.listens_for(Session, "after_transaction_end")
def _forget_rolled_back(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is None:
        session.info.pop(_UNLOGGED, None)


def _log(entry: AuditEntry) -> None:
    """One line per entry: the text form here, a JSON object from `record.audit` (tipline/logs.py)."""
    fields: dict[str, object] = {
        "id": entry.id,
        "at": entry.at.strftime("%Y-%m-%dT%H:%MZ"),  # to the minute, like every log line of ours
        "action": entry.action,
        "actor": entry.actor or SYSTEM_ACTOR,
        "object_type": entry.object_type,
        "object_id": entry.object_id,
        "outcome": entry.outcome,
        "detail": AuditLine.of(entry).detail,
    }
    target = f" on {entry.object_type} {entry.object_id or '-'}" if entry.object_type else ""
    stream.info(
        "audit %s: %s by %s%s: %s %s",
        entry.id,
        entry.action,
        fields["actor"],
        target,
        entry.outcome,
        entry.detail or "{}",
        extra={"audit": fields},
    )


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


@dataclass(frozen=True)
class AuditLine:
    """One entry as a case file shows it: content-free like the log itself (names, actions, times)."""

    at: dt.datetime
    actor: str | None
    action: str
    outcome: str
    detail: dict[str, object]

    @classmethod
    def of(cls, entry: AuditEntry) -> AuditLine:
        try:
            detail = json.loads(entry.detail or "{}")
        except ValueError:  # cut at 500 characters when written: show the action without it
            detail = {}
        return cls(entry.at, entry.actor, entry.action, entry.outcome, detail if isinstance(detail, dict) else {})


def for_object(session: Session, object_type: str, object_id: str) -> tuple[AuditLine, ...]:
    """Every entry about one object (e.g. a tip by reference), oldest first, inside the caller's
    transaction: a case file lists who viewed or changed the tip in the same read it audits."""
    rows = session.scalars(
        select(AuditEntry)
        .where(AuditEntry.object_type == object_type, AuditEntry.object_id == object_id)
        .order_by(AuditEntry.id)
    )
    return tuple(AuditLine.of(entry) for entry in rows)


PAGE_SIZE = 50  # audit entries per page of the console's audit log
SYSTEM_ACTOR = "system"  # how the console names entries no account made (the tip line, the command line's jobs)


@dataclass(frozen=True)
class Query:
    """Which audit entries the console's audit log shows: filters as an administrator chose them.

    Dates are whole days in the agency's time zone (what the page shows), both ends included.
    """

    action: str = ""
    actor: str = ""
    since: dt.date | None = None
    until: dt.date | None = None
    page: int = 1
    zone: dt.tzinfo = dt.UTC
    # The newest entry when the first page was shown: later pages are counted from the same entries,
    # so that what is logged meanwhile (this page's own view, other consoles) shifts no page.
    upto: int | None = None

    @classmethod
    def from_args(cls, args: Mapping[str, str], zone: dt.tzinfo) -> Query:
        """From a URL's query string; anything malformed is ignored rather than refused."""
        page = args.get("page", "1")
        return cls(
            action=args.get("action", "").strip()[:64],
            actor=args.get("actor", "").strip()[:64],
            since=_day(args.get("since", "")),
            until=_day(args.get("until", "")),
            page=int(page) if page.isdigit() and 0 < int(page) < 1_000_000 else 1,
            zone=zone,
            upto=int(upto) if (upto := args.get("upto", "")).isdigit() and len(upto) < 19 else None,
        )

    def args(self, **changes: object) -> dict[str, str]:
        """This query as URL arguments (for the page links), empty filters left out."""
        values = {
            "action": self.action,
            "actor": self.actor,
            "since": self.since.isoformat() if self.since else "",
            "until": self.until.isoformat() if self.until else "",
            "page": str(self.page) if self.page > 1 else "",
            "upto": str(self.upto) if self.upto is not None else "",
        }
        values.update({key: str(value) for key, value in changes.items()})
        return {key: value for key, value in values.items() if value and not (key == "page" and value == "1")}

    def _utc(self, day: dt.date) -> dt.datetime:
        """The start of a local day as the naive UTC time the log stores."""
        start = dt.datetime.combine(day, dt.time(), tzinfo=self.zone)
        return start.astimezone(dt.UTC).replace(tzinfo=None)

    def conditions(self) -> list[ColumnElement[bool]]:
        found: list[ColumnElement[bool]] = []
        if self.action:
            found.append(AuditEntry.action == self.action)
        if self.actor == SYSTEM_ACTOR:
            found.append(AuditEntry.actor.is_(None))
        elif self.actor:
            found.append(AuditEntry.actor == self.actor)
        if self.since:
            found.append(AuditEntry.at >= self._utc(self.since))
        if self.until:
            found.append(AuditEntry.at < self._utc(self.until + dt.timedelta(days=1)))
        if self.upto is not None:
            found.append(AuditEntry.id <= self.upto)
        return found


def _day(value: str) -> dt.date | None:
    """A date from the filter form; None for anything else, or for a year no audit entry can carry
    (9999-12-31 would overflow when its day's end is computed)."""
    try:
        day = dt.date.fromisoformat(value.strip())
    except ValueError:
        return None
    return day if 2000 <= day.year <= 9000 else None


@dataclass(frozen=True)
class Page:
    entries: list[AuditEntry]
    total: int  # entries that match the filters, on every page
    page: int
    pages: int
    query: Query  # with `upto` set: the page links carry it


def search(ctx: ServiceContext, query: Query) -> Page:
    """One page (newest first) of the entries that match the query; a page past the end shows the last."""
    with ctx.factory() as session:
        if query.upto is None:
            query = replace(query, upto=session.scalar(select(func.max(AuditEntry.id))) or 0)
        conditions = query.conditions()
        total = session.scalar(select(func.count()).select_from(AuditEntry).where(*conditions)) or 0
        pages = max(1, -(-total // PAGE_SIZE))
        number = min(query.page, pages)
        entries = session.scalars(
            select(AuditEntry)
            .where(*conditions)
            .order_by(AuditEntry.id.desc())
            .offset((number - 1) * PAGE_SIZE)
            .limit(PAGE_SIZE)
        )
        return Page(list(entries), total, number, pages, query)


def choices(ctx: ServiceContext) -> tuple[list[str], list[str]]:
    """The actions and actors that occur in the log, for the filters' lists."""
    with ctx.factory() as session:
        actions = sorted(session.scalars(select(AuditEntry.action).distinct()))
        actors = sorted(a or SYSTEM_ACTOR for a in session.scalars(select(AuditEntry.actor).distinct()))
        return actions, sorted(set(actors))
