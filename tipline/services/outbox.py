"""The outbox: every outbound action is a durable row written in the transaction that caused it.

A dispatcher (in-process in `tipline serve`, or alone in `tipline dispatch`) claims due rows with a
lease, performs them, and records the result. Several dispatchers never claim one row at once: on
PostgreSQL candidates are locked with SKIP LOCKED, on SQLite the claim runs under BEGIN IMMEDIATE.
A dispatcher that dies mid-send leaves a lease that expires, so the row is retried (at-least-once:
no provider offers an idempotency key for sends). No network call happens inside a transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.core import crypto
from tipline.storage import records
from tipline.core.channels import Channel, ChannelError
from tipline.core.crypto import Keyring
from tipline.storage.db import claim_due
from tipline.storage.keystore import KeyStore
from tipline.storage.models import Contact, Message, OutboxItem, utcnow

log = logging.getLogger(__name__)

SEND = "send"
DELETE = "delete"

LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = {SEND: 8, DELETE: 40}
BACKOFF_CAP = {SEND: dt.timedelta(hours=1), DELETE: dt.timedelta(hours=6)}
FINAL_DELIVERY = ("delivered", "undelivered", "failed", "read")
# Built once: a plain Core INSERT is compiled once and cached, unlike a new .values() per call.
_INSERT = OutboxItem.__table__.insert()


def _payload_aad(item_id: str) -> bytes:
    return crypto.aad("outbox", "payload", item_id)


def _enqueue(
    session: Session, contact: Contact, contact_key: bytes, kind: str, payload: str, due: dt.datetime,
    message_id: int | None = None,
) -> str:
    item_id = records.new_id()
    session.execute(_INSERT, {
        "id": item_id, "kind": kind, "channel": contact.channel, "contact_id": contact.id, "message_id": message_id,
        "payload_ct": crypto.seal(contact_key, payload.encode(), _payload_aad(item_id)),
        "status": "pending", "attempts": 0, "next_attempt_at": due, "created_at": utcnow(),
    })
    return item_id


def enqueue_send(
    session: Session, contact: Contact, contact_key: bytes, text: str, now: dt.datetime, message_id: int | None = None,
    keyboard: str | None = None,
) -> str:
    """Queue a text to the tipster; `keyboard` names the quick-reply buttons a channel may show."""
    payload = json.dumps({"text": text, "keyboard": keyboard}, ensure_ascii=False)
    return _enqueue(session, contact, contact_key, SEND, payload, now, message_id)


def send_payload(payload: str) -> tuple[str, str | None]:
    """(text, keyboard) of a queued send."""
    data = json.loads(payload)
    return data["text"], data.get("keyboard")


def enqueue_delete(
    session: Session, contact: Contact, contact_key: bytes, provider_message_id: str, due: dt.datetime
) -> str:
    return _enqueue(session, contact, contact_key, DELETE, provider_message_id, due)


def cancel_sends(session: Session, contact_id: str, reason: str) -> None:
    """Drop messages not yet sent to a tipster who can no longer be written to."""
    pending = session.scalars(
        select(OutboxItem).where(OutboxItem.contact_id == contact_id, OutboxItem.kind == SEND, OutboxItem.status == "pending")
    ).all()
    for item in pending:
        item.status = "cancelled"
        item.last_error = reason
        if item.message_id is not None:
            message = session.get(Message, item.message_id)
            if message is not None:
                message.delivery = "failed"


def provider_ref(keyring: Keyring, channel: str, provider_message_id: str) -> str:
    return keyring.keyed_hash("provider-message", f"{channel}:{provider_message_id}")[1]


def record_status(
    factory: sessionmaker[Session], keyring: Keyring, channel: Channel, provider_message_id: str,
    status: str, error_code: str | None, *, delete_delay: dt.timedelta | None, now: dt.datetime | None = None,
) -> bool:
    """Record a provider's delivery report for one of our messages. False if we never sent it."""
    now = now or utcnow()
    refs = [keyring.keyed_hash("provider-message", f"{channel.name}:{provider_message_id}", v)[1] for v in keyring.pseudonym_versions()]
    with factory.begin() as session:
        item = session.scalars(select(OutboxItem).where(OutboxItem.provider_ref.in_(refs), OutboxItem.kind == SEND)).first()
        if item is None:
            return False
        if item.status in FINAL_DELIVERY and status not in FINAL_DELIVERY:
            return True  # a late "sent" after "delivered": keep the final word
        item.status = status
        item.last_error = error_code
        if item.message_id is not None:
            message = session.get(Message, item.message_id)
            if message is not None:
                message.delivery = status
        contact = session.get(Contact, item.contact_id)
        if contact is not None and error_code == "21610":  # the number opted out at the carrier
            recipient_gone(session, contact, "stop")
        if contact is not None and status in FINAL_DELIVERY and delete_delay is not None and channel.deletes_provider_copies:
            enqueue_delete(session, contact, records.contact_dek(keyring, contact), provider_message_id, now + delete_delay)
    return True


