"""What detectives may ask of the core: read tips and threads, reply, keep notes, triage.

This is the only module that decrypts tip content for people. It never returns a return address,
a pseudonym or a contact id: a tip's sender is an alias ("Tipster 4F2A") and a channel.
The review console, scripts and tests call these functions as `review.action(ctx, ...)`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from tipline.core import segments
from tipline.core.catalog import DEFAULT_LANGUAGE, Text, render
from tipline.core.conversation import State
from tipline.core.vocabulary import AttachmentStatus, ErasedReason, MessageKind, ReplyDelivery, Role, TipStatus
from tipline.services import attachments, audit, outbox
from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.db import read_only
from tipline.storage.models import Attachment, Contact, Conversation, Message, Tip, User

MAX_REPLY_CHARS = 1000
NO_CONTACT = "no_contact"
REPLY_BLOCKERS: dict[str, str] = {
    ErasedReason.STOP: "the tipster opted out (STOP); no message can be sent",
    ErasedReason.FORGET: "the tipster asked to be forgotten; their return address is erased",
    ErasedReason.RETENTION: "the tipster's return address expired under the retention policy",
    ErasedReason.BLOCKED: "the tipster blocked the bot; no message can be sent",
    ErasedReason.UNREACHABLE: "the provider says the tipster's address cannot receive messages",
    NO_CONTACT: "the tipster asked to be forgotten: nothing links this tip to them any more",
}

STATUSES = TipStatus.submitted()
STATUS_LABELS = {status.value: status.label for status in STATUSES}
CATEGORIES = ("drugs", "violence", "weapons", "property", "fraud", "traffic", "missing person", "other")


class RepliesImpossible(Exception):
    """The tipster cannot be written to; `reason` says why in words a detective understands."""

    def __init__(self, code: str):
        super().__init__(REPLY_BLOCKERS.get(code, code))
        self.code = code
        self.reason = REPLY_BLOCKERS.get(code, code)


class TipNotFound(Exception):
    """No submitted tip has this reference (drafts are never found)."""


@dataclass(frozen=True)
class AttachmentView:
    """What the console shows of a photo: never the provider's reference or the original's name."""

    id: str
    status: str  # an AttachmentStatus
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
    kind: str  # a MessageKind
    text: str
    at: dt.datetime
    delivery: str | None  # a ReplyDelivery, for texts sent to the tipster
    author: str | None = None  # console username for agency replies and notes
    attachment: AttachmentView | None = None  # for kind MessageKind.MEDIA


@dataclass(frozen=True)
class TipSummary:
    reference: str
    alias: str
    channel: str
    status: str  # a TipStatus other than DRAFT
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
    # The tip's sender is muted (abuse.py): their messages are stored but not answered. None when no
    # sender is linked to the tip any more (forgotten), so there is nothing to mute.
    sender_muted: bool | None = None


@dataclass(frozen=True)
class TipFilter:
    status: TipStatus | None = None
    urgent: bool | None = None
    channel: str | None = None
    category: str | None = None
    assignee_id: int | None = None  # 0 means "unassigned"
    reference: str | None = None


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str
    filename: str  # made up here from the tip reference: never the tipster's file name


# Reading ----------------------------------------------------------------------------------------


def _tip(session: Session, reference: str, *, lock: bool = False) -> Tip:
    tip = records.submitted_tip(session, reference, lock=lock)
    if tip is None:
        raise TipNotFound(reference)
    return tip


def _summary(tip: Tip, assignee: str | None = None, photos: int = 0) -> TipSummary:
    return TipSummary(
        reference=tip.reference,
        alias=records.alias(tip),
        channel=tip.channel,
        status=tip.status,
        urgent=tip.urgent,
        submitted_at=tip.submitted_at,
        updated_at=tip.updated_at,
        unread=tip.unread,
        category=tip.category,
        assignee=assignee,
        assignee_id=tip.assignee_id,
        photos=photos,
    )


def _attachment_views(session: Session, tip: Tip) -> dict[int, AttachmentView]:
    rows = session.scalars(select(Attachment).where(Attachment.tip_id == tip.id)).all()
    return {
        a.seq: AttachmentView(
            a.id, a.status, a.reason, a.content_type, a.source_format, a.width, a.height, a.size, a.frames, a.attempts
        )
        for a in rows
    }


def _entry(tip: Tip, key: bytes, message: Message, author: str | None, files: dict[int, AttachmentView]) -> ThreadEntry:
    return ThreadEntry(
        message.seq,
        message.kind,
        records.read_message(tip, key, message),
        message.created_at,
        message.delivery,
        author,
        files.get(message.seq),
    )


def _blocker(contact: Contact | None) -> str | None:
    """Why the tipster behind a tip cannot be written to (a REPLY_BLOCKERS code), or None."""
    if contact is None:
        return NO_CONTACT
    if contact.opted_out:
        return contact.erased_reason or ErasedReason.STOP
    if contact.pseudonym is None:
        return contact.erased_reason or ErasedReason.FORGET
    if contact.address_ct is None:
        return contact.erased_reason or NO_CONTACT
    return None


def _conditions(flt: TipFilter) -> list[ColumnElement[bool]]:
    """The WHERE clauses of a tip list: submitted tips only, narrowed by the filter."""
    wanted: list[ColumnElement[bool]] = [Tip.status != TipStatus.DRAFT]
    if flt.status:
        wanted.append(Tip.status == flt.status)
    if flt.urgent is not None:
        wanted.append(Tip.urgent.is_(flt.urgent))
    if flt.channel:
        wanted.append(Tip.channel == flt.channel)
    if flt.category:
        wanted.append(Tip.category == flt.category)
    if flt.assignee_id == 0:
        wanted.append(Tip.assignee_id.is_(None))
    elif flt.assignee_id:
        wanted.append(Tip.assignee_id == flt.assignee_id)
    if flt.reference:
        wanted.append(Tip.reference == flt.reference.strip().upper())
    return wanted


def list_tips(
    ctx: ServiceContext,
    page: int = 1,
    per_page: int = 50,
    flt: TipFilter | None = None,
) -> tuple[list[TipSummary], int]:
    """Submitted tips, newest first, one page at a time, and how many match; no decryption at all."""
    where = _conditions(flt or TipFilter())
    with read_only(ctx.factory) as session:
        total = session.scalar(select(func.count()).select_from(Tip).where(*where)) or 0
        rows = session.execute(
            select(Tip, User.username)
            .outerjoin(User, User.id == Tip.assignee_id)
            .where(*where)
            .order_by(Tip.id.desc())
            .offset((max(page, 1) - 1) * per_page)
            .limit(per_page)
        ).all()
        ids = [tip.id for tip, _ in rows]
        photos: dict[int, int] = (
            dict(
                session.execute(
                    select(Attachment.tip_id, func.count())
                    .where(Attachment.tip_id.in_(ids), Attachment.status == AttachmentStatus.STORED)
                    .group_by(Attachment.tip_id)
                ).all()
            )
            if ids
            else {}
        )
        return [_summary(tip, assignee, photos.get(tip.id, 0)) for tip, assignee in rows], total


def latest_change(ctx: ServiceContext) -> dict[str, int]:
    """A cheap fingerprint of the tip list, for live updates: changes whenever a tip arrives or moves."""
    with read_only(ctx.factory) as session:
        newest, messages = session.execute(
            select(func.max(Tip.id), func.coalesce(func.sum(Tip.message_count), 0)).where(Tip.status != TipStatus.DRAFT)
        ).one()
        return {"newest": int(newest or 0), "messages": int(messages or 0)}


def thread_since(
    ctx: ServiceContext,
    reference: str,
    after_seq: int,
    *,
    actor: str | None = None,
) -> tuple[list[ThreadEntry], dict[int, str | None], dict[int, str]]:
    """Thread entries after `after_seq`, the delivery state of every agency reply, and the state of
    every photo (which changes without a new entry while it is fetched): for live updates.

    With an `actor`, entries are returned only once a "tip.view" entry naming the reader, the tip
    and the entries read has committed. A poll that finds nothing new carries no tip content
    (delivery and photo states only) and writes nothing, so polling does not grow the audit log.
    """
    entries, deliveries, photos = _thread_since(ctx, reference, after_seq)
    if entries and actor is not None:
        audit.log_event(
            ctx,
            "tip.view",
            actor=actor,
            object_type="tip",
            object_id=reference,
            detail={"entries": [entries[0].seq, entries[-1].seq], "live": True},
        )
    return entries, deliveries, photos


def _thread_since(
    ctx: ServiceContext, reference: str, after_seq: int
) -> tuple[list[ThreadEntry], dict[int, str | None], dict[int, str]]:
    # Read without the write lock (polling is frequent); the audit entry, when one is due, is
    # written afterwards but before anything is returned.
    with read_only(ctx.factory) as session:
        tip = _tip(session, reference)
        key = records.tip_dek(ctx.keyring, tip)
        messages = session.scalars(select(Message).where(Message.tip_id == tip.id).order_by(Message.seq)).all()
        files = _attachment_views(session, tip)
        new = [_entry(tip, key, m, None, files) for m in messages if m.seq > after_seq]
        deliveries = {m.seq: m.delivery for m in messages if m.kind == MessageKind.AGENCY}
        # A photo being fetched is still pending as far as a detective is concerned.
        photos = {
            seq: AttachmentStatus.PENDING.value if view.status == AttachmentStatus.FETCHING else view.status
            for seq, view in files.items()
        }
        return new, deliveries, photos


def read_tip(ctx: ServiceContext, reference: str, mark_read: bool = True, actor: str | None = None) -> TipDetail:
    """One tip and its whole thread, decrypted. With an `actor`, the view is audited in the same
    transaction, so content never leaves unless its "viewed" record committed."""
    with ctx.factory.begin() as session:
        tip = _tip(session, reference)
        key = records.tip_dek(ctx.keyring, tip)
        rows = session.execute(
            select(Message, User.username)
            .outerjoin(User, User.id == Message.author_id)
            .where(Message.tip_id == tip.id)
            .order_by(Message.seq)
        ).all()
        files = _attachment_views(session, tip)
        thread = tuple(_entry(tip, key, m, author, files) for m, author in rows)
        contact = session.get(Contact, tip.contact_id) if tip.contact_id else None
        assignee = session.get(User, tip.assignee_id) if tip.assignee_id else None
        blocker = _blocker(contact)
        detail = TipDetail(
            summary=_summary(tip, assignee.username if assignee else None),
            what=records.read_tip_field(tip, key, "what"),
            where=records.read_tip_field(tip, key, "where"),
            when=records.read_tip_field(tip, key, "when"),
            thread=thread,
            replies_blocked=REPLY_BLOCKERS.get(blocker, blocker) if blocker else None,
            # This tip's own mute only: showing the sender's would tell which tips share a sender.
            sender_muted=tip.sender_muted if contact is not None and contact.pseudonym is not None else None,
        )
        if mark_read:
            tip.unread = 0
        if actor is not None:
            audit.record(session, ctx.keyring, "tip.view", actor=actor, object_type="tip", object_id=reference)
        return detail


def read_photo(ctx: ServiceContext, reference: str, attachment_id: str, *, actor: str, download: bool = False) -> Photo:
    """A cleaned photo of a tip, decrypted; the viewing (or download) is audited in the same transaction."""
    with ctx.factory.begin() as session:
        tip = _tip(session, reference)
        attachment = session.get(Attachment, attachment_id)
        if attachment is None or attachment.tip_id != tip.id or attachment.status != AttachmentStatus.STORED:
            raise TipNotFound(reference)
        data = attachments.open_image(ctx.keyring, tip, attachment)
        audit.record(
            session,
            ctx.keyring,
            "tip.photo_download" if download else "tip.photo_view",
            actor=actor,
            object_type="tip",
            object_id=reference,
            detail={"entry": attachment.seq},
        )
        extension = "png" if attachment.content_type == "image/png" else "jpg"
        return Photo(data, attachment.content_type or "image/jpeg", f"{reference}-photo-{attachment.seq}.{extension}")


def detectives(ctx: ServiceContext) -> list[tuple[int, str]]:
    """Active detectives (id, username), who tips may be assigned to."""
    with read_only(ctx.factory) as session:
        users = session.scalars(select(User).where(User.disabled.is_(False)).order_by(User.username)).all()
        return [(u.id, u.username) for u in users if Role.DETECTIVE in u.role_set]


# Triage -----------------------------------------------------------------------------------------

Changes = dict[str, tuple[object, object]]


def _checked_status(status: str | None) -> TipStatus | None:
    if status is None:
        return None
    if status not in STATUSES:
        raise ValueError(f"status must be one of {', '.join(STATUSES)}")
    return TipStatus(status)


def _set_status(tip: Tip, status: TipStatus | None) -> Changes:
    if status is None or status == tip.status:
        return {}
    old, tip.status = tip.status, status
    return {"status": (old, status)}


def _set_category(tip: Tip, category: str | None) -> Changes:
    """`category` "" clears it, None leaves it."""
    if category is None or (category or None) == tip.category:
        return {}
    old, tip.category = tip.category, category or None
    return {"category": (old, tip.category)}


def _set_assignee(session: Session, tip: Tip, assignee_id: int | None, clear: bool) -> Changes:
    if clear:
        if tip.assignee_id is None:
            return {}
        cleared, tip.assignee_id = tip.assignee_id, None
        return {"assignee": (cleared, None)}
    if assignee_id is None or assignee_id == tip.assignee_id:
        return {}
    user = session.get(User, assignee_id)
    if user is None or Role.DETECTIVE not in user.role_set or user.disabled:
        raise ValueError("tips can be assigned to active detectives only")
    old, tip.assignee_id = tip.assignee_id, assignee_id
    return {"assignee": (old, assignee_id)}


def triage(
    ctx: ServiceContext,
    reference: str,
    *,
    status: str | None = None,
    category: str | None = None,
    assignee_id: int | None = None,
    clear_assignee: bool = False,
    actor: str | None = None,
) -> Changes:
    """Change a tip's status, category or assignee; returns what changed as (old, new).

    With an `actor`, the change is audited in the same transaction. Raises ValueError (and changes
    nothing) for an unknown status or category, or an assignee who is not an active detective.
    """
    wanted_status = _checked_status(status)
    if category is not None and category not in CATEGORIES and category != "":
        raise ValueError("unknown category")
    with ctx.factory.begin() as session:
        tip = _tip(session, reference, lock=True)
        changes = {
            **_set_status(tip, wanted_status),
            **_set_category(tip, category),
            **_set_assignee(session, tip, assignee_id, clear_assignee),
        }
        if changes and actor is not None:
            audit.record(
                session,
                ctx.keyring,
                "tip.triage",
                actor=actor,
                object_type="tip",
                object_id=reference,
                detail={k: [str(old), str(new)] for k, (old, new) in changes.items()},
            )
        return changes


def set_muted(ctx: ServiceContext, reference: str, muted: bool, *, actor: str) -> bool:
    """Mute (or unmute) the sender of a tip: their messages are still stored, but get no answer from
    the bot and bump no unread count (abuse.py). The detective acts on the tip and never learns who
    the sender is; the change is audited in the same transaction. Returns whether anything changed.
    Raises ValueError when no sender is linked to the tip any more.

    The mute is recorded on the tip and shown on that tip only; the sender stays muted while any of
    their tips is. Were the sender's state shown, or undone from another tip, a detective could mute
    one tip and look which others changed: aliases are per tip so that tips cannot be linked."""
    with ctx.factory.begin() as session:
        tip = _tip(session, reference)
        # The contact first, then the tip: the order intake locks them in.
        contact = session.get(Contact, tip.contact_id, with_for_update=True) if tip.contact_id else None
        if contact is None or contact.pseudonym is None:
            raise ValueError("nothing links this tip to a sender any more")
        session.refresh(tip, with_for_update=True)
        if tip.sender_muted == muted:
            return False
        tip.sender_muted = muted
        session.flush()
        still_muted = select(Tip.id).where(Tip.contact_id == contact.id, Tip.sender_muted.is_(True)).limit(1)
        contact.muted = session.scalar(still_muted) is not None
        audit.record(
            session,
            ctx.keyring,
            "tip.mute_sender" if muted else "tip.unmute_sender",
            actor=actor,
            object_type="tip",
            object_id=reference,
        )
        return True


# Writing to the thread ------------------------------------------------------------------------


def _checked_text(text: str, what: str, limit: int | None = None) -> str:
    text = text.strip()
    if not text:
        raise ValueError(f"the {what} is empty")
    if limit is not None and len(text) > limit:
        raise ValueError(f"the {what} is longer than {limit} characters")
    return text


def _bring_back_to(session: Session, contact: Contact, tip: Tip) -> str:
    """Point the tipster's conversation at `tip`, so that their answer joins it; returns their language.

    Not while they are in the middle of a new draft, which must not be hijacked.
    """
    conversation = session.get(Conversation, contact.id)
    if conversation is None:
        return DEFAULT_LANGUAGE
    if conversation.tip_id != tip.id and conversation.state in (State.NEW, State.SUBMITTED):
        conversation.tip_id = tip.id
        conversation.state = State.SUBMITTED
    return conversation.language


def reply(
    ctx: ServiceContext,
    reference: str,
    text: str,
    author_id: int | None = None,
    actor: str | None = None,
) -> int:
    """Queue a detective's reply to the tipster; returns the thread message id.

    Raises RepliesImpossible (with a plain reason) when the tipster opted out, asked to be
    forgotten, or their address expired; ValueError for an empty or overlong reply.
    """
    text = _checked_text(text, "reply", MAX_REPLY_CHARS)
    now = ctx.now()
    with ctx.factory.begin() as session:
        tip = _tip(session, reference, lock=True)
        contact = session.get(Contact, tip.contact_id) if tip.contact_id else None
        blocker = _blocker(contact)
        if blocker is not None or contact is None:
            raise RepliesImpossible(blocker or NO_CONTACT)
        language = _bring_back_to(session, contact, tip)
        if contact.channel == "sms":  # curly quotes and dashes would make the SMS UCS-2: half the room
            text = segments.to_gsm(text)
        key = records.tip_dek(ctx.keyring, tip)
        message = records.append_message(
            session,
            tip,
            key,
            MessageKind.AGENCY,
            text,
            now,
            author_id=author_id,
            delivery=ReplyDelivery.QUEUED,
        )
        session.flush()
        body = render(Text.of("agency_reply", text=text), language, ctx.settings.catalog_defaults)
        outbox.enqueue_send(session, contact, records.contact_dek(ctx.keyring, contact), body, now, message.id)
        if actor is not None:
            audit.record(session, ctx.keyring, "tip.reply", actor=actor, object_type="tip", object_id=reference)
        return message.id


def add_note(
    ctx: ServiceContext,
    reference: str,
    text: str,
    author_id: int | None = None,
    actor: str | None = None,
) -> int:
    """Add an internal note to a submitted tip's thread; never sent to the tipster."""
    text = _checked_text(text, "note")
    with ctx.factory.begin() as session:
        tip = _tip(session, reference, lock=True)
        key = records.tip_dek(ctx.keyring, tip)
        message = records.append_message(session, tip, key, MessageKind.NOTE, text, ctx.now(), author_id=author_id)
        session.flush()
        if actor is not None:
            audit.record(session, ctx.keyring, "tip.note", actor=actor, object_type="tip", object_id=reference)
        return message.id
