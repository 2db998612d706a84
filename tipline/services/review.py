"""What detectives may ask of the core: read tips and threads, reply, keep notes, triage.

This is the only module that decrypts tip content for people. It never returns a return address,
a pseudonym or a contact id: a tip's sender is an alias ("Tipster 4F2A") and a channel.
The review console, scripts and tests call these functions as `review.action(ctx, ...)`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from sqlalchemy import ColumnElement, and_, case, func, not_, select
from sqlalchemy.orm import Session

from tipline.core import segments
from tipline.core.catalog import DEFAULT_LANGUAGE, ENGLISH, HAITIAN_CREOLE, PORTUGUESE, SPANISH, Text, render
from tipline.core.conversation import State
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import AttachmentStatus, ErasedReason, MessageKind, ReplyDelivery, Role, TipStatus
from tipline.services import attachments, audit, outbox, search
from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.db import read_only
from tipline.storage.models import Attachment, Contact, Conversation, Message, Tip, User, to_minute

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
# An urgent draft is shown to detectives while the tipster is still writing it (records.visible_to_detectives).
DRAFT_LABEL = "Still being written"
STATUS_LABELS = {status.value: status.label for status in STATUSES} | {TipStatus.DRAFT.value: DRAFT_LABEL}
DRAFT_STATUS_REFUSED = (
    "the tipster is still writing this tip; its status can be set once it is submitted "
    "(replies, notes, category, assignee and urgency can be set now)"
)
LANGUAGE_NAMES = {ENGLISH: "English", SPANISH: "Spanish", PORTUGUESE: "Portuguese", HAITIAN_CREOLE: "Haitian Creole"}
CATEGORIES = ("drugs", "violence", "weapons", "property", "fraud", "traffic", "missing person", "other")


class RepliesImpossible(Exception):
    """The tipster cannot be written to; `reason` says why in words a detective understands."""

    def __init__(self, code: str):
        super().__init__(REPLY_BLOCKERS.get(code, code))
        self.code = code
        self.reason = REPLY_BLOCKERS.get(code, code)


class TipNotFound(Exception):
    """No tip detectives may see has this reference (drafts are found only once urgent)."""


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


def who_wrote(entry: ThreadEntry, alias: str) -> str:
    """Who wrote a thread entry, as detectives read it: the tip's alias, the bot, or the author."""
    if entry.kind in (MessageKind.TIPSTER, MessageKind.MEDIA):
        return alias
    if entry.kind == MessageKind.BOT:
        return "Bot"
    if entry.kind == MessageKind.AGENCY:
        return f"Reply by {entry.author or 'a detective'}"
    return f"Internal note by {entry.author or 'a detective'}"


@dataclass(frozen=True)
class TipSummary:
    reference: str
    alias: str
    channel: str
    status: str  # a TipStatus; DRAFT only for an urgent tip still being written
    urgent: bool
    submitted_at: dt.datetime | None
    updated_at: dt.datetime
    unread: int
    category: str | None = None
    assignee: str | None = None
    assignee_id: int | None = None
    photos: int = 0  # cleaned photos stored with the tip (shown in the list)
    created_at: dt.datetime | None = None
    active_at: dt.datetime | None = None  # latest activity: tipster message, reply or note (the list order)
    language: str | None = None  # the language the tipster writes in; None for tips before 0013
    excerpt: str | None = None  # the start of "what", one line (list_tips only; audited there)

    @property
    def draft(self) -> bool:
        """Still being written by the tipster (shown because it is urgent)."""
        return self.status == TipStatus.DRAFT

    @property
    def pinned(self) -> bool:
        """Urgent and not closed: kept above the rest of the list."""
        return self.urgent and self.status != TipStatus.CLOSED

    @property
    def language_name(self) -> str | None:
        return LANGUAGE_NAMES.get(self.language, self.language) if self.language else None


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
    text: str | None = None  # the list's search field `q`: words the tip says, or its reference (search.py)


@dataclass(frozen=True)
class Photo:
    data: bytes
    content_type: str
    filename: str  # made up here from the tip reference: never the tipster's file name


# Reading ----------------------------------------------------------------------------------------


def _tip(session: Session, reference: str, *, lock: bool = False) -> Tip:
    tip = records.visible_tip(session, reference, lock=lock)
    if tip is None:
        raise TipNotFound(reference)
    return tip


