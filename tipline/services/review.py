"""What detectives may ask of the core: read tips and threads, reply, keep notes.

This is the only module that decrypts tip content for people. It never returns a return address,
a pseudonym or a contact id: a tip's sender is an alias ("Tipster 4F2A") and a channel.
The review console (and, until it exists, scripts and tests) call these functions.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.services import attachments, audit, outbox
from tipline.storage import records
from tipline.core.catalog import Text, render
from tipline.config import Settings
from tipline.core.crypto import Keyring
from tipline.storage.db import read_only
from tipline.storage.models import Attachment, Contact, Conversation, Message, Tip, User, utcnow

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
class AttachmentView:
    """What the console shows of a photo: never the provider's reference or the original's name."""

    id: str
    status: str  # pending, fetching, stored, refused, failed
    reason: str | None
    content_type: str | None
    source_format: str | None
    width: int | None
    height: int | None
    size: int | None
    frames: int | None
    attempts: int


@dataclass(frozen=True)
class ThreadEntry:
    seq: int
    kind: str  # tipster, bot, agency, note, media
    text: str
    at: dt.datetime
    delivery: str | None
    author: str | None = None  # console username for agency replies and notes
    attachment: AttachmentView | None = None  # for kind "media"


def _attachment_views(session: Session, tip: Tip) -> dict[int, AttachmentView]:
    rows = session.scalars(select(Attachment).where(Attachment.tip_id == tip.id)).all()
    return {
        a.seq: AttachmentView(a.id, a.status, a.reason, a.content_type, a.source_format, a.width, a.height, a.size,
                              a.frames, a.attempts)
        for a in rows
    }


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
    category: str | None = None
    assignee: str | None = None
    assignee_id: int | None = None
    photos: int = 0  # cleaned photos stored with the tip (shown in the list)


@dataclass(frozen=True)
class TipDetail:
    summary: TipSummary
    what: str | None
    where: str | None
    when: str | None
    thread: tuple[ThreadEntry, ...]
    replies_blocked: str | None  # None when a reply can be sent, otherwise the reason


def _summary(keyring: Keyring, tip: Tip, assignee: str | None = None) -> TipSummary:
    return TipSummary(
        reference=tip.reference, alias=records.alias(tip), channel=tip.channel,
        status=tip.status, urgent=tip.urgent, submitted_at=tip.submitted_at, updated_at=tip.updated_at,
        unread=tip.unread, category=tip.category, assignee=assignee, assignee_id=tip.assignee_id,
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


STATUSES = ("new", "in_review", "actionable", "closed")
STATUS_LABELS = {"new": "New", "in_review": "In review", "actionable": "Actionable", "closed": "Closed"}
CATEGORIES = ("drugs", "violence", "weapons", "property", "fraud", "traffic", "missing person", "other")


@dataclass(frozen=True)
class TipFilter:
    status: str | None = None
    urgent: bool | None = None
    channel: str | None = None
    category: str | None = None
    assignee_id: int | None = None  # 0 means "unassigned"
    reference: str | None = None


def _filtered(query, flt: TipFilter):  # type: ignore[no-untyped-def]
    query = query.where(Tip.status != "draft")
    if flt.status:
        query = query.where(Tip.status == flt.status)
    if flt.urgent is not None:
        query = query.where(Tip.urgent.is_(flt.urgent))
    if flt.channel:
        query = query.where(Tip.channel == flt.channel)
    if flt.category:
        query = query.where(Tip.category == flt.category)
    if flt.assignee_id == 0:
        query = query.where(Tip.assignee_id.is_(None))
    elif flt.assignee_id:
        query = query.where(Tip.assignee_id == flt.assignee_id)
    if flt.reference:
        query = query.where(Tip.reference == flt.reference.strip().upper())
    return query


def list_tips(
    factory: sessionmaker[Session], keyring: Keyring, page: int = 1, per_page: int = 50, flt: TipFilter | None = None,
) -> tuple[list[TipSummary], int]:
    """Submitted tips, newest first, one page at a time; no decryption at all."""
    flt = flt or TipFilter()
    with read_only(factory) as session:
        total = session.scalar(_filtered(select(func.count()).select_from(Tip), flt)) or 0
        rows = session.execute(
            _filtered(select(Tip, User.username).outerjoin(User, User.id == Tip.assignee_id), flt)
            .order_by(Tip.id.desc()).offset((max(page, 1) - 1) * per_page).limit(per_page)
        ).all()
        ids = [tip.id for tip, _ in rows]
        photos = dict(session.execute(
            select(Attachment.tip_id, func.count()).where(Attachment.tip_id.in_(ids), Attachment.status == "stored")
            .group_by(Attachment.tip_id)
        ).all()) if ids else {}
        return [replace(_summary(keyring, tip, assignee), photos=photos.get(tip.id, 0)) for tip, assignee in rows], total


def latest_change(factory: sessionmaker[Session]) -> dict[str, int]:
    """A cheap fingerprint of the tip list, for live updates: changes whenever a tip arrives or moves."""
    with read_only(factory) as session:
        newest, messages = session.execute(
            select(func.max(Tip.id), func.coalesce(func.sum(Tip.message_count), 0)).where(Tip.status != "draft")
        ).one()
        return {"newest": int(newest or 0), "messages": int(messages or 0)}


def thread_since(
    factory: sessionmaker[Session], keyring: Keyring, reference: str, after_seq: int,
) -> tuple[list[ThreadEntry], dict[int, str | None], dict[int, str]]:
    """Thread entries after `after_seq`, the delivery state of every agency reply, and the state of
    every photo (which changes without a new entry while it is fetched): for live updates."""
    with read_only(factory) as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference, Tip.status != "draft")).first()
        if tip is None:
            raise TipNotFound(reference)
        key = records.tip_dek(keyring, tip)
        messages = session.scalars(select(Message).where(Message.tip_id == tip.id).order_by(Message.seq)).all()
        files = _attachment_views(session, tip)
        new = [
            ThreadEntry(m.seq, m.kind, records.read_message(tip, key, m), m.created_at, m.delivery, None, files.get(m.seq))
            for m in messages if m.seq > after_seq
        ]
        deliveries = {m.seq: m.delivery for m in messages if m.kind == "agency"}
        photos = {seq: "pending" if view.status == "fetching" else view.status for seq, view in files.items()}
        return new, deliveries, photos


def triage(
    factory: sessionmaker[Session], reference: str, *, status: str | None = None, category: str | None = None,
    assignee_id: int | None = None, clear_assignee: bool = False, actor: str | None = None,
    keyring: Keyring | None = None,
) -> dict[str, tuple[object, object]]:
    """Change a tip's status, category or assignee; returns what changed (old, new), audited."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    if category is not None and category not in CATEGORIES and category != "":
        raise ValueError("unknown category")
    with factory.begin() as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference, Tip.status != "draft").with_for_update()).first()
        if tip is None:
            raise TipNotFound(reference)
        changes: dict[str, tuple[object, object]] = {}
        if status is not None and status != tip.status:
            changes["status"] = (tip.status, status)
            tip.status = status
        if category is not None and (category or None) != tip.category:
            changes["category"] = (tip.category, category or None)
            tip.category = category or None
        if clear_assignee and tip.assignee_id is not None:
            changes["assignee"] = (tip.assignee_id, None)
            tip.assignee_id = None
        elif assignee_id is not None and assignee_id != tip.assignee_id:
            user = session.get(User, assignee_id)
            if user is None or "detective" not in user.role_set or user.disabled:
                raise ValueError("tips can be assigned to active detectives only")
            changes["assignee"] = (tip.assignee_id, assignee_id)
            tip.assignee_id = assignee_id
        if changes and keyring is not None:
            audit.record(session, keyring, "tip.triage", actor=actor, object_type="tip", object_id=reference,
                         detail={k: [str(v[0]), str(v[1])] for k, v in changes.items()})
        return changes


