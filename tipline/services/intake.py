"""The shell around conversation.step(): dedupe, lock, persist, queue.

One inbound message is one database transaction: the delivery is remembered (by keyed hash), the
sender found by keyed pseudonym, the conversation advanced, the tip and its thread written
encrypted, and outbound actions queued in the outbox. The webhook answers only after the commit,
so an acknowledged tip survives a crash, and a redelivered one is recognised and not processed again.

The step's effects are carried out by a small interpreter: one function per effect type
(`EFFECTS`), each acting on the `Unit` of work of this message and returning the thread rows it
wrote. Idle expiry runs the same interpreter on the outcome of `conversation.expire`.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from sqlalchemy import bindparam, delete, exists, select, true
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session

from tipline.core import conversation as conv
from tipline.core.catalog import DEFAULT_LANGUAGE, Text, render
from tipline.core.channels import InboundMessage
from tipline.core.conversation import ConversationState, State
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import ErasedReason, MessageKind, ReplyDelivery, TipStatus
from tipline.services import abuse, attachments, outbox, search
from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.db import GroupCommitter, checkpoint, rowcount
from tipline.storage.models import (
    Attachment,
    Contact,
    Conversation,
    Message,
    ProcessedDelivery,
    Tip,
    table_of,
    to_minute,
)

log = logging.getLogger(__name__)

DELIVERY = "delivery"  # the keyed hash's label for remembered deliveries
DELIVERY_MEMORY = dt.timedelta(days=7)  # providers retry for minutes (Twilio) to a day (Telegram)
ALBUM_MEMORY = 120.0  # seconds: the photos of one Telegram album arrive within moments of each other
# Effects after which the bot's answer joins the thread (the detective sees what the tipster was told).
CONTENT_EFFECTS = (conv.CreateDraft, conv.SetField, conv.FollowUp, conv.Submit, conv.Attach)
# Effects whose confirmation a sender always gets, muted or past the reply limit (abuse.py).
UNPACED_EFFECTS = (conv.OptIn, conv.Forget)
TIPSTER_KINDS = (MessageKind.TIPSTER, MessageKind.MEDIA)  # thread entries that are the tipster's activity
OPEN_STATES = (State.AWAIT_WHAT.value, State.AWAIT_WHERE.value, State.AWAIT_WHEN.value)
# After FORGET, the provider messages of photos not yet fetched are deleted this much later: after
# the media worker has fetched or given up on them (attachments.MAX_ATTEMPTS with backoff), since
# the tip no longer knows a contact to queue the deletion under when they settle.
FORGOTTEN_FILES_DELETED_AFTER = dt.timedelta(hours=12)

# The hot path's statements, built once so SQLAlchemy compiles them once.
_REMEMBER_DELIVERY = table_of(ProcessedDelivery).insert()
_INSERT_MESSAGES = table_of(Message).insert()
# The sender, their conversation and its tip in one Core query (the ORM's loading of three
# entities cost more than the query): each table's columns in turn, made objects by `_loaded`.
_CONTACT_KEYS, _CONVERSATION_KEYS, _TIP_KEYS = (
    [column.key for column in table_of(model).columns] for model in (Contact, Conversation, Tip)
)
_FIND_SENDER = (
    select(*table_of(Contact).columns, *table_of(Conversation).columns, *table_of(Tip).columns)
    .select_from(
        table_of(Contact)
        .outerjoin(table_of(Conversation), Conversation.contact_id == Contact.id)
        .outerjoin(table_of(Tip), Tip.id == Conversation.tip_id)
    )
    .where(Contact.pseudonym.in_(bindparam("pseudonyms", expanding=True)))
)
# PostgreSQL: concurrent messages of one sender queue on the contact's row lock, taken on its own
# first. A query that waits for a row lock sees the other tables as they were when it began, so one
# that locked the contact and read the conversation at once could read the conversation the
# message before it had just replaced. Read after the lock, the conversation is the latest; the tip
# is locked in the same read (a LATERAL subquery: FOR UPDATE refuses the nullable side of an outer
# join), which returns its latest version, data key included, after any wait (a re-encrypting
# rotation may be replacing that key right now, and what is sealed here must stay readable).
# The delivery is remembered by the same statement (a data-modifying CTE, run whether or not it is
# read): one round trip less for every message.
_REMEMBER_AND_LOCK_SENDER = (
    select(Contact.id)
    .where(Contact.pseudonym.in_(bindparam("pseudonyms", expanding=True)))
    .with_for_update(key_share=True)
    .add_cte(
        table_of(ProcessedDelivery)
        .insert()
        .values(key=bindparam("key"), expires_at=bindparam("expires_at"))
        .cte("remembered")
    )
)
_LOCKED_TIP = select(table_of(Tip)).where(Tip.id == Conversation.tip_id).with_for_update(key_share=True).lateral("tip")
_READ_LOCKED_SENDER = (
    select(*table_of(Contact).columns, *table_of(Conversation).columns, *_LOCKED_TIP.c)
    .select_from(
        table_of(Contact)
        .outerjoin(table_of(Conversation), Conversation.contact_id == Contact.id)
        .outerjoin(_LOCKED_TIP, true())
    )
    .where(Contact.id == bindparam("contact_id"))
)

Row = dict[str, object]


def _loaded(session: Session, row: Sequence[object]) -> tuple[Contact, Conversation | None, Tip | None]:
    """The objects of a `_FIND_SENDER` row, attached to `session`; None for a conversation or tip
    the outer joins did not find (their columns are all NULL)."""
    ends = len(_CONTACT_KEYS), len(_CONTACT_KEYS) + len(_CONVERSATION_KEYS)
    contact = dict(zip(_CONTACT_KEYS, row[: ends[0]], strict=True))
    conversation = dict(zip(_CONVERSATION_KEYS, row[ends[0] : ends[1]], strict=True))
    tip = dict(zip(_TIP_KEYS, row[ends[1] :], strict=True))
    return (
        records.attach_loaded(session, Contact, contact),
        None if conversation["contact_id"] is None else records.attach_loaded(session, Conversation, conversation),
        None if tip["id"] is None else records.attach_loaded(session, Tip, tip),
    )


@dataclass(frozen=True)
class Result:
    replies: tuple[str, ...]
    duplicate: bool = False
    forgotten: bool = False  # the sender asked to be forgotten (FORGET): a channel erases what it keeps too


@dataclass(frozen=True)
class _Done:
    """What one message's unit of work leaves for after its commit."""

    replies: tuple[str, ...]
    queued: bool  # the outbox has work: wake the dispatcher
    moved: str  # "state -> state", for the debug log
    erased: bool = False  # an address or a sender was erased: checkpoint the WAL
    forgotten: bool = False  # FORGET: the sender is unlinked (Result.forgotten)


