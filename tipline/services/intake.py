"""The shell around conversation.step(): dedupe, lock, persist, queue.

One inbound message is one database transaction: the delivery is remembered (by keyed hash), the
sender found by keyed pseudonym, the conversation advanced, the tip and its thread written
encrypted, and outbound actions queued in the outbox. The webhook answers only after the commit,
so an acknowledged tip survives a crash, and a redelivered one is recognised and not processed again.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import bindparam, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from tipline.services import attachments, outbox
from tipline.storage import records
from tipline.core import conversation as conv_mod
from tipline.core.catalog import Text, render
from tipline.core.channels import InboundMessage
from tipline.config import Settings
from tipline.storage.db import GroupCommitter
from tipline.core.conversation import ConversationState, State
from tipline.storage.keystore import KeyStore
from tipline.storage.models import Contact, Conversation, Message, ProcessedDelivery, Tip, to_minute, utcnow

log = logging.getLogger(__name__)

DELIVERY_MEMORY = dt.timedelta(days=7)  # providers retry for minutes (Twilio) to a day (Telegram)
ALBUM_MEMORY = 120.0  # seconds: the photos of one Telegram album arrive within moments of each other
CONTENT_EFFECTS = (conv_mod.CreateDraft, conv_mod.SetField, conv_mod.FollowUp, conv_mod.Submit, conv_mod.Attach)

# The hot path's statements, built once so SQLAlchemy compiles them once.
_REMEMBER_DELIVERY = ProcessedDelivery.__table__.insert()
_INSERT_MESSAGES = Message.__table__.insert()
_FIND_SENDER = (
    select(Contact, Conversation, Tip)
    .outerjoin(Conversation, Conversation.contact_id == Contact.id)
    .outerjoin(Tip, Tip.id == Conversation.tip_id)
    .where(Contact.pseudonym.in_(bindparam("pseudonyms", expanding=True)))
    .with_for_update(of=Contact)
)


@dataclass(frozen=True)
class Result:
    replies: tuple[str, ...]
    duplicate: bool = False


def keyboard_for(conversation: ConversationState) -> str:
    """Which quick-reply buttons fit the conversation's next step (channels that have buttons)."""
    if conv_mod.has_draft(conversation):
        kind = "draft"  # Skip, Done
    elif conversation.state is State.SUBMITTED:
        kind = "submitted"  # New tip
    else:
        kind = "start"  # English, Español
    return f"{kind}:{conversation.language}"


class _Retry(Exception):
    pass


class _Duplicate(Exception):
    pass


