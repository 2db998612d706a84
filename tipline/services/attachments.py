"""Photos from tipsters, from the webhook to the console.

1. Intake (in the inbound message's transaction) records each attached file as a thread entry
   and a `pending` attachment holding only the provider's reference, encrypted under the tip's
   data key. Files refused at the door (a video, a file too large) get an entry saying so and
   nothing else. The webhook answers at once: nothing slow happens in it.
2. `MediaWorker` (run by the dispatcher) claims pending attachments with a lease, downloads each
   through its channel (outside any transaction), cleans it (images.py) and commits the cleaned
   image, encrypted under the tip's data key with associated data naming the attachment. The
   original bytes exist only in memory and in the cleaner's pipe, never on disk.
3. Once an attachment is settled (stored, refused, or failed after retries) its provider copy is
   deleted through the outbox where the provider allows it (Twilio: the media, then the message
   once every file of it is settled). A tipster whose file could not be used is told so, in their
   language; so is the detective, in the thread.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from tipline.core import crypto, images
from tipline.core.catalog import DEFAULT_LANGUAGE, Text, render
from tipline.core.channels import Channel, ChannelError, MediaRef
from tipline.core.vocabulary import AttachmentStatus, MessageKind, ReplyDelivery
from tipline.services import outbox
from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.db import claim_due, read_only
from tipline.storage.models import Attachment, Contact, Conversation, Tip, table_of, to_minute

log = logging.getLogger(__name__)

PENDING, FETCHING, STORED, REFUSED, FAILED = (
    AttachmentStatus.PENDING,
    AttachmentStatus.FETCHING,
    AttachmentStatus.STORED,
    AttachmentStatus.REFUSED,
    AttachmentStatus.FAILED,
)
SETTLED = (STORED, REFUSED, FAILED)
LEASE = dt.timedelta(minutes=5)
MAX_ATTEMPTS = 10  # about two and a half hours of backoff: a provider outage, not a lost photo
BACKOFF_CAP = dt.timedelta(hours=1)
_INSERT = table_of(Attachment).insert()


def triage(
    refs: tuple[MediaRef, ...], refused: tuple[str, ...], max_bytes: int
) -> tuple[tuple[MediaRef, ...], tuple[str, ...]]:
    """Split attachments into those worth fetching and refusals, by what the provider declared."""
    accepted = tuple(ref for ref in refs if ref.declared_size is None or ref.declared_size <= max_bytes)
    too_large = tuple(images.SIZE for ref in refs if ref not in accepted)
    return accepted, refused + too_large


@dataclass(frozen=True)
class Incoming:
    """What an inbound message brings to attach: files to fetch, refusals, and its provider copy."""

    files: tuple[MediaRef, ...]
    refused: tuple[str, ...]
    provider_message_id: str | None  # deleted at the provider once every file is settled


def record(
    tip: Tip,
    tip_key: bytes,
    incoming: Incoming,
    attach: bool,
    now: dt.datetime,
    thread: list[dict[str, object]],
) -> list[dict[str, object]]:
    """Thread entries (appended to `thread`) and attachment rows for one inbound message's files.

    `attach` says whether the conversation took the files (a STOP, say, does not); refusals are
    recorded either way, so the detective knows the tipster tried to send something.
    """
    rows: list[dict[str, object]] = []
    batch = records.new_id()
    minute = to_minute(now)
    for ref in incoming.files if attach else ():
        entry = records.message_row(tip, tip_key, MessageKind.MEDIA, "", now)
        thread.append(entry)
        attachment_id = records.new_id()
        source = json.dumps({"source": ref.source, "copy": ref.provider_copy, "message": incoming.provider_message_id})
        rows.append(
            {
                "id": attachment_id,
                "tip_id": tip.id,
                "seq": entry["seq"],
                "batch": batch,
                "status": PENDING,
                "source_ct": records.ATTACHMENT_SOURCE.seal(tip_key, attachment_id, source.encode()),
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": minute,
            }
        )
    for reason in incoming.refused:
        entry = records.message_row(tip, tip_key, MessageKind.MEDIA, "", now)
        thread.append(entry)
        rows.append(
            {
                "id": records.new_id(),
                "tip_id": tip.id,
                "seq": entry["seq"],
                "batch": batch,
                "status": REFUSED,
                "reason": reason,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": minute,
            }
        )
    return rows


def insert(session: Session, rows: list[dict[str, object]]) -> None:
    """Insert `record`'s rows. One batch INSERT takes its columns from the first row, so rows of
    different shapes (a photo's encrypted source, a refused file's reason) go in batches of their own:
    a photo sent beside a video must not fail the message, and with it the tipster's words."""
    shapes: dict[tuple[str, ...], list[dict[str, object]]] = {}
    for row in rows:
        shapes.setdefault(tuple(sorted(row)), []).append(row)
    for batch in shapes.values():
        session.execute(_INSERT, batch)