def _sender_then_tip(session: Session, reference: str) -> tuple[Contact | None, Tip]:
    """The tip's sender and the tip, both locked, in the order intake locks them (sender, then tip).

    The tip is found first without a lock (to know its sender), then found again locked: as it is
    now, and still one detectives see (a tipster's DISCARD or a cleared urgency may have taken it
    away meanwhile: TipNotFound). The sender is None when none is linked (any more)."""
    found = _tip(session, reference)
    contact = session.get(Contact, found.contact_id, with_for_update=records.ROW_LOCK) if found.contact_id else None
    tip = _tip(session, reference, lock=True)
    if contact is not None and tip.contact_id != contact.id:
        contact = None  # forgotten while we waited: the tip no longer names them
    return contact, tip


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
        created_at=tip.created_at,
        active_at=tip.active_at,
        language=tip.language,
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
    """The WHERE clauses of a tip list: the tips detectives see, narrowed by the filter."""
    wanted: list[ColumnElement[bool]] = [records.visible_to_detectives()]
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


PINNED = and_(Tip.urgent.is_(True), Tip.status != TipStatus.CLOSED)


def _page_rows(
    session: Session, where: list[ColumnElement[bool]], offset: int, limit: int
) -> list[tuple[Tip, str | None]]:
    """One page of the list: the pinned tips first, then the rest, each by latest activity.

    Two queries rather than one ORDER BY on "pinned": each part then reads the (active_at, id) index
    in order and stops after the page, instead of sorting every matching tip (20,000 tips: a sort
    took up to 0.3 s for a deep page). The pinned part is small (urgent tips not yet closed).
    """

    def part(condition: ColumnElement[bool], skip: int, count: int) -> list[tuple[Tip, str | None]]:
        # The ids first (from the index alone), then their rows and assignees: joined before the
        # OFFSET, every skipped tip's row would be read for its assignee.
        ids = session.scalars(
            select(Tip.id)
            # SQLite would rather pick the status index and sort every tip of that status; the
            # activity index holds status and urgent too, so reading it in order stops at the page.
            .with_hint(Tip, "INDEXED BY ix_tips_activity", "sqlite")
            .where(*where, condition)
            .order_by(Tip.active_at.desc(), Tip.id.desc())
            .offset(skip)
            .limit(count)
        ).all()
        if not ids:
            return []
        found = {
            tip.id: (tip, username)
            for tip, username in session.execute(
                select(Tip, User.username).outerjoin(User, User.id == Tip.assignee_id).where(Tip.id.in_(ids))
            ).all()
        }
        return [found[i] for i in ids if i in found]

    pinned = session.scalar(select(func.count()).select_from(Tip).where(*where, PINNED)) or 0
    rows = part(PINNED, offset, limit) if offset < pinned else []
    if len(rows) < limit:
        rows += part(not_(PINNED), max(offset - pinned, 0), limit - len(rows))
    return rows


def list_tips(
    ctx: ServiceContext,
    page: int = 1,
    per_page: int = 50,
    flt: TipFilter | None = None,
    actor: str | None = None,
) -> tuple[list[TipSummary], int]:
    """The tips detectives see, one page at a time, and how many match, each with an excerpt of its
    description. With an `actor`, the excerpts shown are audited before they are returned.

    Urgent tips that are not closed come first (pinned: a later tip must not push one down), then
    the rest, each part by latest activity, newest first (`Tip.active_at`, then the newest tip).
    """
    flt = flt or TipFilter()
    where = [*_conditions(flt), *_text_condition(ctx.keyring, flt)]
    with read_only(ctx.factory) as session:
        total = session.scalar(select(func.count()).select_from(Tip).where(*where)) or 0
        rows = _page_rows(session, where, (max(page, 1) - 1) * per_page, per_page)
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
        excerpts = _excerpts(ctx.keyring, [tip for tip, _ in rows])
        summaries = [
            replace(_summary(tip, assignee, photos.get(tip.id, 0)), excerpt=excerpts.get(tip.id))
            for tip, assignee in rows
        ]
    if actor is not None:
        if flt.text and flt.text.strip():
            _audit_search(ctx, actor, flt.text, total)
        _audit_excerpts(ctx, actor, summaries)
    return summaries, total


# Search and excerpts (search.py) ------------------------------------------------------------------

EXCERPT_CHARS = 90


def _text_condition(keyring: Keyring, flt: TipFilter) -> list[ColumnElement[bool]]:
    """The search field: every word in the tip's text, thread or notes, or the start of its reference."""
    text = (flt.text or "").strip()
    return [search.matching(keyring, text)] if text else []


def excerpt(text: str) -> str:
    """One line from the start of a tip's description, cut at a word near EXCERPT_CHARS."""
    line = " ".join(text.split())
    if len(line) <= EXCERPT_CHARS:
        return line
    cut = line[: EXCERPT_CHARS - 1]
    space = cut.rfind(" ")
    if space > EXCERPT_CHARS // 2:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def _excerpts(keyring: Keyring, tips: list[Tip]) -> dict[int, str]:
    """The excerpt of each listed tip that has a description, decrypted in memory."""
    out = {}
    for tip in tips:
        if tip.what_ct is not None:
            what = records.read_tip_field(tip, records.tip_dek(keyring, tip), "what")
            out[tip.id] = excerpt(what or "")
    return out


