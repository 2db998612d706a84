"""The outbox: every outbound action is a durable row written in the transaction that caused it.

A dispatcher (in-process in `tipline serve`, or alone in `tipline dispatch`) claims due rows with a
lease, performs them, and records the result. Several dispatchers never claim one row at once: on
PostgreSQL candidates are locked with SKIP LOCKED, on SQLite the claim runs under BEGIN IMMEDIATE.
A dispatcher that dies mid-send leaves a lease that expires, so the row is retried. No provider
offers an idempotency key for sends, so the window in which a message could go twice is closed as
far as the providers allow (issue 12):

1. before the provider is called, `attempt_started_at` (to the minute) is committed on its own;
2. right after the provider answers, the keyed hash of its message id (`provider_ref`) is
   committed on its own, retried a few times if the database hiccups (and kept in memory, so that
   this process does not send it again while the database is down);
3. a row claimed again with an attempt begun but no `provider_ref` is checked at the provider
   first when its channel can list what it sent (`channels.SentLog`: Twilio's Messages log); a
   message found (same address, same words, since that minute, not already another row's) is
   adopted instead of being sent again. Telegram cannot be asked: see `Dispatcher._unconfirmed`.

A row whose id was recorded but which was never marked sent is finished without a send. No
network call happens inside a transaction.

Per-chat pacing (Telegram: one message a second per chat) never holds the dispatcher's thread: a
channel that may not send to an address yet raises a `paced` ChannelError, and the row, with every
later message to that contact in order, is put back in the queue for that time (`_pace`) while the
other rows (other chats, SMS) go on.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from tipline.core import crypto
from tipline.core.channels import Channel, ChannelError, SentLog
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import DeliveryStatus, ErasedReason, OutboxKind, OutboxStatus, ReplyDelivery
from tipline.services.context import ServiceContext
from tipline.storage import faults, records
from tipline.storage.db import checkpoint, claim_due, read_only
from tipline.storage.models import Contact, Message, OutboxItem, table_of, to_minute, utcnow

log = logging.getLogger(__name__)

SEND = OutboxKind.SEND
DELETE = OutboxKind.DELETE

LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = {SEND: 8, DELETE: 40}
BACKOFF_CAP = {SEND: dt.timedelta(hours=1), DELETE: dt.timedelta(hours=6)}
# What a thread entry shows once the provider reported on it: a later "sent" does not undo these.
REPORTED = (ReplyDelivery.DELIVERED, ReplyDelivery.READ, ReplyDelivery.FAILED)
# Recording a provider's id is retried this many times, after these pauses (seconds), before giving up.
RECORD_RETRY_DELAYS = (0.1, 0.5, 2.0)
# How far before a begun attempt's minute the provider's log is searched (clocks differ a little).
CLOCK_SLACK = dt.timedelta(minutes=2)
# Rows put back for pacing keep their order by being a microsecond apart.
TICK = dt.timedelta(microseconds=1)
# Built once: a plain Core INSERT is compiled once and cached, unlike a new .values() per call.
_INSERT = table_of(OutboxItem).insert()


def _enqueue(
    session: Session,
    contact: Contact,
    contact_key: bytes,
    kind: OutboxKind,
    payload: str,
    due: dt.datetime,
    message_id: int | None = None,
) -> str:
    item_id = records.new_id()
    session.connection().execute(  # Core on the session's connection: no ORM statement handling
        _INSERT,
        {
            "id": item_id,
            "kind": kind,
            "channel": contact.channel,
            "contact_id": contact.id,
            "message_id": message_id,
            "payload_ct": records.OUTBOX_PAYLOAD.seal(contact_key, item_id, payload.encode()),
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": due,  # precise while the row waits; to the minute once it settles
            "created_at": to_minute(utcnow()),
        },
    )
    return item_id


def enqueue_send(
    session: Session,
    contact: Contact,
    contact_key: bytes,
    text: str,
    now: dt.datetime,
    message_id: int | None = None,
    keyboard: str | None = None,
) -> str:
    """Queue a text to the tipster; `keyboard` names the quick-reply buttons a channel may show."""
    payload = json.dumps({"text": text, "keyboard": keyboard}, ensure_ascii=False)
    return _enqueue(session, contact, contact_key, SEND, payload, _after_queued(session, contact.id, now), message_id)


def _after_queued(session: Session, contact_id: str, now: dt.datetime) -> dt.datetime:
    """When a new message to a contact is due: now, or just after the last one still waiting for them.

    Messages to one tipster leave in the order they were queued, even when earlier ones were put
    back for pacing (a photo's refusal never overtakes the question asked before it), and the
    replies of one message, queued in one transaction, never tie. A message whose send failed and
    waits for its retry holds nothing back: the 911 reminder must not wait an hour behind it."""
    last = session.scalar(
        select(func.max(OutboxItem.next_attempt_at)).where(
            OutboxItem.contact_id == contact_id,
            OutboxItem.kind == SEND,
            OutboxItem.status.in_((OutboxStatus.PENDING, OutboxStatus.CLAIMED)),
            OutboxItem.attempts == 0,  # not behind one in failure backoff: that may wait an hour
        )
    )
    return now if last is None or last < now else last + TICK


def send_payload(payload: str) -> tuple[str, str | None]:
    """(text, keyboard) of a queued send."""
    data = json.loads(payload)
    return data["text"], data.get("keyboard")


def enqueue_delete(
    session: Session, contact: Contact, contact_key: bytes, provider_message_id: str, due: dt.datetime
) -> str:
    return _enqueue(session, contact, contact_key, DELETE, provider_message_id, due)


def cancel_sends(session: Session, contact_id: str, reason: ErasedReason) -> None:
    """Drop messages not yet sent to a tipster who can no longer be written to."""
    pending = session.scalars(
        select(OutboxItem).where(
            OutboxItem.contact_id == contact_id, OutboxItem.kind == SEND, OutboxItem.status == OutboxStatus.PENDING
        )
    ).all()
    for item in pending:
        _settle(item, OutboxStatus.CANCELLED)
        item.last_error = reason
        _show(session, item, ReplyDelivery.FAILED)


def _settle(item: OutboxItem, status: OutboxStatus) -> None:
    """The row will never be performed again: keep nothing it no longer needs.

    Its payload (a text, a provider's message id) is cleared whatever the outcome: a text that went
    lives on in the thread, and one kept here would outlive an erasure. Its times are cut to the
    minute: a due time to the second would time the tipster's message.
    """
    item.status = status
    item.payload_ct = b""
    item.lease_until = None
    item.attempt_started_at = None
    item.next_attempt_at = to_minute(item.next_attempt_at)


def _show(session: Session, item: OutboxItem, delivery: ReplyDelivery, *, keep_reported: bool = False) -> None:
    """Mirror what happened to a send on the thread entry it carries (if any)."""
    if item.message_id is None:
        return
    message = session.get(Message, item.message_id)
    if message is None or (keep_reported and message.delivery in REPORTED):
        return
    message.delivery = delivery


def _with_locked_owner(session: Session, item: OutboxItem) -> tuple[OutboxItem | None, Contact | None]:
    """The row as it is once its owner, the sender, is locked; and that sender (None if gone).

    The sender is locked before anything is written under their data key, as intake does: a STOP
    or FORGET running now re-seals the rows queued under the old key, and must see what is queued
    here (it waits for this transaction), or this must see it. A FORGET that went first handed the
    row to a blank stand-in: the lock follows it there."""
    for _ in range(3):  # the sender, then (after a FORGET) the stand-in; a third owner is not made
        contact = session.get(Contact, item.contact_id, with_for_update=records.ROW_LOCK)
        found = session.get(OutboxItem, item.id, populate_existing=True)
        if found is None or (contact is not None and found.contact_id == contact.id):
            return found, contact
        item = found
    return item, None


def provider_ref(keyring: Keyring, channel: str, provider_message_id: str, version: int | None = None) -> str:
    """The keyed hash under which a sent message's provider id is remembered (for status reports)."""
    return keyring.keyed_hash("provider-message", f"{channel}:{provider_message_id}", version)[1]


def find_sent(session: Session, keyring: Keyring, channel: str, provider_message_id: str) -> OutboxItem | None:
    """The send row of a message the tip line sent, by its provider id under any live pepper; None
    when it never sent it, or no longer remembers (rows are kept a week after they were queued:
    maintenance.FINISHED_OUTBOX_KEPT)."""
    refs = [provider_ref(keyring, channel, provider_message_id, v) for v in keyring.pseudonym_versions()]
    return session.scalars(select(OutboxItem).where(OutboxItem.provider_ref.in_(refs), OutboxItem.kind == SEND)).first()


def record_status(
    ctx: ServiceContext,
    channel: Channel,
    provider_message_id: str,
    status: DeliveryStatus,
    error_code: str | None,
    *,
    recipient_gone: ErasedReason | None = None,
    delete_delay: dt.timedelta | None,
) -> bool:
    """Record a provider's delivery report for one of our messages. False if we never sent it.

    The report goes into its own column (`provider_status`): the dispatcher's lifecycle in `status`
    stays what it was. Once the report is final, the provider's copy is queued for deletion.
    """
    keyring = ctx.keyring
    now = ctx.now()
    with ctx.factory.begin() as session:
        item = find_sent(session, keyring, channel.name, provider_message_id)
        if item is None:
            return False
        item, contact = _with_locked_owner(session, item)
        if item is None:
            return True  # removed meanwhile (FORGET drops rows that wait for nothing)
        known = DeliveryStatus(item.provider_status) if item.provider_status else None
        if known is not None and known.final and not status.final:
            return True  # a late "sent" after "delivered": keep the final word
        item.provider_status = status
        item.last_error = error_code
        _show(session, item, status.shown)
        if contact is not None and status.final and delete_delay is not None and channel.deletes_provider_copies:
            enqueue_delete(
                session, contact, records.contact_dek(keyring, contact), provider_message_id, now + delete_delay
            )
        gone = contact is not None and recipient_gone is not None and not contact.opted_out
        if contact is not None and recipient_gone is not None:
            mark_recipient_gone(session, keyring, contact, recipient_gone)
    if gone:
        checkpoint(ctx.factory)
    return True


def stand_in(session: Session, keyring: Keyring, channel: str, now: dt.datetime) -> tuple[Contact, bytes]:
    """A blank contact (and its data key) to queue deletions under that belong to no sender the tip
    line knows (a recipient forgotten or erased since, a reply found in the provider's log): like
    FORGET's heir, it knows nothing of anyone, and maintenance removes it once its rows are gone."""
    contact, key = records.new_contact(keyring, channel, (keyring.pseudonym_versions()[0], ""), now)
    contact.pseudonym = None
    contact.opted_out = True
    contact.erased_reason = ErasedReason.FORGET
    session.add(contact)
    session.flush()  # the outbox row refers to it
    return contact, key


def retry_delay(error: ChannelError, attempts: int, cap: dt.timedelta) -> dt.timedelta:
    """How long to wait before trying again: what the provider asked for, else exponential backoff."""
    delay = dt.timedelta(seconds=error.retry_after) if error.retry_after else dt.timedelta(seconds=5 * 2**attempts)
    return min(delay, cap)


def erase_contact(session: Session, keyring: Keyring, contact: Contact, reason: ErasedReason) -> bytes:
    """Erase a sender's return address for good; returns the contact's new data key.

    Sends not yet made are cancelled, and the data key that sealed the address is shredded (see
    records.shred_contact_key). Under retention the pseudonym goes too, so that nothing links a
    future message to this sender; after STOP it stays, so that START finds them again. (FORGET
    goes further: intake replaces the whole contact, records.forget_contact.) On SQLite, run
    db.checkpoint after the commit so that the old bytes leave the WAL.
    """
    old_key = records.contact_dek(keyring, contact)
    records.erase_address(contact, reason)
    if reason is ErasedReason.RETENTION:
        contact.pseudonym = None
    cancel_sends(session, contact.id, reason)
    return records.shred_contact_key(session, keyring, contact, old_key)


def mark_recipient_gone(session: Session, keyring: Keyring, contact: Contact, reason: ErasedReason) -> None:
    """The tipster can never be written to again (opted out at the carrier, blocked the bot)."""
    contact.opted_out = True
    erase_contact(session, keyring, contact, reason)


class Dispatcher:
    """Performs due outbox rows through the channels, with retries and backoff."""

    def __init__(
        self,
        ctx: ServiceContext,
        channels: Mapping[str, Channel],
        batch: int = 20,
        maintenance: Callable[[], object] | None = None,
        maintenance_interval: float = 60.0,
        background: Callable[[], int] | None = None,
        media: Callable[[], int] | None = None,
        alerts: Callable[[], int] | None = None,
    ):
        self.ctx = ctx
        self.clock = ctx.clock  # tests move time forward here
        self.channels = dict(channels)
        self.batch = batch
        self.maintenance = maintenance
        self.maintenance_interval = maintenance_interval
        self.background = background  # e.g. one batch of a running key rotation; non-zero while work remains
        self.media = media  # fetch and clean tipsters' photos (attachments.MediaWorker.run_once)
        self.alerts = alerts  # queue and send detectives' alerts (alerts.AlertWorker.run_once)
        self._wake = threading.Event()
        self._claimed: set[str] = set()  # the rows this pass holds
        self._paced: dict[str, dt.datetime] = {}  # rows put back for pacing -> when they are due
        # Sends the provider took whose id is not yet recorded (the database failed): row -> provider_ref.
        self._unrecorded: dict[str, str] = {}
        # Liveness for /healthz: when this dispatcher last finished a pass or a row (the heartbeat
        # of processes.py copies it into the database); None until it has.
        self.passed_at: dt.datetime | None = None

    def wake(self) -> None:
        self._wake.set()

    def _claim(self) -> list[str]:
        now = self.clock()
        due = or_(
            and_(OutboxItem.status == OutboxStatus.PENDING, OutboxItem.next_attempt_at <= now),
            and_(OutboxItem.status == OutboxStatus.CLAIMED, OutboxItem.lease_until < now),  # a dispatcher died
        )
        query = select(OutboxItem.id).where(due, OutboxItem.channel.in_(list(self.channels)))
        query = query.order_by(OutboxItem.next_attempt_at).limit(self.batch)
        return claim_due(
            self.ctx.factory, OutboxItem, query, {"status": OutboxStatus.CLAIMED, "lease_until": now + LEASE}
        )

    def run_once(self) -> int:
        """Perform every due row once, then the due photo downloads and alerts; returns how many were attempted."""
        self._flush_unrecorded()
        ids = self._claim()
        self._claimed = set(ids)
        for item_id in ids:
            self._perform(item_id)
            self.passed_at = self.clock()
        self._claimed = set()
        done = len(ids) + (self.media() if self.media is not None else 0)
        return done + (self.alerts() if self.alerts is not None else 0)

    def run_until_idle(self) -> int:
        """Perform rows until none is due, waiting out per-chat pacing (`tipline dispatch --once`, tests).

        Returns how many rows were attempted (a row put back for pacing counts each time)."""
        total = 0
        while True:
            count = self.run_once()
            total += count
            if count:
                continue
            wait = self.pacing_wait()
            if wait is None:
                return total
            time.sleep(wait)

    def pacing_wait(self) -> float | None:
        """Seconds until the first row this dispatcher put back for pacing is due (None: there is none)."""
        if not self._paced:
            return None
        try:  # forget the rows another dispatcher sent or an erasure cancelled meanwhile
            with read_only(self.ctx.factory) as session:
                waiting = set(
                    session.scalars(
                        select(OutboxItem.id).where(
                            OutboxItem.id.in_(list(self._paced)), OutboxItem.status == OutboxStatus.PENDING
                        )
                    )
                )
        except (SQLAlchemyError, TimeoutError):
            return None  # the database is away: the caller waits its usual interval
        self._paced = {k: v for k, v in self._paced.items() if k in waiting}
        if not self._paced:
            return None
        return max(0.0, (min(self._paced.values()) - self.clock()).total_seconds())

    def _perform(self, item_id: str) -> None:
        try:
            loaded = self._load(item_id)
        except (crypto.IntegrityError, crypto.MissingKeyError) as error:
            # A row that cannot be opened will never open: say so loudly, keep the others going.
            log.error("outbox %s cannot be decrypted: %s", item_id[:8], type(error).__name__)
            self._finish(item_id, OutboxStatus.FAILED, "integrity")
            return
        if loaded is not None:
            self._paced.pop(item_id, None)
            self._deliver(loaded)

    def _load(self, item_id: str) -> _Loaded | None:
        keyring = self.ctx.keyring
        with self.ctx.factory() as session:
            # Locked while it is read, so that an erasure re-sealing the row under a fresh key (STOP,
            # FORGET) happens wholly before or after: never a row read under a key already replaced.
            item = session.get(OutboxItem, item_id, with_for_update=True)
            if item is None or item.status != OutboxStatus.CLAIMED:
                return None
            contact = session.get(Contact, item.contact_id)
            contact_key = records.contact_dek(keyring, contact) if contact is not None else None
            payload = None
            if contact_key is not None:
                payload = records.OUTBOX_PAYLOAD.open(contact_key, item.id, item.payload_ct).decode()
            address = None
            if contact is not None and contact_key is not None and not contact.opted_out:
                address = records.read_address(contact, contact_key)
            loaded = _Loaded(
                item.id,
                OutboxKind(item.kind),
                item.channel,
                payload,
                address,
                item.contact_id,
                item.attempt_started_at,
                item.provider_ref is not None,
            )
            session.rollback()
        return loaded

    def _deliver(self, job: _Loaded) -> None:
        channel = self.channels[job.channel]
        if job.payload is None:
            self._finish(job.item_id, OutboxStatus.CANCELLED, "no_contact")
            return
        try:
            if job.kind is SEND:
                self._send(channel, job)
            else:
                channel.delete(job.payload)
                self._finish(job.item_id, OutboxStatus.DONE, None)
        except ChannelError as error:
            if error.paced:
                self._pace(job, error)
            else:
                self._failed(job.item_id, error)
        except Exception as error:  # noqa: BLE001 - a bug or network fault must not lose the row
            log.warning(
                "outbox %s %s via %s failed unexpectedly: %s",
                job.kind,
                job.item_id[:8],
                job.channel,
                type(error).__name__,
            )
            self._failed(job.item_id, ChannelError(type(error).__name__, permanent=False, uncertain=True))

    def _send(self, channel: Channel, job: _Loaded) -> None:
        """Send once: record the attempt, send, record the provider's id, then the rest (see the module)."""
        assert job.payload is not None
        if job.address is None:
            self._finish(job.item_id, OutboxStatus.CANCELLED, "no_address")
            return
        if job.recorded or job.item_id in self._unrecorded:
            # The provider took it; only the bookkeeping after that was lost.
            self._record_sent(job.item_id, self._unrecorded.get(job.item_id))
            self._finish(job.item_id, OutboxStatus.SENT, None)
            return
        text, keyboard = send_payload(job.payload)
        if job.started is None:
            self._mark_started(job.item_id)
        else:
            adopted = self._unconfirmed(channel, job, job.address, text)
            if adopted is not None:
                self._record_sent(job.item_id, adopted)
                self._finish(job.item_id, OutboxStatus.SENT, None)
                log.info("outbox %s: found already sent at the provider, not sent again", job.item_id[:8])
                return
        sent = channel.send(job.address, text, keyboard)
        keyring = self.ctx.keyring
        # A provider that gives no id (the sandbox): a ref of its own that no status report can match.
        ref = provider_ref(keyring, job.channel, sent.provider_message_id or f"unnumbered:{job.item_id}")
        self._unrecorded[job.item_id] = ref
        self._record_sent(job.item_id, ref)
        self._finish(job.item_id, OutboxStatus.SENT, None)

    def _mark_started(self, item_id: str) -> None:
        """Commit, on its own and before the provider is called, that an attempt began (to the minute).

        Real time, not the dispatcher's clock: the provider's log is searched from it."""
        with self.ctx.factory.begin() as session:
            session.execute(
                update(OutboxItem).where(OutboxItem.id == item_id).values(attempt_started_at=to_minute(utcnow()))
            )

    def _record_sent(self, item_id: str, ref: str | None, delays: tuple[float, ...] = RECORD_RETRY_DELAYS) -> None:
        """Commit the provider's id (keyed hash) on its own, right after the provider answered.

        Retried after each of `delays` if the database fails; the last failure propagates (the
        row is then retried, and this process remembers the id in `_unrecorded` meanwhile)."""
        if ref is None:
            return
        for pause in (*delays, None):
            try:
                with self.ctx.factory.begin() as session:
                    session.execute(update(OutboxItem).where(OutboxItem.id == item_id).values(provider_ref=ref))
            except (SQLAlchemyError, TimeoutError):
                if pause is None:
                    raise
                time.sleep(pause)
            else:
                self._unrecorded.pop(item_id, None)
                return

    def _flush_unrecorded(self) -> None:
        """Record the ids of sends whose recording failed earlier (the database is back, perhaps)."""
        for item_id, ref in list(self._unrecorded.items()):
            try:
                self._record_sent(item_id, ref, delays=())
            except (SQLAlchemyError, TimeoutError):
                return

    def _unconfirmed(self, channel: Channel, job: _Loaded, address: str, text: str) -> str | None:
        """A previous attempt began and left no result: the provider_ref of the message it sent, if any.

        Where the provider lists what we sent (`SentLog`: Twilio), the message sent to this
        address with these exact words since that attempt's minute, and not already recorded for
        another row (two replies with the same words), is this row's: it is adopted. A failure to
        ask raises ChannelError, and the row waits (backoff) rather than being sent blind.

        Where it cannot be asked (the Telegram Bot API lists no sent messages), the message is
        sent again: a duplicate of a reply is visible and harmless (the tipster reads the same
        words twice), while dropping it could silence a detective's question or the receipt that
        tells a tipster their tip was taken, and nothing else would ever tell them. The window
        left is the time between Telegram's answer and the commit of its id (step 2 of the
        module's docstring), i.e. a process killed or a database down exactly then.
        """
        assert job.started is not None
        if not isinstance(channel, SentLog):
            log.warning(
                "outbox %s: an earlier attempt left no result; %s cannot be asked, sending again",
                job.item_id[:8],
                job.channel,
            )
            return None
        found = channel.find_sent(address, text, job.started - CLOCK_SLACK)
        keyring = self.ctx.keyring
        versions = keyring.pseudonym_versions()
        candidates = [
            [provider_ref(keyring, job.channel, s.provider_message_id, v) for v in versions]
            for s in found
            if s.provider_message_id
        ]
        if not candidates:
            return None
        with read_only(self.ctx.factory) as session:
            taken = set(
                session.scalars(
                    select(OutboxItem.provider_ref).where(
                        OutboxItem.provider_ref.in_([r for c in candidates for r in c])
                    )
                )
            )
        return next((refs[0] for refs in candidates if taken.isdisjoint(refs)), None)

    def _pace(self, job: _Loaded, error: ChannelError) -> None:
        """The channel may not send to this address yet: put the row back for when it may, and every
        later message to the same contact after it, in their order (none overtakes another).

        Not a failed attempt (the provider was not called): attempts and last_error stay."""
        due = self.clock() + dt.timedelta(seconds=error.retry_after or 1.0)
        with self.ctx.factory.begin() as session:
            head = session.get(OutboxItem, job.item_id)
            if head is None:
                return
            head.attempt_started_at = job.started  # as it was before this attempt
            mine = and_(OutboxItem.status == OutboxStatus.CLAIMED, OutboxItem.id.in_(list(self._claimed)))
            queue = session.scalars(
                select(OutboxItem)
                .where(
                    OutboxItem.contact_id == job.contact_id,
                    OutboxItem.kind == SEND,
                    OutboxItem.channel == job.channel,
                    OutboxItem.next_attempt_at >= head.next_attempt_at,
                    or_(OutboxItem.status == OutboxStatus.PENDING, mine),
                )
                .order_by(OutboxItem.next_attempt_at)
            ).all()
            for item in sorted(queue, key=lambda i: i.id != head.id):  # stable: the head first, then in order
                if item.next_attempt_at > due and item.status == OutboxStatus.PENDING:
                    break  # this one and the rest are due later anyway
                item.status = OutboxStatus.PENDING
                item.lease_until = None
                item.next_attempt_at = max(item.next_attempt_at, due)
                self._paced[item.id] = item.next_attempt_at
                due = item.next_attempt_at + TICK
        log.debug("outbox %s paced for %.1f s", job.item_id[:8], error.retry_after or 1.0)

    def _finish(self, item_id: str, status: OutboxStatus, error: str | None, provider: str | None = None) -> None:
        with self.ctx.factory.begin() as session:
            item = session.get(OutboxItem, item_id)
            if item is None:
                return
            _settle(item, status)  # sent, done, failed or cancelled
            item.last_error = error
            item.attempts += 1
            if provider:
                item.provider_ref = provider
            shown = ReplyDelivery.SENT if status is OutboxStatus.SENT else ReplyDelivery.FAILED
            _show(session, item, shown, keep_reported=True)
        # Per message, so DEBUG only: at INFO the log would time every reply to a tipster.
        log.debug("outbox %s %s: %s", item_id[:8], status, error or "ok")

    def _failed(self, item_id: str, error: ChannelError) -> None:
        now = self.clock()
        erased = False
        with self.ctx.factory.begin() as session:
            item = session.get(OutboxItem, item_id)
            owner = None
            if item is not None and error.recipient_gone is not None:
                # The sender's address is to be erased: lock them before this row, as a STOP or
                # FORGET running now does (it re-seals this row too); the other order deadlocked.
                item, owner = _with_locked_owner(session, item)
            if item is None:
                return
            item.attempts += 1
            item.lease_until = None
            item.last_error = error.code
            if not error.uncertain:
                item.attempt_started_at = None  # the provider answered: nothing went
            give_up = error.permanent or item.attempts >= MAX_ATTEMPTS[OutboxKind(item.kind)]
            if item.kind == DELETE and error.missing:
                _settle(item, OutboxStatus.DONE)  # already gone at the provider
                give_up = False
            elif give_up:
                erased = self._give_up(session, item, owner, error)
            else:
                item.status = OutboxStatus.PENDING
                item.next_attempt_at = now + retry_delay(error, item.attempts, BACKOFF_CAP[OutboxKind(item.kind)])
        if erased:
            checkpoint(self.ctx.factory)
        log.debug("outbox %s attempt failed with %s%s", item_id[:8], error.code, " (giving up)" if give_up else "")

    def _give_up(self, session: Session, item: OutboxItem, contact: Contact | None, error: ChannelError) -> bool:
        """Settle a row as failed; True if the provider said the tipster is gone (their address
        erased). `contact`: the row's sender, locked, when the provider said so."""
        _settle(item, OutboxStatus.FAILED)  # a failed deletion's provider id is dropped too
        _show(session, item, ReplyDelivery.FAILED)
        if error.recipient_gone is None or contact is None or contact.opted_out:
            return False
        mark_recipient_gone(session, self.ctx.keyring, contact, error.recipient_gone)
        return True

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        """The dispatcher loop: work while there is work, otherwise wait for a wake-up or the interval."""
        next_maintenance = 0.0
        self.passed_at = self.clock()  # started: alive for /healthz from now on
        failures = _FailedPasses()
        while not stop.is_set():
            self._wake.clear()  # this pass answers every wake-up so far; one during it brings another pass
            try:
                if self.maintenance is not None and time.monotonic() >= next_maintenance:
                    self.maintenance()
                    next_maintenance = time.monotonic() + self.maintenance_interval
                worked = self.run_once()
                if self.background is not None:
                    worked += self.background()
                self.passed_at = self.clock()
            except Exception as error:  # noqa: BLE001 - keep the loop alive; the rows stay durable
                failures.failed(error)
                worked = 0
            else:
                failures.passed()
            if not worked:
                paced = self.pacing_wait()
                self._wake.wait(interval if paced is None else min(interval, paced))


class _FailedPasses:
    """The log of failing passes: an outage is logged when it starts, then at most once a minute
    while it lasts, and when it ends. A pass a second would otherwise log an error a second."""

    EVERY = 60.0  # seconds between "still failing" lines

    def __init__(self) -> None:
        self.count = 0
        self.cause = ""
        self._next_line = 0.0  # monotonic

    def failed(self, error: Exception) -> None:
        self.count += 1
        cause = faults.describe(error) if isinstance(error, faults.ERRORS) else ""
        self.cause = self.cause or cause
        if self.count == 1:
            log.error("dispatcher pass failed: %s%s", type(error).__name__, f": {cause}" if cause else "")
        elif time.monotonic() >= self._next_line:
            log.error("dispatcher still failing: %s, %d passes", cause or type(error).__name__, self.count)
        else:
            return
        self._next_line = time.monotonic() + self.EVERY

    def passed(self) -> None:
        if self.count:
            again = "database reachable again" if self.cause else "passes again"
            log.info("dispatcher %s after %d failed passes", again, self.count)
        self.count, self.cause = 0, ""


@dataclass(frozen=True)
class _Loaded:
    """An outbox row opened for delivery, outside any transaction."""

    item_id: str
    kind: OutboxKind
    channel: str
    payload: str | None  # None: the contact is gone, so is the key that sealed it
    address: str | None  # None: opted out or erased
    contact_id: str
    started: dt.datetime | None  # an earlier attempt began (to the minute) and recorded no result
    recorded: bool  # the provider's id of an earlier attempt is recorded: it was sent
