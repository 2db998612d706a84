"""What detectives may ask of the core: read tips and threads, reply, keep notes.

This is the only module that decrypts tip content for people. It never returns a return address,
a pseudonym or a contact id: a tip's sender is an alias ("Tipster 4F2A") and a channel.
The review console (and, until it exists, scripts and tests) call these functions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tipline import outbox, store
from tipline.catalog import Text, render
from tipline.config import Settings
from tipline.crypto import Keyring
from tipline.models import Contact, Conversation, Message, Tip, utcnow

MAX_REPLY_CHARS = 1000
REPLY_BLOCKERS = {
    "stop": "the tipster opted out (STOP); no message can be sent",
    "forget": "the tipster asked to be forgotten; their return address is erased",
    "retention": "the tipster's return address expired under the retention policy",
    "blocked": "the tipster blocked the bot; no message can be sent",
    "no_contact": "this tip has no return address",
}


class RepliesImpossible(Exception):
    """The tipster cannot be written to; `reason` says why in words a detective understands."""

    def __init__(self, code: str):
        super().__init__(REPLY_BLOCKERS.get(code, code))
        self.code = code
        self.reason = REPLY_BLOCKERS.get(code, code)


class TipNotFound(Exception):
    pass


@dataclass(frozen=True)
class ThreadEntry:
    seq: int
    kind: str  # tipster, bot, agency, note
    text: str
    at: dt.datetime
    delivery: str | None


@dataclass(frozen=True)
class TipSummary:
    reference: str
    alias: str
    channel: str
    status: str
    urgent: bool
    submitted_at: dt.datetime | None
    updated_at: dt.datetime
    unread: int


@dataclass(frozen=True)
class TipDetail:
    summary: TipSummary
    what: str | None
    where: str | None
    when: str | None
    thread: tuple[ThreadEntry, ...]
    replies_blocked: str | None  # None when a reply can be sent, otherwise the reason


def _summary(keyring: Keyring, tip: Tip) -> TipSummary:
    return TipSummary(
        reference=tip.reference, alias=store.alias(keyring, tip.reference), channel=tip.channel,
        status=tip.status, urgent=tip.urgent, submitted_at=tip.submitted_at, updated_at=tip.updated_at,
        unread=tip.unread,
    )


def _blocker(contact: Contact | None) -> str | None:
    if contact is None:
        return "no_contact"
    if contact.opted_out:
        return contact.erased_reason or "stop"
    if contact.pseudonym is None:
        return "forget"
    if contact.address_ct is None:
        return contact.erased_reason or "no_contact"
    return None


def list_tips(factory: sessionmaker[Session], keyring: Keyring, page: int = 1, per_page: int = 50) -> tuple[list[TipSummary], int]:
    """Submitted tips, newest first, one page at a time; no decryption at all."""
    with factory() as session:
        total = session.scalar(select(func.count()).select_from(Tip).where(Tip.status != "draft")) or 0
        tips = session.scalars(
            select(Tip).where(Tip.status != "draft").order_by(Tip.id.desc()).offset((page - 1) * per_page).limit(per_page)
        ).all()
        return [_summary(keyring, t) for t in tips], total


def read_tip(factory: sessionmaker[Session], keyring: Keyring, reference: str, mark_read: bool = True) -> TipDetail:
    with factory.begin() as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference, Tip.status != "draft")).first()
        if tip is None:
            raise TipNotFound(reference)
        key = store.tip_dek(keyring, tip)
        messages = session.scalars(select(Message).where(Message.tip_id == tip.id).order_by(Message.seq)).all()
        thread = tuple(
            ThreadEntry(m.seq, m.kind, store.read_message(tip, key, m), m.created_at, m.delivery) for m in messages
        )
        contact = session.get(Contact, tip.contact_id) if tip.contact_id else None
        detail = TipDetail(
            summary=_summary(keyring, tip),
            what=store.read_tip_field(tip, key, "what"),
            where=store.read_tip_field(tip, key, "where"),
            when=store.read_tip_field(tip, key, "when"),
            thread=thread,
            replies_blocked=REPLY_BLOCKERS.get(b, b) if (b := _blocker(contact)) else None,
        )
        if mark_read:
            tip.unread = 0
        return detail


def reply(
    factory: sessionmaker[Session], keyring: Keyring, settings: Settings, reference: str, text: str,
    author_id: int | None = None, now: dt.datetime | None = None,
) -> int:
    """Queue a detective's reply to the tipster; returns the thread message id.

    Raises RepliesImpossible (with a plain reason) when the tipster opted out, asked to be
    forgotten, or their address expired; ValueError for an empty or overlong reply.
    """
    text = text.strip()
    if not text:
        raise ValueError("the reply is empty")
    if len(text) > MAX_REPLY_CHARS:
        raise ValueError(f"the reply is longer than {MAX_REPLY_CHARS} characters")
    now = now or utcnow()
    with factory.begin() as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference, Tip.status != "draft").with_for_update()).first()
        if tip is None:
            raise TipNotFound(reference)
        contact = session.get(Contact, tip.contact_id) if tip.contact_id else None
        blocker = _blocker(contact)
        if blocker is not None or contact is None:
            raise RepliesImpossible(blocker or "no_contact")
        conversation = session.get(Conversation, contact.id)
        language = conversation.language if conversation is not None else "en"
        if conversation is not None and conversation.tip_id != tip.id and conversation.state in ("new", "submitted"):
            # The tipster moved on from this tip; their answer should come back to it, unless they
            # are in the middle of a new draft, which we must not hijack.
            conversation.tip_id = tip.id
            conversation.state = "submitted"
        key = store.tip_dek(keyring, tip)
        message = store.append_message(session, tip, key, "agency", text, now, author_id=author_id, delivery="queued")
        session.flush()
        body = render(Text.of("agency_reply", text=text), language, {"agency": settings.agency_name})
        outbox.enqueue_send(session, contact, store.contact_dek(keyring, contact), body, now, message.id)
        return message.id


def add_note(
    factory: sessionmaker[Session], keyring: Keyring, reference: str, text: str, author_id: int | None = None,
    now: dt.datetime | None = None,
) -> int:
    """Add an internal note to a tip's thread; never sent to the tipster."""
    text = text.strip()
    if not text:
        raise ValueError("the note is empty")
    with factory.begin() as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference).with_for_update()).first()
        if tip is None:
            raise TipNotFound(reference)
        message = store.append_message(session, tip, store.tip_dek(keyring, tip), "note", text, now or utcnow(), author_id=author_id)
        session.flush()
        return message.id