def _audit_search(ctx: ServiceContext, actor: str, text: str, results: int) -> None:
    """Every search is audited, matches or not: searching for a name (an ex-partner, a neighbour) is
    the classic insider abuse. The words are recorded as their blind tokens under the search key,
    never in clear (a query may be tip content): an auditor who suspects a name computes its token
    (`tipline audit search-token WORD`) and looks for it."""
    audit.log_event(
        ctx,
        "tips.search",
        actor=actor,
        detail={"results": results, "tokens": search.query_tokens(ctx.keyring, text)},
    )


def _audit_excerpts(ctx: ServiceContext, actor: str, summaries: list[TipSummary]) -> None:
    """An excerpt is tip content leaving the server: one entry names every tip whose excerpt a page
    shows, committed before the page is returned. References without "T-", space-separated, so a
    full page fits the entry's detail; never the search words, which may be tip content too."""
    shown = [s.reference.removeprefix("T-") for s in summaries if s.excerpt]
    if shown:
        audit.log_event(ctx, "tips.list", actor=actor, object_type="tip", detail={"excerpts": " ".join(shown)})


def latest_change(ctx: ServiceContext) -> dict[str, int]:
    """A cheap fingerprint of the tip list, for live updates: changes whenever a tip arrives or moves.

    An urgent draft counts from the moment it is urgent, and its thread's growth with it; `pinned`
    changes when a tip is marked urgent, cleared or closed (the list's order changes).
    """
    with read_only(ctx.factory) as session:
        newest, messages, pinned = session.execute(
            select(
                func.max(Tip.id),
                func.coalesce(func.sum(Tip.message_count), 0),
                func.coalesce(func.sum(case((PINNED, 1), else_=0)), 0),
            ).where(records.visible_to_detectives())
        ).one()
        return {"newest": int(newest or 0), "messages": int(messages or 0), "pinned": int(pinned or 0)}


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
        rows = session.execute(
            select(Message, User.username)
            .outerjoin(User, User.id == Message.author_id)
            .where(Message.tip_id == tip.id)
            .order_by(Message.seq)
        ).all()
        messages = [m for m, _ in rows]
        files = _attachment_views(session, tip)
        # With their authors, so that an entry added live reads like the others ("Reply by dana").
        new = [_entry(tip, key, m, author, files) for m, author in rows if m.seq > after_seq]
        deliveries = {m.seq: m.delivery for m in messages if m.kind == MessageKind.AGENCY}
        # A photo being fetched is still pending as far as a detective is concerned.
        photos = {
            seq: AttachmentStatus.PENDING.value if view.status == AttachmentStatus.FETCHING else view.status
            for seq, view in files.items()
        }
        return new, deliveries, photos


def _detail(session: Session, keyring: Keyring, tip: Tip) -> TipDetail:
    """A tip and its thread, decrypted, inside the caller's transaction (which audits the read)."""
    key = records.tip_dek(keyring, tip)
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
    return TipDetail(
        summary=_summary(tip, assignee.username if assignee else None),
        what=records.read_tip_field(tip, key, "what"),
        where=records.read_tip_field(tip, key, "where"),
        when=records.read_tip_field(tip, key, "when"),
        thread=thread,
        replies_blocked=REPLY_BLOCKERS.get(blocker, blocker) if blocker else None,
        # This tip's own mute only: showing the sender's would tell which tips share a sender.
        sender_muted=tip.sender_muted if contact is not None and contact.pseudonym is not None else None,
    )


def alias_of(ctx: ServiceContext, reference: str) -> str:
    """The alias a tip's sender is shown under ("Tipster 4F2A"); no content, nothing to audit."""
    with read_only(ctx.factory) as session:
        return records.alias(_tip(session, reference))


def read_tip(ctx: ServiceContext, reference: str, mark_read: bool = True, actor: str | None = None) -> TipDetail:
    """One tip and its whole thread, decrypted. With an `actor`, the view is audited in the same
    transaction, so content never leaves unless its "viewed" record committed."""
    with ctx.factory.begin() as session:
        tip = _tip(session, reference)
        detail = _detail(session, ctx.keyring, tip)
        if mark_read:
            tip.unread = 0
            tip.alerted_unread = 0  # the next message from the tipster alerts the assignee again (alerts.py)
        if actor is not None:
            if tip.opened_at is None:  # a detective opened it: no escalation (alerts.py)
                tip.opened_at = to_minute(ctx.now())
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