def keyboard_for(conversation: ConversationState) -> str:
    """Which quick-reply buttons fit the conversation's next step (channels that have buttons)."""
    if conv.has_draft(conversation):
        kind = "draft"  # Skip, Done
    elif conversation.state is State.SUBMITTED:
        kind = "submitted"  # New tip
    else:
        kind = "start"  # English, Español
    return f"{kind}:{conversation.language}"


class _Retry(Exception):
    pass


# PostgreSQL's SQLSTATEs for a transaction it rolled back to let another one through: a deadlock
# (each held a row the other waited for) and a serialization failure. Run again, the message meets
# the other transaction's outcome; nothing of the first run was kept.
_CONFLICTS = frozenset({"40P01", "40001"})


class Duplicate(Exception):
    """Already processed (a provider's retry, a concurrent copy): nothing to do, nothing to say twice."""


def remember_once(session: Session, keyring: Keyring, value: str, expires_at: dt.datetime) -> None:
    """Remember that a delivery (or a provider's report) `value` was processed, in the caller's
    transaction; raise Duplicate if it was, under any pepper version (during a pepper rotation a
    redelivery may have been remembered under an older key) or by a concurrent copy right now."""
    try:
        session.connection().execute(_REMEMBER_DELIVERY, _delivery_row(session, keyring, value, expires_at))
    except IntegrityError:
        raise Duplicate() from None


def _delivery_row(session: Session, keyring: Keyring, value: str, expires_at: dt.datetime) -> dict[str, object]:
    """The row that remembers `value`; raise Duplicate if it was remembered under an older pepper."""
    current, *older = delivery_keys(keyring, value)
    if older and session.scalar(select(ProcessedDelivery.key).where(ProcessedDelivery.key.in_(older)).limit(1)):
        raise Duplicate()
    return {"key": current, "expires_at": expires_at}


def delivery_keys(keyring: Keyring, value: str) -> list[str]:
    """The keys `value` is remembered under: the current pepper's first, then older live ones."""
    return [keyring.keyed_hash(DELIVERY, value, v)[1] for v in keyring.pseudonym_versions()]