def abandon(session: Session, tip: Tip, tip_key: bytes) -> set[str]:
    """The tip is being deleted (a discarded draft) with files not yet fetched: the provider
    messages they came in, so that their copies are deleted all the same."""
    rows = session.scalars(
        select(Attachment).where(Attachment.tip_id == tip.id, Attachment.source_ct.is_not(None))
    ).all()
    messages = set()
    for attachment in rows:
        assert attachment.source_ct is not None
        source = json.loads(records.ATTACHMENT_SOURCE.open(tip_key, attachment.id, attachment.source_ct))
        if source.get("message"):
            messages.add(source["message"])
    return messages


def open_image(keyring: crypto.Keyring, tip: Tip, attachment: Attachment) -> bytes:
    """The cleaned image's bytes (for the console). Raises crypto.IntegrityError if tampered with."""
    assert attachment.data_ct is not None
    return records.ATTACHMENT_DATA.open(records.tip_dek(keyring, tip), attachment.id, attachment.data_ct)


def reseal(attachment: Attachment, old_key: bytes, new_key: bytes) -> None:
    """Re-encrypt an attachment under a tip's new data key (key rotation with --reencrypt)."""
    if attachment.source_ct is not None:
        plain = records.ATTACHMENT_SOURCE.open(old_key, attachment.id, attachment.source_ct)
        attachment.source_ct = records.ATTACHMENT_SOURCE.seal(new_key, attachment.id, plain)
    if attachment.data_ct is not None:
        plain = records.ATTACHMENT_DATA.open(old_key, attachment.id, attachment.data_ct)
        attachment.data_ct = records.ATTACHMENT_DATA.seal(new_key, attachment.id, plain)


@dataclass(frozen=True)
class _Job:
    attachment_id: str
    channel: str
    source: str
    provider_copy: str | None
    provider_message_id: str | None
    attempts: int