@dataclass(frozen=True)
class CaseContent:
    """Everything a case file holds (casefile.py): read and audited together, decrypted in memory only."""

    detail: TipDetail
    photos: dict[int, bytes]  # thread seq of a stored photo -> its cleaned bytes
    history: tuple[audit.AuditLine, ...]  # who viewed or changed the tip, this export last


def read_for_export(ctx: ServiceContext, reference: str, *, actor: str) -> CaseContent:
    """A tip, its thread, its cleaned photos and its audit history, for a case file. The export is
    audited ("tip.export", naming the entries and photos covered) in the same transaction that reads
    the content, so nothing leaves unless that record committed. The tip's unread count is left alone."""
    with ctx.factory.begin() as session:
        tip = _tip(session, reference)
        detail = _detail(session, ctx.keyring, tip)
        stored = session.scalars(
            select(Attachment)
            .where(Attachment.tip_id == tip.id, Attachment.status == AttachmentStatus.STORED)
            .order_by(Attachment.seq)
        ).all()
        images = {a.seq: attachments.open_image(ctx.keyring, tip, a) for a in stored}
        history = audit.for_object(session, "tip", reference)
        seqs = [e.seq for e in detail.thread]
        entry = audit.record(
            session,
            ctx.keyring,
            "tip.export",
            actor=actor,
            object_type="tip",
            object_id=reference,
            detail={"entries": [seqs[0], seqs[-1]] if seqs else [], "photos": len(images), "history": len(history)},
            now=ctx.now(),
        )
        return CaseContent(detail, images, (*history, audit.AuditLine.of(entry)))


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
        if wanted_status is not None and wanted_status != tip.status and tip.status == TipStatus.DRAFT:
            # The draft is still the tipster's: its status is the conversation's (submission sets it),
            # so a detective's choice would be undone or would change what the tipster can still do.
            raise ValueError(DRAFT_STATUS_REFUSED)
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


def set_urgent(ctx: ServiceContext, reference: str, urgent: bool, *, actor: str) -> tuple[bool, bool]:
    """Mark a tip urgent, or clear it, by hand; audited as "tip.urgent" with the old and new value in
    the same transaction. Returns (whether anything changed, whether detectives still see the tip).

    Urgent tips that are not closed are pinned to the top of the list. A draft is seen only while it
    is urgent: cleared, it leaves the list until the tipster submits it (the page says so first).
    """
    with ctx.factory.begin() as session:
        tip = _tip(session, reference, lock=True)
        if tip.urgent == urgent:
            return False, True
        old, tip.urgent = tip.urgent, urgent
        if urgent:
            records.show(tip)  # notified as urgent in the consoles that are open
        audit.record(
            session,
            ctx.keyring,
            "tip.urgent",
            actor=actor,
            object_type="tip",
            object_id=reference,
            detail={"urgent": [str(old), str(urgent)]},
        )
        return True, urgent or tip.status != TipStatus.DRAFT


def set_muted(ctx: ServiceContext, reference: str, muted: bool, *, actor: str) -> bool:
    """Mute (or unmute) the sender of a tip: their messages are still stored, but get no answer from
    the bot and bump no unread count (abuse.py). The detective acts on the tip and never learns who
    the sender is; the change is audited in the same transaction. Returns whether anything changed.
    Raises ValueError when no sender is linked to the tip any more.

    The mute is recorded on the tip and shown on that tip only; the sender stays muted while any of
    their tips is. Were the sender's state shown, or undone from another tip, a detective could mute
    one tip and look which others changed: aliases are per tip so that tips cannot be linked."""
    with ctx.factory.begin() as session:
        contact, tip = _sender_then_tip(session, reference)
        if contact is None or contact.pseudonym is None:
            raise ValueError("nothing links this tip to a sender any more")
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
        # Then the conversation is read as it is now: a draft the tipster began meanwhile is not
        # taken over (_bring_back_to).
        contact, tip = _sender_then_tip(session, reference)
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
        tip.active_at = to_minute(now)
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
    """Add an internal note to a tip's thread; never sent to the tipster."""
    text = _checked_text(text, "note")
    now = ctx.now()
    with ctx.factory.begin() as session:
        tip = _tip(session, reference, lock=True)
        key = records.tip_dek(ctx.keyring, tip)
        message = records.append_message(session, tip, key, MessageKind.NOTE, text, now, author_id=author_id)
        search.index(session, ctx.keyring, [(tip.id, text)])
        tip.active_at = to_minute(now)
        session.flush()
        if actor is not None:
            audit.record(session, ctx.keyring, "tip.note", actor=actor, object_type="tip", object_id=reference)
        return message.id