def retry_delay(error: ChannelError, attempts: int, cap: dt.timedelta) -> dt.timedelta:
    """How long to wait before trying again: what the provider asked for, else exponential backoff."""
    delay = dt.timedelta(seconds=error.retry_after) if error.retry_after else dt.timedelta(seconds=5 * 2**attempts)
    return min(delay, cap)


def recipient_gone(session: Session, contact: Contact, reason: str) -> None:
    """The tipster can never be written to again (opted out at the carrier, blocked the bot)."""
    contact.opted_out = True
    records.erase_address(contact, reason)
    cancel_sends(session, contact.id, reason)


class Dispatcher:
    """Performs due outbox rows through the channels, with retries and backoff."""

    def __init__(
        self, factory: sessionmaker[Session], keys: KeyStore, channels: Mapping[str, Channel],
        clock: Callable[[], dt.datetime] = utcnow, batch: int = 20,
        maintenance: Callable[[], object] | None = None, maintenance_interval: float = 60.0,
        background: Callable[[], int] | None = None, media: Callable[[], int] | None = None,
    ):
        self.factory = factory
        self.keys = keys
        self.channels = dict(channels)
        self.clock = clock
        self.batch = batch
        self.maintenance = maintenance
        self.maintenance_interval = maintenance_interval
        self.background = background  # e.g. one batch of a running key rotation; non-zero while work remains
        self.media = media  # fetch and clean tipsters' photos (attachments.MediaWorker.run_once)
        self._wake = threading.Event()

    def wake(self) -> None:
        self._wake.set()

    def _claim(self) -> list[str]:
        now = self.clock()
        due = or_(
            and_(OutboxItem.status == "pending", OutboxItem.next_attempt_at <= now),
            and_(OutboxItem.status == "sending", OutboxItem.lease_until < now),  # a dispatcher died
        )
        query = select(OutboxItem.id).where(due, OutboxItem.channel.in_(list(self.channels)))
        query = query.order_by(OutboxItem.next_attempt_at).limit(self.batch)
        return claim_due(self.factory, OutboxItem, query, {"status": "sending", "lease_until": now + LEASE})

    def run_once(self) -> int:
        """Perform every due row once, then the due photo downloads; returns how many were attempted."""
        ids = self._claim()
        for item_id in ids:
            self._perform(item_id)
        return len(ids) + (self.media() if self.media is not None else 0)

    def _perform(self, item_id: str) -> None:
        try:
            loaded = self._load(item_id)
        except (crypto.IntegrityError, crypto.MissingKeyError) as error:
            # A row that cannot be opened will never open: say so loudly, keep the others going.
            log.error("outbox %s cannot be decrypted: %s", item_id[:8], type(error).__name__)
            self._finish(item_id, "failed", "integrity")
            return
        if loaded is None:
            return
        self._deliver(item_id, *loaded)

    def _load(self, item_id: str) -> tuple[str, str, str | None, str | None] | None:
        keyring = self.keys.keyring
        with self.factory() as session:
            item = session.get(OutboxItem, item_id)
            if item is None or item.status != "sending":
                return None
            contact = session.get(Contact, item.contact_id)
            kind, channel_name = item.kind, item.channel
            contact_key = records.contact_dek(keyring, contact) if contact is not None else None
            payload = crypto.open_sealed(contact_key, item.payload_ct, _payload_aad(item.id)).decode() if contact_key else None
            address = records.read_address(contact, contact_key) if contact is not None and contact_key else None
            if contact is not None and contact.opted_out:
                address = None
            session.rollback()
        return kind, channel_name, payload, address

    def _deliver(self, item_id: str, kind: str, channel_name: str, payload: str | None, address: str | None) -> None:
        keyring = self.keys.keyring
        channel = self.channels[channel_name]
        if payload is None:
            self._finish(item_id, "cancelled", "no_contact")
            return
        try:
            if kind == SEND:
                if address is None:
                    self._finish(item_id, "cancelled", "no_address")
                    return
                text, keyboard = send_payload(payload)
                sent = channel.send(address, text, keyboard)
                ref = provider_ref(keyring, channel_name, sent.provider_message_id) if sent.provider_message_id else None
                self._finish(item_id, "sent", None, provider=ref)
            else:
                channel.delete(payload)
                self._finish(item_id, "done", None)
        except ChannelError as error:
            self._failed(item_id, error)
        except Exception as error:  # noqa: BLE001 - a bug or network fault must not lose the row
            log.warning("outbox %s %s via %s failed unexpectedly: %s", kind, item_id[:8], channel_name, type(error).__name__)
            self._failed(item_id, ChannelError(type(error).__name__, permanent=False))

    def _finish(self, item_id: str, status: str, error: str | None, provider: str | None = None) -> None:
        with self.factory.begin() as session:
            item = session.get(OutboxItem, item_id)
            if item is None:
                return
            item.status = status
            item.lease_until = None
            item.last_error = error
            item.attempts += 1
            if provider:
                item.provider_ref = provider
            if item.kind == DELETE and status == "done":
                item.payload_ct = b""  # the provider id is no longer needed anywhere
            if item.message_id is not None:
                message = session.get(Message, item.message_id)
                if message is not None and message.delivery not in FINAL_DELIVERY:
                    message.delivery = "sent" if status == "sent" else "failed"
        log.info("outbox %s %s: %s", item_id[:8], status, error or "ok")

    def _failed(self, item_id: str, error: ChannelError) -> None:
        now = self.clock()
        with self.factory.begin() as session:
            item = session.get(OutboxItem, item_id)
            if item is None:
                return
            item.attempts += 1
            item.lease_until = None
            item.last_error = error.code
            give_up = error.permanent or item.attempts >= MAX_ATTEMPTS[item.kind]
            if item.kind == DELETE and error.code in ("20404", "404"):
                item.status, item.payload_ct = "done", b""  # already gone at the provider
                give_up = False
            elif give_up:
                item.status = "failed"
                if item.message_id is not None:
                    message = session.get(Message, item.message_id)
                    if message is not None:
                        message.delivery = "failed"
                if error.recipient_gone:
                    contact = session.get(Contact, item.contact_id)
                    if contact is not None:
                        recipient_gone(session, contact, "stop" if error.code == "21610" else "blocked")
            else:
                item.status = "pending"
                item.next_attempt_at = now + retry_delay(error, item.attempts, BACKOFF_CAP[item.kind])
        log.info("outbox %s attempt failed with %s%s", item_id[:8], error.code, " (giving up)" if give_up else "")

    def run_forever(self, stop: threading.Event, interval: float = 1.0) -> None:
        """The dispatcher loop: work while there is work, otherwise wait for a wake-up or the interval."""
        next_maintenance = 0.0
        while not stop.is_set():
            try:
                if self.maintenance is not None and time.monotonic() >= next_maintenance:
                    self.maintenance()
                    next_maintenance = time.monotonic() + self.maintenance_interval
                worked = self.run_once()
                if self.background is not None:
                    worked += self.background()
            except Exception as error:  # noqa: BLE001 - keep the loop alive; the rows stay durable
                log.error("dispatcher pass failed: %s", type(error).__name__)
                worked = 0
            if not worked:
                self._wake.wait(interval)
                self._wake.clear()