@dataclass
class Unit:
    """One sender's records inside one transaction: what the effects act on."""

    session: Session
    contact: Contact
    keyring: Keyring  # opens the contact's data key, once a step needs it (`contact_key`)
    conversation: Conversation
    tip: Tip | None
    now: dt.datetime
    tip_key: bytes | None = None
    forgotten: bool = False
    erased: bool = False  # the return address was erased (STOP or FORGET): shred its data key
    quiet: bool = False  # muted, or past the sender's reply limit: no unread bump (abuse.py)
    thread: list[Row] = field(default_factory=list)  # new thread entries, inserted in one batch
    files: list[Row] = field(default_factory=list)  # new attachment rows, inserted in one batch
    words: list[tuple[int, str]] = field(default_factory=list)  # (tip id, tipster's text) to index (search.py)
    kept_urgent: bool = False  # DISCARD found an urgent draft detectives already see: kept, and said so
    _contact_key: bytes | None = field(default=None, repr=False)

    @property
    def contact_key(self) -> bytes:
        """The contact's data key, unwrapped on first use: only what is queued in the outbox and the
        return address are sealed under it, and a message that queues nothing needs none."""
        if self._contact_key is None:
            self._contact_key = records.contact_dek(self.keyring, self.contact)
        return self._contact_key

    @contact_key.setter
    def contact_key(self, key: bytes) -> None:
        self._contact_key = key

    def open_tip(self) -> tuple[Tip, bytes]:
        assert self.tip is not None and self.tip_key is not None, "the effect needs the conversation's tip"
        return self.tip, self.tip_key

    def say(self, kind: MessageKind, text: str) -> Row:
        tip, key = self.open_tip()
        row = records.message_row(tip, key, kind, text, self.now)
        self.thread.append(row)
        if kind == MessageKind.TIPSTER:  # fields and captions are said as the tipster's messages
            self.words.append((tip.id, text))
        return row


@dataclass(frozen=True)
class ChannelTraits:
    """What intake needs to know of a channel (answers from `Runtime`, defaults for tests)."""

    deletes_provider_copies: Callable[[str], bool] = lambda channel: False
    replies_inline: Callable[[str], bool] = lambda channel: True