class MediaWorker:
    """Fetches, cleans and stores pending attachments; run by the dispatcher between outbox passes."""

    def __init__(self, ctx: ServiceContext, channels: Mapping[str, Channel], isolate: bool = True, batch: int = 2):
        self.ctx = ctx
        self.factory = ctx.factory
        self.keys = ctx.keys
        self.channels = dict(channels)
        self.settings = ctx.settings
        self.clock = ctx.clock  # tests move time forward here
        self.isolate = isolate
        self.batch = batch
        self.defaults = ctx.settings.catalog_defaults

    def run_once(self) -> int:
        """Work on every due attachment once; returns how many were attempted."""
        ids = self._claim()
        for attachment_id in ids:
            self._work(attachment_id)
        return len(ids)

    def _claim(self) -> list[str]:
        now = self.clock()
        due = or_(
            and_(Attachment.status == PENDING, Attachment.next_attempt_at <= now),
            and_(Attachment.status == FETCHING, Attachment.lease_until < now),  # a worker died mid-fetch
        )
        query = select(Attachment.id).where(due).order_by(Attachment.next_attempt_at).limit(self.batch)
        return claim_due(self.factory, Attachment, query, {"status": FETCHING, "lease_until": now + LEASE})

    def _load(self, attachment_id: str) -> _Job | None:
        keyring = self.keys.keyring
        with read_only(self.factory) as session:
            attachment = session.get(Attachment, attachment_id)
            if attachment is None or attachment.status != FETCHING or attachment.source_ct is None:
                return None
            tip = session.get(Tip, attachment.tip_id)
            assert tip is not None
            source = json.loads(
                records.ATTACHMENT_SOURCE.open(records.tip_dek(keyring, tip), attachment.id, attachment.source_ct)
            )
            return _Job(
                attachment.id,
                tip.channel,
                source["source"],
                source.get("copy"),
                source.get("message"),
                attachment.attempts,
            )

    def _work(self, attachment_id: str) -> None:
        try:
            job = self._load(attachment_id)
        except (crypto.IntegrityError, crypto.MissingKeyError) as error:
            log.error("attachment %s cannot be decrypted: %s", attachment_id[:8], type(error).__name__)
            self._settle(attachment_id, FAILED, "integrity", None)
            return
        if job is None:
            return
        channel = self.channels.get(job.channel)
        if channel is None:
            self._retry(job, ChannelError("channel_off", permanent=False))  # configured again later, perhaps
            return
        try:
            data = channel.fetch_media(job.source, self.settings.media_max_bytes)
            image = images.clean(data, self.settings.media_max_pixels, isolate=self.isolate)
        except images.Refused as refused:
            self._settle(job.attachment_id, REFUSED, refused.reason, None, job)
        except images.Interrupted as stopped:  # stopped from outside, not by the photo: try it again
            log.warning("attachment %s cleaning interrupted by %s; it will be tried again", attachment_id[:8], stopped)
            self._retry(job, ChannelError("interrupted", permanent=False))
        except ChannelError as error:
            self._retry(job, error)
        except Exception as error:  # noqa: BLE001 - a network fault or a bug must not lose the photo
            log.warning("attachment %s fetch failed unexpectedly: %s", attachment_id[:8], type(error).__name__)
            self._retry(job, ChannelError(type(error).__name__, permanent=False))
        else:
            del data  # the original: gone from memory as soon as the cleaned copy exists
            self._settle(job.attachment_id, STORED, None, image, job)

    def _retry(self, job: _Job, error: ChannelError) -> None:
        attempts = job.attempts + 1
        if error.permanent or attempts >= MAX_ATTEMPTS:
            self._settle(job.attachment_id, FAILED, error.code[:16], None, job)
            return
        with self.factory.begin() as session:
            attachment = session.get(Attachment, job.attachment_id)
            if attachment is None or attachment.status != FETCHING:
                return
            attachment.status = PENDING
            attachment.attempts = attempts
            attachment.reason = error.code[:16]
            attachment.lease_until = None
            attachment.next_attempt_at = self.clock() + outbox.retry_delay(error, attempts, BACKOFF_CAP)
        log.debug("attachment %s fetch attempt %d failed with %s", job.attachment_id[:8], attempts, error.code)

    def _settle(
        self,
        attachment_id: str,
        status: str,
        reason: str | None,
        image: images.CleanImage | None,
        job: _Job | None = None,
    ) -> None:
        keyring = self.keys.keyring
        now = self.clock()
        with self.factory.begin() as session:
            tip_id = session.scalar(select(Attachment.tip_id).where(Attachment.id == attachment_id))
            sender = _lock_sender(session, tip_id) if tip_id is not None else None  # first: see there
            # Then the tip, then the attachment (the order a re-encrypting rotation takes them too),
            # and use the tip's key as it is now: such a rotation may have replaced it meanwhile.
            tip = session.get(Tip, tip_id, with_for_update=records.ROW_LOCK) if tip_id is not None else None
            attachment = session.get(Attachment, attachment_id, with_for_update=True)
            if tip is None or attachment is None or attachment.status != FETCHING:
                return  # deleted with its tip, or settled by another worker whose lease we outlived
            tip_key = records.tip_dek(keyring, tip)
            attachment.status = status
            attachment.reason = reason
            attachment.lease_until = None
            # Settled: its due time, precise while it waited, is kept to the minute like every time a tipster causes.
            attachment.next_attempt_at = to_minute(attachment.next_attempt_at)
            attachment.source_ct = None
            attachment.attempts += 1
            if image is not None:
                attachment.data_ct = records.ATTACHMENT_DATA.seal(tip_key, attachment.id, image.data)
                attachment.content_type = image.content_type
                attachment.source_format = image.source_format
                attachment.width, attachment.height = image.width, image.height
                attachment.size = len(image.data)
                attachment.frames = image.frames
            tip.updated_at = to_minute(now)
            contact = sender if sender is not None and tip.contact_id == sender.id else None
            if contact is not None and job is not None:
                # The dispatcher that runs this worker performs the queued rows on its next pass.
                self._after(session, tip, tip_key, contact, attachment, job, now)
        # Per photo, so DEBUG only: at INFO every line would time a tipster's message.
        log.debug("attachment %s %s%s", attachment_id[:8], status, f": {reason}" if reason else "")

    def _after(
        self,
        session: Session,
        tip: Tip,
        tip_key: bytes,
        contact: Contact,
        attachment: Attachment,
        job: _Job,
        now: dt.datetime,
    ) -> None:
        """Queue the provider deletions and, if the file could not be used, a word to the tipster."""
        channel = self.channels.get(job.channel)
        contact_key = records.contact_dek(self.keys.keyring, contact)
        if channel is not None and channel.deletes_provider_copies and self.settings.provider_delete:
            if job.provider_copy:
                outbox.enqueue_delete(session, contact, contact_key, job.provider_copy, now)
            unsettled = session.scalar(
                select(func.count())
                .select_from(Attachment)
                .where(
                    Attachment.batch == attachment.batch,
                    Attachment.status.not_in(SETTLED),
                    Attachment.id != attachment.id,
                )
            )
            if not unsettled and job.provider_message_id:
                outbox.enqueue_delete(session, contact, contact_key, job.provider_message_id, now)
        if attachment.status != STORED and contact.address_ct is not None and not contact.opted_out:
            conversation = session.get(Conversation, contact.id)
            language = conversation.language if conversation is not None else DEFAULT_LANGUAGE
            key = "media_failed" if attachment.status == FAILED else f"media_refused_{attachment.reason}"
            text = render(Text.of(key, ref=tip.reference), language, self.defaults)
            message = records.append_message(
                session, tip, tip_key, MessageKind.BOT, text, now, delivery=ReplyDelivery.QUEUED
            )
            session.flush()
            outbox.enqueue_send(session, contact, contact_key, text, now, message.id)


def _lock_sender(session: Session, tip_id: int) -> Contact | None:
    """Lock the sender of the tip `tip_id`, before the tip, as intake does: a STOP or FORGET running
    now gives them a fresh data key and re-seals what is queued under the old one, so deletions
    queued by the caller must be written before it (it waits for them) or after it (queued under the
    new key, or not at all: a forgotten sender's tip names no contact any more)."""
    sender_id = session.scalar(select(Tip.contact_id).where(Tip.id == tip_id))
    return session.get(Contact, sender_id, with_for_update=records.ROW_LOCK) if sender_id is not None else None