def detectives(factory: sessionmaker[Session]) -> list[tuple[int, str]]:
    with read_only(factory) as session:
        users = session.scalars(select(User).where(User.disabled.is_(False)).order_by(User.username)).all()
        return [(u.id, u.username) for u in users if "detective" in u.role_set]


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str
    filename: str  # made up here from the tip reference: never the tipster's file name


def read_photo(
    factory: sessionmaker[Session], keyring: Keyring, reference: str, attachment_id: str, *, actor: str,
    download: bool = False,
) -> Photo:
    """A cleaned photo of a tip, decrypted; the viewing (or download) is audited in the same transaction."""
    with factory.begin() as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference, Tip.status != "draft")).first()
        attachment = session.get(Attachment, attachment_id) if tip is not None else None
        if tip is None or attachment is None or attachment.tip_id != tip.id or attachment.status != "stored":
            raise TipNotFound(reference)
        data = attachments.open_image(keyring, tip, attachment)
        audit.record(session, keyring, "tip.photo_download" if download else "tip.photo_view", actor=actor,
                     object_type="tip", object_id=reference, detail={"entry": attachment.seq})
        extension = "png" if attachment.content_type == "image/png" else "jpg"
        return Photo(data, attachment.content_type or "image/jpeg", f"{reference}-photo-{attachment.seq}.{extension}")