class Intake:
    def __init__(
        self,
        ctx: ServiceContext,
        traits: ChannelTraits | None = None,
        on_outbox: Callable[[], None] = lambda: None,
    ):
        self.ctx = ctx
        self.settings = ctx.settings
        self.clock = ctx.clock  # tests move time forward here
        self.traits = traits or ChannelTraits()
        self.on_outbox = on_outbox
        factory = ctx.factory
        # SQLite: concurrent messages share one durable commit (see db.GroupCommitter). A redelivery
        # is known by its first statement, before anything is written (remember_once): it spoils no batch.
        sqlite = factory.kw["bind"].dialect.name == "sqlite"
        self.committer = GroupCommitter(factory, clean=(Duplicate,)) if sqlite else None
        # Albums already answered: keyed hash -> (monotonic time, delivery id). Memory only, bounded.
        self._albums: dict[str, tuple[float, str]] = {}
        self._albums_lock = threading.Lock()
        self.defaults = self.settings.catalog_defaults

    # Receiving ------------------------------------------------------------------------------------

    def receive(self, msg: InboundMessage) -> Result:
        """Process one inbound message exactly once; returns the texts to answer with."""
        if msg.channel == "sms" and msg.address == self.ctx.settings.alert_sms_to:
            # The on-call phone answering an alert the tip line sent it: an officer, not a tipster.
            # Nothing is stored (their number would become a tipster's contact) and nothing answered.
            log.info("a text from the on-call alert number was ignored")
            return Result(())
        reconnected = False
        conflict: DBAPIError | None = None
        for _attempt in range(5):
            try:
                return self._receive(msg)
            except _Retry:
                continue
            except DBAPIError as error:
                if error.connection_invalidated and not reconnected:
                    # The pooled connection had died (a restarted server, a cut connection) and the
                    # pool has made way for new ones. Once: if the database is down, the next try
                    # fails too, and the webhook defers the message (reconcile.receive_or_defer).
                    # Should the cut have come after the COMMIT took effect, the delivery is found
                    # remembered: the message is stored once, its inline answer is lost.
                    reconnected = True
                    continue
                if getattr(error.orig, "sqlstate", None) in _CONFLICTS:
                    conflict = error  # PostgreSQL chose this transaction to roll back (see _CONFLICTS)
                    continue
                raise
        if conflict is not None:
            raise conflict  # still conflicting: answered as when the database cannot take it now
        raise RuntimeError("intake kept conflicting with concurrent writers")

    def _receive(self, msg: InboundMessage) -> Result:
        try:
            if self.committer is not None:
                done = self.committer.run(lambda session: self._process(session, msg))
            else:
                with self.ctx.factory.begin() as session:
                    done = self._process(session, msg)
        except Duplicate:
            # Already processed, or processed right now by a concurrent copy whose commit we waited
            # for. Nothing to do, and nothing to say twice.
            log.debug("%s delivery already processed", msg.channel)
            return Result((), duplicate=True)
        if done.erased:
            checkpoint(self.ctx.factory)  # the erased address and its old key leave the WAL
        if done.queued:
            self.on_outbox()
        # Per message, so DEBUG only: at INFO every line would time a tipster's message.
        log.debug("%s message processed: %s", msg.channel, done.moved)
        return Result(done.replies, forgotten=done.forgotten)

    def _process(self, session: Session, msg: InboundMessage) -> _Done:
        """The unit of work for one inbound message, inside the caller's transaction.

        This is the hot path of every webhook: the sender, their conversation and tip arrive in
        one query, and every write is a Core statement built once (no unit-of-work bookkeeping, no
        flush before each statement): rows as they are made, their changes at the end (`_write`).
        """
        with session.no_autoflush:
            return self._process_unflushed(session, msg)

    def _process_unflushed(self, session: Session, msg: InboundMessage) -> _Done:
        now = self.clock()
        unit = self._find_sender(session, msg, now)
        pace = abuse.pace(unit.contact, now, self.settings)
        unit.quiet = pace is not abuse.Pace.ANSWER
        if msg.erase_request is not None:
            return self._erase(unit, msg.erase_request, answer=not unit.quiet)
        before = self._state_of(unit)
        files, refused = attachments.triage(msg.media, msg.refused_media, self.settings.media_max_bytes)
        inbound = conv.Inbound(
            text=msg.text,
            media=len(files),
            refused=refused[0] if refused else None,
            provider_intent=msg.provider_intent,
            language_hint=msg.language_hint,
        )
        context = conv.Context(
            opted_out=unit.contact.opted_out,
            tip_status=TipStatus(unit.tip.status) if unit.tip else None,
            new_reference=records.new_reference(),
            when_known=unit.tip is not None and unit.tip.when_ct is not None,
            last_tip=self._last_tip(unit, msg),
        )
        outcome = conv.step(before, inbound, context)
        if files and not refused and not msg.text.strip() and msg.album and self._album_answered(msg):
            # Another photo of an album the tipster was just thanked for: take it, say nothing twice.
            outcome = conv.Outcome(outcome.conversation, (), outcome.effects)
        replies = self._paced(unit, outcome, self._interpret(unit, outcome), pace)
        if msg.provider_intent is not None:
            # The provider recognised STOP, START or HELP and answered it itself (Twilio's Advanced
            # Opt-Out, its OptOutType): the effect applies, and the tipster gets no second answer.
            replies = ()
        self._attach(
            unit,
            outcome,
            attachments.Incoming(files, refused, msg.provider_message_id),
            was_submitted=before.state is State.SUBMITTED,
        )
        self._record_bot_replies(unit, outcome, replies)
        if unit.contact.pseudonym is not None and not unit.contact.opted_out and unit.contact.address_ct is None:
            records.store_address(unit.contact, unit.contact_key, msg.address)
        replies, queued = self._answer(unit, msg.channel, replies, outcome.conversation, inline=msg.answer_inline)
        queued = self._settle_provider_copy(unit, msg) or queued
        self._write(unit)
        search.index(unit.session, self.ctx.keyring, unit.words)  # one executemany, one HMAC per word
        self._shred(unit)
        moved = f"{before.state.value} -> {outcome.conversation.state.value}"
        return _Done(replies, queued, moved, unit.erased, forgotten=unit.forgotten)

    def _find_sender(self, session: Session, msg: InboundMessage, now: dt.datetime) -> Unit:
        """Remember the delivery (raise Duplicate if it was processed before, under any pepper
        version), then find the sender (created on first contact), their conversation and its
        current tip, locked."""
        keyring = self.ctx.keyring
        # Forgotten a week later, to the minute: a time to the second would time the message.
        delivery = f"{msg.channel}:{msg.delivery_id}"
        expires_at = to_minute(now) + DELIVERY_MEMORY
        pseudonyms = [keyring.pseudonym(msg.channel, msg.address, v)[1] for v in keyring.pseudonym_versions()]
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            remembered = _delivery_row(session, keyring, delivery, expires_at)
            try:
                contact_id = connection.execute(
                    _REMEMBER_AND_LOCK_SENDER, {**remembered, "pseudonyms": pseudonyms}
                ).scalar()
            except IntegrityError:
                raise Duplicate() from None  # the only constraint that statement can break: the delivery's key
            row = (
                None
                if contact_id is None
                else connection.execute(_READ_LOCKED_SENDER, {"contact_id": contact_id}).first()
            )
        else:  # one writer at a time (the write lock): nothing changes between reading and writing
            remember_once(session, keyring, delivery, expires_at)
            row = connection.execute(_FIND_SENDER, {"pseudonyms": pseudonyms}).first()
        if row is None:
            contact, contact_key = records.new_contact(
                keyring, msg.channel, keyring.pseudonym(msg.channel, msg.address), now
            )
            conversation = self._new_conversation(contact, now)
            try:
                records.insert_row(session, contact)
            except IntegrityError:
                raise _Retry() from None  # a concurrent first message created this sender
            records.insert_row(session, conversation)
            abuse.count_new_sender(session, msg.channel, now)
            unit = Unit(session, contact, keyring, conversation, None, now)
            unit.contact_key = contact_key
            return unit
        contact, found, tip = _loaded(session, row)
        contact.last_activity_at = to_minute(now)
        if found is not None:
            conversation = found
        else:
            conversation = self._new_conversation(contact, now)
            records.insert_row(session, conversation)
        unit = Unit(session, contact, keyring, conversation, tip, now)
        unit.tip_key = records.tip_dek(keyring, tip) if tip is not None else None
        return unit

    @staticmethod
    def _new_conversation(contact: Contact, now: dt.datetime) -> Conversation:
        return Conversation(
            contact_id=contact.id, state=State.NEW.value, language=DEFAULT_LANGUAGE, updated_at=to_minute(now)
        )

    @staticmethod
    def _state_of(unit: Unit) -> ConversationState:
        tip = unit.tip
        return ConversationState(
            State(unit.conversation.state), unit.conversation.language, tip.reference if tip else None
        )

    # The interpreter -----------------------------------------------------------------------------

    def _interpret(self, unit: Unit, outcome: conv.Outcome) -> tuple[str, ...]:
        """Carry out a step's effects and save the new conversation state.

        Returns the rendered replies (none for an opted-out sender).
        """
        for effect in outcome.effects:
            EFFECTS[type(effect)](self, unit, effect)
        if unit.tip is not None:
            unit.tip.updated_at = to_minute(unit.now)
        state = outcome.conversation
        if unit.kept_urgent and unit.tip is not None:
            # The kept tip stays the tipster's conversation, as after any submission: their next words
            # (an answer to a detective, most likely) join it rather than start a hidden draft.
            state = replace(state, state=State.SUBMITTED, tip_ref=unit.tip.reference)
        self._save_state(unit, state)
        if unit.contact.opted_out:
            return ()
        said = outcome.replies
        if unit.kept_urgent and unit.tip is not None:
            kept = Text.of("discard_kept_urgent", ref=unit.tip.reference)
            said = tuple(kept if text.key == "discarded" else text for text in said)
        return tuple(render(text, outcome.conversation.language, self.defaults) for text in said)

    @staticmethod
    def _save_state(unit: Unit, state: ConversationState) -> None:
        conversation = unit.conversation
        if unit.forgotten:
            unit.session.delete(conversation)
            return
        tip = unit.tip
        conversation.state = state.state.value
        conversation.language = state.language
        if tip is not None and tip.language != state.language:
            tip.language = state.language  # the badge on the tip: the language the tipster writes in
        conversation.tip_id = tip.id if tip is not None and state.tip_ref == tip.reference else None
        conversation.updated_at = to_minute(unit.now)

    def _create_draft(self, unit: Unit, effect: conv.CreateDraft) -> list[Row]:
        tip, key = records.new_tip(
            self.ctx.keyring,
            effect.reference,
            unit.contact.channel,
            unit.contact.id,
            unit.now,
            language=unit.conversation.language,
        )
        try:
            records.insert_row(unit.session, tip)
        except IntegrityError:
            raise _Retry() from None  # the reference collided (one in 594 million): try again
        unit.tip, unit.tip_key = tip, key
        if not effect.what:  # a draft begun with a photo has no description yet
            return []
        records.set_tip_field(tip, key, "what", effect.what)
        return [unit.say(MessageKind.TIPSTER, effect.what)]

    def _set_field(self, unit: Unit, effect: conv.SetField) -> list[Row]:
        tip, key = unit.open_tip()
        records.set_tip_field(tip, key, effect.name, effect.text)
        # A time understood from the description ("right now") is no message of the tipster's.
        return [unit.say(MessageKind.TIPSTER, effect.text)] if effect.said else []

    @staticmethod
    def _last_tip(unit: Unit, msg: InboundMessage) -> tuple[str, TipStatus] | None:
        """For STATUS without a tip in the conversation (after NEW or DISCARD): the sender's latest
        submitted tip. Looked up for that keyword only, off the hot path."""
        if unit.tip is not None or msg.media or conv.classify(msg.text) is not conv.Intent.STATUS:
            return None
        row = unit.session.execute(
            select(Tip.reference, Tip.status)
            .where(Tip.contact_id == unit.contact.id, Tip.status != TipStatus.DRAFT.value)
            .order_by(Tip.id.desc())
            .limit(1)
        ).first()
        return (row.reference, TipStatus(row.status)) if row is not None else None

    def _follow_up(self, unit: Unit, effect: conv.FollowUp) -> list[Row]:
        tip, _ = unit.open_tip()
        if not unit.quiet:
            tip.unread += 1
        return [unit.say(MessageKind.TIPSTER, effect.text)]

    def _submit(self, unit: Unit, effect: conv.Submit) -> list[Row]:
        tip, _ = unit.open_tip()
        if tip.status == TipStatus.DRAFT:
            tip.status = TipStatus.NEW
            tip.submitted_at = to_minute(unit.now)
            if tip.shown_seq is None:  # not already shown as urgent
                records.show(tip)
        return []

    def _attach_later(self, unit: Unit, effect: conv.Attach) -> list[Row]:
        return []  # the files are recorded by _attach, once every effect has run

    def _flag_urgent(self, unit: Unit, effect: conv.FlagUrgent) -> list[Row]:
        tip, _ = unit.open_tip()
        if not tip.urgent:
            tip.urgent = True
            records.show(tip)
        return []

    def _discard_draft(self, unit: Unit, effect: conv.DiscardDraft) -> list[Row]:
        tip = unit.tip
        if tip is None or tip.status != TipStatus.DRAFT:
            return []
        if tip.urgent:
            # Detectives see an urgent draft from its first message (records.visible_to_detectives) and
            # may have acted on it: it is no longer the tipster's to erase, and telling them "nothing was
            # sent" would be untrue. It is submitted as it stands, and the answer says so.
            unit.kept_urgent = True
            return self._submit(unit, conv.Submit(tip.reference))
        _, key = unit.open_tip()
        if self._deletes_copies(unit.contact.channel):
            for provider_id in attachments.abandon(unit.session, tip, key):
                outbox.enqueue_delete(unit.session, unit.contact, unit.contact_key, provider_id, unit.now)
        unit.conversation.tip_id = None
        unit.words = [(tip_id, text) for tip_id, text in unit.words if tip_id != tip.id]
        unit.session.delete(tip)
        unit.tip, unit.tip_key = None, None
        return []

    def _opt_out(self, unit: Unit, effect: conv.OptOut) -> list[Row]:
        unit.contact.opted_out = True
        records.erase_address(unit.contact, ErasedReason.STOP)
        outbox.cancel_sends(unit.session, unit.contact.id, ErasedReason.STOP)
        unit.erased = True  # the pseudonym stays, so that START finds the sender again
        return []

    def _opt_in(self, unit: Unit, effect: conv.OptIn) -> list[Row]:
        unit.contact.opted_out = False
        unit.contact.erased_reason = None
        return []

    def _forget(self, unit: Unit, effect: conv.Forget) -> list[Row]:
        # The tip stays; nothing links this sender to it any more (see _shred).
        unit.contact.pseudonym = None
        records.erase_address(unit.contact, ErasedReason.FORGET)
        outbox.cancel_sends(unit.session, unit.contact.id, ErasedReason.FORGET)
        unit.forgotten = unit.erased = True
        return []

    # After the effects ---------------------------------------------------------------------------

    def _attach(self, unit: Unit, outcome: conv.Outcome, incoming: attachments.Incoming, was_submitted: bool) -> None:
        """Record the message's files (and refusals) on the tip."""
        if unit.tip is None or unit.tip_key is None or not (incoming.files or incoming.refused):
            return
        attach = any(isinstance(e, conv.Attach) for e in outcome.effects)
        # To the minute: a file refused at once is settled as it is written (see attachments.py).
        rows = attachments.record(unit.tip, unit.tip_key, incoming, attach, to_minute(unit.now), unit.thread)
        unit.files.extend(rows)
        if rows and was_submitted and not unit.quiet and not any(isinstance(e, conv.FollowUp) for e in outcome.effects):
            unit.tip.unread += 1

    def _paced(self, unit: Unit, outcome: conv.Outcome, replies: tuple[str, ...], pace: abuse.Pace) -> tuple[str, ...]:
        """The replies a sender gets under abuse control (abuse.py): all of them within the limit;
        past it, one notice that every message is kept, then none. Confirmations that an erasure or
        an opt-in took effect are always sent."""
        if pace is abuse.Pace.ANSWER or any(isinstance(e, UNPACED_EFFECTS) for e in outcome.effects):
            return replies
        if pace is abuse.Pace.NOTICE and not unit.contact.opted_out:
            return (render(Text.of("slow_down"), outcome.conversation.language, self.defaults),)
        return ()

    @staticmethod
    def _record_bot_replies(unit: Unit, outcome: conv.Outcome, replies: tuple[str, ...]) -> None:
        if (
            unit.tip is not None
            and unit.tip_key is not None
            and any(isinstance(e, CONTENT_EFFECTS) for e in outcome.effects)
        ):
            for reply in replies:
                unit.say(MessageKind.BOT, reply)

    def _answer(
        self, unit: Unit, channel: str, replies: tuple[str, ...], state: ConversationState, inline: bool = True
    ) -> tuple[tuple[str, ...], bool]:
        """Replies for the webhook's response, or queued in the outbox when the channel cannot answer
        inline or nobody waits for this answer (`inline` False: a message taken in by reconciliation)."""
        if not replies or (inline and self.traits.replies_inline(channel)):
            return replies, False
        # Queued in this same transaction, so a stored tip never loses its acknowledgement.
        keyboard = keyboard_for(state)
        for n, reply in enumerate(replies):
            outbox.enqueue_send(
                unit.session,
                unit.contact,
                unit.contact_key,
                reply,
                unit.now,
                keyboard=keyboard if n == len(replies) - 1 else None,
            )
        return (), True

    def _settle_provider_copy(self, unit: Unit, msg: InboundMessage) -> bool:
        """Queue the deletion of the provider's copy; True when the dispatcher has work now."""
        if any(row["status"] == attachments.PENDING for row in unit.files):
            return True  # the media worker runs; the copy goes once the files are settled (attachments.py)
        if not msg.provider_message_id or not self._deletes_copies(msg.channel):
            return False
        due = unit.now + dt.timedelta(seconds=self.settings.provider_delete_delay_seconds)
        outbox.enqueue_delete(unit.session, unit.contact, unit.contact_key, msg.provider_message_id, due)
        return due <= unit.now  # wake the dispatcher only for work that is due already

    def _deletes_copies(self, channel: str) -> bool:
        return self.settings.provider_delete and self.traits.deletes_provider_copies(channel)

    def _shred(self, unit: Unit) -> None:
        """After an erasure, once everything this message queued is written: destroy the data key
        that sealed the address (and, for FORGET, the contact row with every link to its tips)."""
        if not unit.erased:
            return
        keyring = self.ctx.keyring
        if not unit.forgotten:
            unit.contact_key = records.shred_contact_key(unit.session, keyring, unit.contact, unit.contact_key)
            return
        self._queue_unfetched_copies(unit)
        unit.contact, unit.contact_key = records.forget_contact(unit.session, keyring, unit.contact, unit.contact_key)

    def _queue_unfetched_copies(self, unit: Unit) -> None:
        """Photos of the forgotten sender still to be fetched: once settled, their tip names no
        contact to delete their provider copies under, so queue those deletions now, for later."""
        if not self._deletes_copies(unit.contact.channel):
            return
        unfetched = exists().where(Attachment.tip_id == Tip.id, Attachment.source_ct.is_not(None))
        tips = unit.session.scalars(select(Tip).where(Tip.contact_id == unit.contact.id, unfetched)).all()
        due = unit.now + FORGOTTEN_FILES_DELETED_AFTER
        for tip in tips:
            key = records.tip_dek(self.ctx.keyring, tip)
            for provider_id in attachments.abandon(unit.session, tip, key):
                outbox.enqueue_delete(unit.session, unit.contact, unit.contact_key, provider_id, due)

    @staticmethod
    def _write(unit: Unit) -> None:
        """The message's writes in one batch: its thread entries and files, and the changed columns
        of the sender, the conversation and the tip. An erasure, rarer and with more to do (see
        `_shred`), leaves the rows to the session's unit of work."""
        session = unit.session
        if unit.tip is not None and any(row["kind"] in TIPSTER_KINDS for row in unit.thread):
            # Latest activity (the console's list order): something the tipster said, not a keyword.
            unit.tip.active_at = to_minute(unit.now)
        try:
            if unit.thread:
                session.connection().execute(_INSERT_MESSAGES, unit.thread)
            attachments.insert(session, unit.files)
            if not unit.erased:
                records.write_changes(session, unit.contact, unit.conversation, unit.tip)
            session.flush()  # what is left to the unit of work: an erasure's rows, a discarded draft's DELETE
        except IntegrityError:
            raise _Retry() from None  # a concurrent writer got there first: try again

    def _album_answered(self, msg: InboundMessage) -> bool:
        """Whether an earlier photo of this album (from this sender) was answered moments ago."""
        assert msg.album is not None
        key = self.ctx.keyring.keyed_hash("album", f"{msg.channel}:{msg.address}:{msg.album}")[1]
        now = time.monotonic()
        with self._albums_lock:
            if len(self._albums) > 10_000:
                self._albums = {k: v for k, v in self._albums.items() if now - v[0] < ALBUM_MEMORY}
            seen = self._albums.get(key)
            if seen is not None and now - seen[0] < ALBUM_MEMORY and seen[1] != msg.delivery_id:
                return True
            self._albums[key] = (now, msg.delivery_id)  # the first photo (or its retried transaction)
            return False

    def _erase(self, unit: Unit, erase_request: str, answer: bool = True) -> _Done:
        """The tipster asked to erase the chat at the provider: queue it, and say honestly what it
        does (unless the sender is muted or past their reply limit: the erasure is queued all the same)."""
        outbox.enqueue_delete(unit.session, unit.contact, unit.contact_key, erase_request, unit.now)
        reply = render(Text.of("erase_requested"), unit.conversation.language, self.defaults)
        if answer and unit.contact.address_ct is not None and not unit.contact.opted_out:
            outbox.enqueue_send(unit.session, unit.contact, unit.contact_key, reply, unit.now)
        return _Done((), True, "erase requested")

    def recipient_gone(self, channel: str, address: str, reason: ErasedReason) -> bool:
        """The provider says this sender can no longer be written to (e.g. they blocked the bot)."""
        keyring = self.ctx.keyring
        pseudonyms = [keyring.pseudonym(channel, address, v)[1] for v in keyring.pseudonym_versions()]
        with self.ctx.factory.begin() as session:
            found = select(Contact).where(Contact.pseudonym.in_(pseudonyms)).with_for_update(key_share=True)
            contact = session.scalars(found).first()
            if contact is None:
                return False
            outbox.mark_recipient_gone(session, keyring, contact, reason)
        checkpoint(self.ctx.factory)
        log.debug("%s sender can no longer be reached: %s", channel, reason)
        return True

    # Idle drafts ---------------------------------------------------------------------------------

    def expire_idle(self) -> int:
        """Submit drafts left idle as they stand (or drop empty ones); returns how many changed."""
        cutoff = to_minute(self.clock()) - dt.timedelta(minutes=self.settings.draft_idle_minutes)
        with self.ctx.factory() as session:
            ids = session.scalars(
                select(Conversation.contact_id).where(
                    Conversation.updated_at < cutoff, Conversation.state.in_(OPEN_STATES)
                )
            ).all()
        changed = sum(1 for contact_id in ids if self._expire_one(contact_id, cutoff))
        if changed:
            self.on_outbox()
        return changed

    def _expire_one(self, contact_id: str, cutoff: dt.datetime) -> bool:
        """Run `conversation.expire` for one idle sender through the same interpreter as a message."""
        keyring = self.ctx.keyring
        with self.ctx.factory.begin() as session:
            # The sender first, as intake locks it: otherwise a message arriving now (holding the tip,
            # about to write the conversation) and this expiry could each hold what the other waits for.
            contact = session.get(Contact, contact_id, with_for_update=records.ROW_LOCK)
            conversation = session.get(Conversation, contact_id, with_for_update=records.ROW_LOCK)
            if contact is None or conversation is None or conversation.updated_at >= cutoff:
                return False  # the tipster wrote meanwhile, or was forgotten
            tip = (
                session.get(Tip, conversation.tip_id, with_for_update=records.ROW_LOCK)
                if conversation.tip_id is not None
                else None
            )
            unit = Unit(session, contact, keyring, conversation, tip, self.clock())
            unit.tip_key = records.tip_dek(keyring, tip) if tip is not None else None
            outcome = conv.expire(self._state_of(unit))
            if outcome is None:
                return False
            replies = self._interpret(unit, outcome)
            self._queue_tracked(unit, replies)
        return True

    @staticmethod
    def _queue_tracked(unit: Unit, replies: tuple[str, ...]) -> None:
        """Send replies through the outbox, each shown in the thread with its delivery state."""
        if unit.contact.address_ct is None:
            return
        for body in replies:
            message_id = None
            if unit.tip is not None and unit.tip_key is not None:
                message = records.append_message(
                    unit.session, unit.tip, unit.tip_key, MessageKind.BOT, body, unit.now, delivery=ReplyDelivery.QUEUED
                )
                unit.session.flush()
                message_id = message.id
            outbox.enqueue_send(unit.session, unit.contact, unit.contact_key, body, unit.now, message_id)


EFFECTS: dict[type, Callable[[Intake, Unit, conv.Effect], list[Row]]] = {
    conv.CreateDraft: Intake._create_draft,  # type: ignore[dict-item]
    conv.SetField: Intake._set_field,  # type: ignore[dict-item]
    conv.FollowUp: Intake._follow_up,  # type: ignore[dict-item]
    conv.Submit: Intake._submit,  # type: ignore[dict-item]
    conv.Attach: Intake._attach_later,  # type: ignore[dict-item]
    conv.FlagUrgent: Intake._flag_urgent,  # type: ignore[dict-item]
    conv.DiscardDraft: Intake._discard_draft,  # type: ignore[dict-item]
    conv.OptOut: Intake._opt_out,  # type: ignore[dict-item]
    conv.OptIn: Intake._opt_in,  # type: ignore[dict-item]
    conv.Forget: Intake._forget,  # type: ignore[dict-item]
}


def forget_deliveries(session: Session, now: dt.datetime) -> int:
    """Drop remembered delivery ids past their bounded lifetime."""
    result = session.execute(delete(ProcessedDelivery).where(ProcessedDelivery.expires_at < now))
    return rowcount(result)