class Intake:
    def __init__(
        self, factory: sessionmaker[Session], keys: KeyStore, settings: Settings,
        deletes_provider_copies: Callable[[str], bool] = lambda channel: False,
        replies_inline: Callable[[str], bool] = lambda channel: True,
        clock: Callable[[], dt.datetime] = utcnow, on_outbox: Callable[[], None] = lambda: None,
    ):
        self.factory = factory
        self.keys = keys
        self.settings = settings
        self.deletes_provider_copies = deletes_provider_copies
        self.replies_inline = replies_inline
        self.clock = clock
        self.on_outbox = on_outbox
        # SQLite: concurrent messages share one durable commit (see db.GroupCommitter).
        self.committer = GroupCommitter(factory) if factory.kw["bind"].dialect.name == "sqlite" else None
        # Albums already answered: keyed hash -> (monotonic time, delivery id). Memory only, bounded.
        self._albums: dict[str, tuple[float, str]] = {}
        self._albums_lock = threading.Lock()
        self.defaults = settings.catalog_defaults

    def receive(self, msg: InboundMessage) -> Result:
        """Process one inbound message exactly once; returns the texts to answer with."""
        for _attempt in range(5):
            try:
                return self._receive(msg)
            except _Retry:
                continue
        raise RuntimeError("intake kept conflicting with concurrent writers")

    def _receive(self, msg: InboundMessage) -> Result:
        try:
            if self.committer is not None:
                replies, queued, moved = self.committer.run(lambda session: self._process(session, msg))
            else:
                with self.factory.begin() as session:
                    replies, queued, moved = self._process(session, msg)
        except _Duplicate:
            # Already processed, or processed right now by a concurrent copy whose commit we waited
            # for. Nothing to do, and nothing to say twice.
            log.info("%s delivery already processed", msg.channel)
            return Result((), duplicate=True)
        if queued:
            self.on_outbox()
        log.info("%s message processed: %s", msg.channel, moved)
        return Result(replies)

    def _process(self, session: Session, msg: InboundMessage) -> tuple[tuple[str, ...], bool, str]:
        """The unit of work for one inbound message, inside the caller's transaction.

        This is the hot path of every webhook: plain INSERTs go through Core (no unit-of-work
        bookkeeping) and the sender, their conversation and tip arrive in one query.
        """
        keyring = self.keys.keyring
        now = self.clock()
        _, delivery_key = keyring.keyed_hash("delivery", f"{msg.channel}:{msg.delivery_id}")
        versions = keyring.pseudonym_versions()
        if len(versions) > 1:
            # During a pepper rotation a redelivery may have been remembered under an older key.
            older = [keyring.keyed_hash("delivery", f"{msg.channel}:{msg.delivery_id}", v)[1] for v in versions[1:]]
            if session.scalar(select(ProcessedDelivery.key).where(ProcessedDelivery.key.in_(older)).limit(1)):
                raise _Duplicate()
        try:
            session.execute(_REMEMBER_DELIVERY, {"key": delivery_key, "expires_at": now + DELIVERY_MEMORY})
        except IntegrityError:
            raise _Duplicate() from None
        contact, contact_key, conversation, tip = self._find_sender(session, msg, now)
        if msg.erase_request is not None:
            return self._erase(session, msg, contact, contact_key, conversation, now)
        state = ConversationState(State(conversation.state), conversation.language, tip.reference if tip else None)
        context = conv_mod.Context(
            opted_out=contact.opted_out, tip_status=tip.status if tip else None, new_reference=records.new_reference(),
        )
        files, refused = attachments.triage(msg.media, msg.refused_media, self.settings.media_max_bytes)
        inbound = conv_mod.Inbound(
            text=msg.text, media=len(files), refused=refused[0] if refused else None,
            provider_intent=msg.provider_intent, language_hint=msg.language_hint,
        )
        outcome = conv_mod.step(state, inbound, context)
        if files and not refused and not msg.text.strip() and msg.album and self._album_answered(msg):
            # Another photo of an album the tipster was just thanked for: take it, say nothing twice.
            outcome = conv_mod.Outcome(outcome.conversation, (), outcome.effects)
        thread: list[dict[str, object]] = []
        incoming = attachments.Incoming(files, refused, msg.provider_message_id)
        files_rows: list[dict[str, object]] = []
        replies = self._apply(
            session, contact, contact_key, conversation, tip, outcome, now, thread, incoming, files_rows,
            state.state is State.SUBMITTED,
        )
        if contact.pseudonym is not None and not contact.opted_out and contact.address_ct is None:
            records.store_address(contact, contact_key, msg.address)
        queued = False
        if replies and not self.replies_inline(msg.channel):
            # The channel cannot answer in the webhook response: the answers go through the outbox,
            # queued in this same transaction, so a stored tip never loses its acknowledgement.
            keyboard = keyboard_for(outcome.conversation)
            for n, reply in enumerate(replies):
                outbox.enqueue_send(session, contact, contact_key, reply, now,
                                    keyboard=keyboard if n == len(replies) - 1 else None)
            replies, queued = (), True
        fetching = any(row["status"] == attachments.PENDING for row in files_rows)
        if fetching:
            queued = True  # wake the dispatcher: it runs the media worker
        # With files still to fetch, the provider copy goes once they are settled (attachments.py).
        if (msg.provider_message_id and not fetching and self.settings.provider_delete
                and self.deletes_provider_copies(msg.channel)):
            due = now + dt.timedelta(seconds=self.settings.provider_delete_delay_seconds)
            outbox.enqueue_delete(session, contact, contact_key, msg.provider_message_id, due)
            queued = queued or due <= now  # wake the dispatcher only for work that is due already
        try:
            if thread:
                session.execute(_INSERT_MESSAGES, thread)
            attachments.insert(session, files_rows)
            session.flush()
        except IntegrityError:
            raise _Retry() from None  # a concurrent first message created this sender, or a reference collided
        return replies, queued, f"{state.state.value} -> {outcome.conversation.state.value}"

    def _album_answered(self, msg: InboundMessage) -> bool:
        """Whether an earlier photo of this album (from this sender) was answered moments ago."""
        assert msg.album is not None
        key = self.keys.keyring.keyed_hash("album", f"{msg.channel}:{msg.address}:{msg.album}")[1]
        now = time.monotonic()
        with self._albums_lock:
            if len(self._albums) > 10_000:
                self._albums = {k: v for k, v in self._albums.items() if now - v[0] < ALBUM_MEMORY}
            seen = self._albums.get(key)
            if seen is not None and now - seen[0] < ALBUM_MEMORY and seen[1] != msg.delivery_id:
                return True
            self._albums[key] = (now, msg.delivery_id)  # the first photo (or its retried transaction)
            return False

    def _erase(
        self, session: Session, msg: InboundMessage, contact: Contact, contact_key: bytes, conversation: Conversation,
        now: dt.datetime,
    ) -> tuple[tuple[str, ...], bool, str]:
        """The tipster asked to erase the chat at the provider: queue it, and say honestly what it does."""
        assert msg.erase_request is not None
        outbox.enqueue_delete(session, contact, contact_key, msg.erase_request, now)
        reply = render(Text.of("erase_requested"), conversation.language, self.defaults)
        if contact.address_ct is not None and not contact.opted_out:
            outbox.enqueue_send(session, contact, contact_key, reply, now)
        return (), True, "erase requested"

    def recipient_gone(self, channel: str, address: str, reason: str) -> bool:
        """The provider says this sender can no longer be written to (e.g. they blocked the bot)."""
        keyring = self.keys.keyring
        pseudonyms = [keyring.pseudonym(channel, address, v)[1] for v in keyring.pseudonym_versions()]
        with self.factory.begin() as session:
            contact = session.scalars(select(Contact).where(Contact.pseudonym.in_(pseudonyms))).first()
            if contact is None:
                return False
            outbox.recipient_gone(session, contact, reason)
        log.info("%s sender can no longer be reached: %s", channel, reason)
        return True

    def _find_sender(
        self, session: Session, msg: InboundMessage, now: dt.datetime
    ) -> tuple[Contact, bytes, Conversation, Tip | None]:
        """The sender (created on first contact), their conversation and its current tip, locked."""
        keyring = self.keys.keyring
        pseudonyms = [keyring.pseudonym(msg.channel, msg.address, v)[1] for v in keyring.pseudonym_versions()]
        row = session.execute(_FIND_SENDER, {"pseudonyms": pseudonyms}).first()
        if row is None:
            contact, contact_key = records.new_contact(keyring, msg.channel, keyring.pseudonym(msg.channel, msg.address), now)
            conversation = Conversation(contact_id=contact.id, state=State.NEW.value, language="en", updated_at=to_minute(now))
            session.add_all([contact, conversation])
            try:
                session.flush()
            except IntegrityError:
                raise _Retry() from None
            return contact, contact_key, conversation, None
        contact, conversation, tip = row
        if tip is not None and session.get_bind().dialect.name == "postgresql":
            # Lock the tip as well, and read its data key as committed: a re-encrypting rotation
            # may be replacing it right now, and what is sealed here must stay readable.
            session.refresh(tip, with_for_update=True)
        contact.last_activity_at = to_minute(now)
        if conversation is None:
            conversation = Conversation(contact_id=contact.id, state=State.NEW.value, language="en", updated_at=to_minute(now))
            session.add(conversation)
        return contact, records.contact_dek(keyring, contact), conversation, tip

    def _apply(
        self, session: Session, contact: Contact, contact_key: bytes, conversation: Conversation,
        tip: Tip | None, outcome: conv_mod.Outcome, now: dt.datetime, thread: list[dict[str, object]],
        incoming: attachments.Incoming | None = None, files_rows: list[dict[str, object]] | None = None,
        was_submitted: bool = False,
    ) -> tuple[str, ...]:
        """Carry out a step's effects; returns the rendered replies (none for an opted-out sender)."""
        keyring = self.keys.keyring
        tip_key = records.tip_dek(keyring, tip) if tip is not None else None
        forgotten = False
        for effect in outcome.effects:
            match effect:
                case conv_mod.CreateDraft(reference=reference, what=what):
                    tip, tip_key = records.new_tip(keyring, reference, contact.channel, contact.id, now)
                    session.add(tip)
                    session.flush()
                    if what:  # a draft begun with a photo has no description yet
                        records.set_tip_field(tip, tip_key, "what", what)
                        thread.append(records.message_row(tip, tip_key, "tipster", what, now))
                case conv_mod.SetField(name=name, text=value):
                    assert tip is not None and tip_key is not None
                    records.set_tip_field(tip, tip_key, name, value)
                    thread.append(records.message_row(tip, tip_key, "tipster", value, now))
                case conv_mod.FollowUp(text=value):
                    assert tip is not None and tip_key is not None
                    thread.append(records.message_row(tip, tip_key, "tipster", value, now))
                    tip.unread += 1
                case conv_mod.Submit():
                    assert tip is not None
                    if tip.status == "draft":
                        tip.status = "new"
                        tip.submitted_at = to_minute(now)
                case conv_mod.Attach():
                    pass  # the files are recorded below, once every effect has run
                case conv_mod.FlagUrgent():
                    assert tip is not None
                    tip.urgent = True
                case conv_mod.DiscardDraft():
                    if tip is not None and tip.status == "draft":
                        assert tip_key is not None
                        if self.settings.provider_delete and self.deletes_provider_copies(contact.channel):
                            for provider_id in attachments.abandon(session, tip, tip_key):
                                outbox.enqueue_delete(session, contact, contact_key, provider_id, now)
                        conversation.tip_id = None
                        session.delete(tip)
                        tip = None
                case conv_mod.OptOut():
                    contact.opted_out = True
                    records.erase_address(contact, "stop")
                    outbox.cancel_sends(session, contact.id, "stop")
                case conv_mod.OptIn():
                    contact.opted_out = False
                    contact.erased_reason = None
                case conv_mod.Forget():
                    # The tip stays; nothing links this sender to it any more.
                    contact.pseudonym = None
                    records.erase_address(contact, "forget")
                    outbox.cancel_sends(session, contact.id, "forget")
                    forgotten = True
        if tip is not None and tip_key is not None and incoming is not None and (incoming.files or incoming.refused):
            attach = any(isinstance(e, conv_mod.Attach) for e in outcome.effects)
            rows = attachments.record(tip, tip_key, incoming, attach, now, thread)
            if files_rows is not None:
                files_rows.extend(rows)
            if rows and was_submitted and not any(isinstance(e, conv_mod.FollowUp) for e in outcome.effects):
                tip.unread += 1
        if tip is not None:
            tip.updated_at = to_minute(now)
        new_state = outcome.conversation
        if forgotten:
            session.delete(conversation)
        else:
            conversation.state = new_state.state.value
            conversation.language = new_state.language
            conversation.tip_id = tip.id if tip is not None and new_state.tip_ref == tip.reference else None
            conversation.updated_at = to_minute(now)
        if contact.opted_out:
            return ()
        replies = tuple(render(t, new_state.language, self.defaults) for t in outcome.replies)
        if tip is not None and tip_key is not None and any(isinstance(e, CONTENT_EFFECTS) for e in outcome.effects):
            thread.extend(records.message_row(tip, tip_key, "bot", reply, now) for reply in replies)
        return replies

    def expire_idle(self) -> int:
        """Submit drafts left idle as they stand (or drop empty ones); returns how many changed."""
        cutoff = to_minute(self.clock()) - dt.timedelta(minutes=self.settings.draft_idle_minutes)
        with self.factory() as session:
            ids = session.scalars(
                select(Conversation.contact_id).where(
                    Conversation.updated_at < cutoff,
                    Conversation.state.in_([State.AWAIT_WHAT.value, State.AWAIT_WHERE.value, State.AWAIT_WHEN.value]),
                )
            ).all()
        changed = 0
        for contact_id in ids:
            if self._expire_one(contact_id, cutoff):
                changed += 1
        if changed:
            self.on_outbox()
        return changed

    def _expire_one(self, contact_id: str, cutoff: dt.datetime) -> bool:
        keyring = self.keys.keyring
        now = self.clock()
        with self.factory.begin() as session:
            conversation = session.get(Conversation, contact_id, with_for_update=True)
            if conversation is None or conversation.updated_at >= cutoff:
                return False  # the tipster wrote meanwhile
            tip = session.get(Tip, conversation.tip_id, with_for_update=True) if conversation.tip_id is not None else None
            state = ConversationState(State(conversation.state), conversation.language, tip.reference if tip else None)
            outcome = conv_mod.expire(state)
            if outcome is None:
                return False
            contact = session.get(Contact, contact_id)
            assert contact is not None
            contact_key = records.contact_dek(keyring, contact)
            if tip is not None and tip.status == "draft" and any(isinstance(e, conv_mod.Submit) for e in outcome.effects):
                tip.status = "new"
                tip.submitted_at = to_minute(now)
                tip.updated_at = to_minute(now)
            conversation.state = outcome.conversation.state.value
            conversation.tip_id = tip.id if tip is not None and outcome.conversation.tip_ref else None
            conversation.updated_at = to_minute(now)
            if not contact.opted_out and contact.address_ct is not None:
                tip_key = records.tip_dek(keyring, tip) if tip is not None else None
                for text in outcome.replies:
                    body = render(text, outcome.conversation.language, self.defaults)
                    message_id = None
                    if tip is not None and tip_key is not None:
                        message = records.append_message(session, tip, tip_key, "bot", body, now, delivery="queued")
                        session.flush()
                        message_id = message.id
                    outbox.enqueue_send(session, contact, contact_key, body, now, message_id)
        return True


def forget_deliveries(session: Session, now: dt.datetime) -> int:
    """Drop remembered delivery ids past their bounded lifetime."""
    result = session.execute(delete(ProcessedDelivery).where(ProcessedDelivery.expires_at < now))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