def read_tip(
    factory: sessionmaker[Session], keyring: Keyring, reference: str, mark_read: bool = True, actor: str | None = None,
) -> TipDetail:
    """One tip and its whole thread, decrypted. With an `actor`, the view is audited in the same
    transaction, so content never leaves unless its "viewed" record committed."""
    with factory.begin() as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference, Tip.status != "draft")).first()
        if tip is None:
            raise TipNotFound(reference)
        key = records.tip_dek(keyring, tip)
        rows = session.execute(
            select(Message, User.username).outerjoin(User, User.id == Message.author_id)
            .where(Message.tip_id == tip.id).order_by(Message.seq)
        ).all()
        files = _attachment_views(session, tip)
        thread = tuple(
            ThreadEntry(m.seq, m.kind, records.read_message(tip, key, m), m.created_at, m.delivery, author, files.get(m.seq))
            for m, author in rows
        )
        contact = session.get(Contact, tip.contact_id) if tip.contact_id else None
        assignee = session.get(User, tip.assignee_id) if tip.assignee_id else None
        detail = TipDetail(
            summary=_summary(keyring, tip, assignee.username if assignee else None),
            what=records.read_tip_field(tip, key, "what"),
            where=records.read_tip_field(tip, key, "where"),
            when=records.read_tip_field(tip, key, "when"),
            thread=thread,
            replies_blocked=REPLY_BLOCKERS.get(b, b) if (b := _blocker(contact)) else None,
        )
        if mark_read:
            tip.unread = 0
        if actor is not None:
            audit.record(session, keyring, "tip.view", actor=actor, object_type="tip", object_id=reference)
        return detail


def reply(
    factory: sessionmaker[Session], keyring: Keyring, settings: Settings, reference: str, text: str,
    author_id: int | None = None, now: dt.datetime | None = None, actor: str | None = None,
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
        key = records.tip_dek(keyring, tip)
        message = records.append_message(session, tip, key, "agency", text, now, author_id=author_id, delivery="queued")
        session.flush()
        body = render(Text.of("agency_reply", text=text), language, {"agency": settings.agency_name})
        outbox.enqueue_send(session, contact, records.contact_dek(keyring, contact), body, now, message.id)
        if actor is not None:
            audit.record(session, keyring, "tip.reply", actor=actor, object_type="tip", object_id=reference)
        return message.id


def add_note(
    factory: sessionmaker[Session], keyring: Keyring, reference: str, text: str, author_id: int | None = None,
    now: dt.datetime | None = None, actor: str | None = None,
) -> int:
    """Add an internal note to a tip's thread; never sent to the tipster."""
    text = text.strip()
    if not text:
        raise ValueError("the note is empty")
    with factory.begin() as session:
        tip = session.scalars(select(Tip).where(Tip.reference == reference).with_for_update()).first()
        if tip is None:
            raise TipNotFound(reference)
        message = records.append_message(session, tip, records.tip_dek(keyring, tip), "note", text, now or utcnow(), author_id=author_id)
        session.flush()
        if actor is not None:
            audit.record(session, keyring, "tip.note", actor=actor, object_type="tip", object_id=reference)
        return message.id
