"""The database schema, as SQLAlchemy 2 typed models. Alembic migrations in `migrations/` create it.

Nothing that identifies a tipster is stored in plaintext: columns holding ciphertext or keyed
hashes say so in their `comment`. Times a tipster caused are kept to the minute, which is all a
detective needs and less for anyone correlating with carrier records.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)
from sqlalchemy.engine.default import DefaultExecutionContext
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from tipline.core.vocabulary import OutboxStatus, TipStatus

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def table_of(model: type[Base]) -> Table:
    """The Core table behind a model, for the hot path's plain INSERTs (no unit-of-work bookkeeping)."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def to_minute(moment: dt.datetime) -> dt.datetime:
    return moment.replace(second=0, microsecond=0)


# A due time may be precise while its row waits (so that work runs in order and on time); once the
# row settles it is cut to the minute like every other time a tipster causes.
SETTLED_TO_THE_MINUTE = "precise while pending; to the minute once settled"


class KeyVersion(Base):
    """One version of a key-encryption key (or of the pseudonym pepper), wrapped by the master key."""

    __tablename__ = "key_versions"
    __table_args__ = (UniqueConstraint("purpose", "version", name="uq_key_versions_purpose_version"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer)
    wrapped_key: Mapped[bytes] = mapped_column(
        LargeBinary, comment="AES-256-GCM under the master key, AAD names purpose and version"
    )
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    retired_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Contact(Base):
    """A sender as the tip line knows them: a keyed pseudonym and, while allowed, a return address."""

    __tablename__ = "contacts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(16))
    pseudonym: Mapped[str | None] = mapped_column(
        String(64),
        unique=True,
        nullable=True,
        comment="HMAC-SHA256(pepper, 'channel:address'); NULL once forgotten or past retention",
    )
    pseudonym_version: Mapped[int] = mapped_column(Integer)
    kek_version: Mapped[int] = mapped_column(Integer, comment="version of the contacts KEK wrapping wrapped_dek")
    wrapped_dek: Mapped[bytes] = mapped_column(
        LargeBinary, comment="this contact's data key, wrapped; replaced when the address is erased"
    )
    address_ct: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, comment="encrypted return address; NULL once erased"
    )
    opted_out: Mapped[bool] = mapped_column(Boolean, default=False)
    erased_reason: Mapped[str | None] = mapped_column(String(16), nullable=True)
    last_activity_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True, comment="to the minute")
    # Abuse control (intake.py): a detective may mute a sender from a tip; their messages are still
    # stored, but get no answer and bump no unread count.
    muted: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0", comment="true while any tip of this sender is muted"
    )
    # The sender's current reply window: when it began (to the minute, like last_activity_at) and how
    # many messages it has taken. Past the limit, messages are kept but answered no more.
    window_started_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, comment="to the minute")
    window_messages: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class NewSender(Base):
    """One sender wrote for the first time in this hour on this channel: a mark, nothing links it to
    a contact (a contact row keeps no creation time). Administrators see the marks counted per hour,
    to spot a burst of new senders; marks older than two days are dropped by maintenance.

    A row per sender rather than a counter per hour: a counter would be one hot row that every new
    sender's transaction locks until it commits."""

    __tablename__ = "new_senders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    hour: Mapped[dt.datetime] = mapped_column(DateTime, index=True, comment="to the hour")
    channel: Mapped[str] = mapped_column(String(16))


class Conversation(Base):
    """Where a sender is in the intake conversation (see conversation.py)."""

    __tablename__ = "conversations"

    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[str] = mapped_column(String(16))
    language: Mapped[str] = mapped_column(String(2))
    tip_id: Mapped[int | None] = mapped_column(ForeignKey("tips.id", ondelete="SET NULL"), nullable=True)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True, comment="to the minute")


def _last_update(context: DefaultExecutionContext) -> dt.datetime | None:
    """A tip's latest activity when a bulk insert leaves it out: its last update (as 0013 filled it)."""
    value = context.get_current_parameters().get("updated_at")  # type: ignore[no-untyped-call]
    return value if isinstance(value, dt.datetime) else None


class Tip(Base):
    __tablename__ = "tips"
    __table_args__ = (
        Index("ix_tips_status_id", "status", "id"),
        Index("ix_tips_assignee_id_id", "assignee_id", "id"),
        # The console lists tips by latest activity; urgent and status in the index let a page skip the
        # tips before it without reading their rows (see review._page_rows).
        Index("ix_tips_activity", "active_at", "id", "urgent", "status"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    reference: Mapped[str] = mapped_column(String(12), unique=True, comment="random, e.g. T-7K3Q9X")
    alias: Mapped[str] = mapped_column(
        String(4), comment="random, shown as 'Tipster 4F2A'; says nothing about the sender"
    )
    contact_id: Mapped[str | None] = mapped_column(
        ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True, index=True
    )
    channel: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16), default=TipStatus.DRAFT.value)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    sender_muted: Mapped[bool] = mapped_column(
        Boolean,
        default=False,
        server_default="0",
        comment="a detective muted the sender from this tip; shown on this tip only (abuse.py)",
    )
    category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    kek_version: Mapped[int] = mapped_column(Integer, comment="version of the tips KEK wrapping wrapped_dek")
    wrapped_dek: Mapped[bytes] = mapped_column(LargeBinary, comment="this tip's data key, wrapped")
    what_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, comment="encrypted")
    where_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, comment="encrypted")
    when_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, comment="encrypted")
    message_count: Mapped[int] = mapped_column(Integer, default=0)
    unread: Mapped[int] = mapped_column(Integer, default=0, comment="tipster messages since submission not yet viewed")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, comment="to the minute")
    submitted_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True, comment="to the minute")
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime, comment="to the minute")
    active_at: Mapped[dt.datetime] = mapped_column(
        DateTime,
        default=_last_update,
        comment="latest activity: tipster message, detective reply or note; to the minute",
    )
    language: Mapped[str | None] = mapped_column(
        String(8), nullable=True, comment="the language the tipster writes in (catalog code); NULL before 0013"
    )
    # Alerts (services/alerts.py). Intake never writes these but `shown_seq`: the dispatcher derives
    # what is due from the tip's own columns and marks here what it has queued.
    opened_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime, nullable=True, comment="to the minute: a detective first viewed the tip page"
    )
    alerted_new: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0", index=True, comment="the new-tip alerts are queued"
    )
    urgent_alerted_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime, nullable=True, comment="to the minute: the urgent alerts were queued (escalation counts from here)"
    )
    escalated: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default="0", comment="the escalation alerts are queued"
    )
    alerted_unread: Mapped[int] = mapped_column(
        Integer, default=0, server_default="0", comment="the unread count the last follow-up alert covered"
    )
    # The console's tab title and desktop notifications count tips by this, not by id: a draft begun
    # before a newer tip becomes visible later (urgent, or submitted) and must still be counted.
    shown_seq: Mapped[int | None] = mapped_column(
        Integer, nullable=True, index=True, comment="order in which tips became visible or urgent; no time"
    )


class Alert(Base):
    """One alert to one recipient (a console account by email, or the on-call number by SMS).

    A durable queue of its own rather than the tipsters' outbox: an alert has no contact and no
    secret payload (its words are derived from the tip's reference when it is sent). See alerts.py.
    """

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_status_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, comment="random; also the email's Message-ID")
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    user_id: Mapped[int | None] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=True, comment="NULL: the on-call number"
    )
    kind: Mapped[str] = mapped_column(String(12), comment="AlertKind")
    medium: Mapped[str] = mapped_column(String(8), comment="AlertMedium")
    status: Mapped[str] = mapped_column(String(12), comment="OutboxStatus: pending, sending, sent or failed")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    attempt_started_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime, nullable=True, comment="a send began and its result is not recorded yet"
    )
    last_error: Mapped[str | None] = mapped_column(String(64), nullable=True, comment="error code only")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, comment="to the minute")


class Message(Base):
    """One entry of a tip's thread: from the tipster, the bot, the agency, or an internal note."""

    __tablename__ = "messages"
    __table_args__ = (UniqueConstraint("tip_id", "seq", name="uq_messages_tip_id_seq"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"))
    seq: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(8))
    body_ct: Mapped[bytes] = mapped_column(LargeBinary, comment="encrypted under the tip's data key")
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    delivery: Mapped[str | None] = mapped_column(
        String(12), nullable=True, comment="for texts sent to the tipster: queued, sent, delivered, read or failed"
    )
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, comment="to the minute")


class SearchTerm(Base):
    """One word of a tip as the blind search index knows it: a keyed hash, never the word (search.py).

    A tip has one row per distinct searchable word of its text, thread and notes, under one version
    of the search key; the key's rotation writes the tip's rows under the new version, then deletes
    the old ones. Whoever has the database but not the key sees which tips share a word, not which.
    """

    __tablename__ = "search_terms"
    __table_args__ = (Index("ix_search_terms_tip_id_key_version", "tip_id", "key_version"),)

    token: Mapped[int] = mapped_column(
        BigInteger,
        primary_key=True,
        autoincrement=False,
        comment="HMAC-SHA256(search key, normalised word), first 8 bytes as a signed integer",
    )
    key_version: Mapped[int] = mapped_column(
        Integer, primary_key=True, autoincrement=False, comment="version of the search key"
    )
    tip_id: Mapped[int] = mapped_column(
        ForeignKey("tips.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )


class Attachment(Base):
    """A photo a tipster sent, shown in its tip's thread at entry `seq` (see attachments.py).

    It arrives as a provider reference (`source_ct`), is fetched and cleaned in the background, and
    is kept only as the cleaned image (`data_ct`). The original bytes are never stored.
    """

    __tablename__ = "attachments"
    __table_args__ = (Index("ix_attachments_status_next_attempt_at", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tip_id: Mapped[int] = mapped_column(ForeignKey("tips.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer, comment="the thread entry (messages.seq) that shows it")
    batch: Mapped[str] = mapped_column(
        String(32), index=True, comment="random, shared by the files of one inbound message"
    )
    status: Mapped[str] = mapped_column(String(12), comment="pending, fetching, stored, refused or failed")
    reason: Mapped[str | None] = mapped_column(String(16), nullable=True, comment="why refused or failed, a code")
    source_ct: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, comment="encrypted provider reference; NULL once settled"
    )
    data_ct: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, comment="the cleaned image, encrypted under the tip's data key"
    )
    content_type: Mapped[str | None] = mapped_column(String(32), nullable=True)
    source_format: Mapped[str | None] = mapped_column(String(8), nullable=True, comment="what the bytes were")
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    size: Mapped[int | None] = mapped_column(Integer, nullable=True, comment="bytes of the cleaned image")
    frames: Mapped[int | None] = mapped_column(Integer, nullable=True, comment="frames in the original; one kept")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, comment=SETTLED_TO_THE_MINUTE)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, comment="to the minute")


class OutboxItem(Base):
    """A durable outbound action: a message to a tipster or a deletion at the provider."""

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_status_due", "status", "next_attempt_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    channel: Mapped[str] = mapped_column(String(16))
    contact_id: Mapped[str] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), index=True)
    message_id: Mapped[int | None] = mapped_column(ForeignKey("messages.id", ondelete="SET NULL"), nullable=True)
    payload_ct: Mapped[bytes] = mapped_column(
        LargeBinary, comment="encrypted under the contact's data key; emptied once done, failed or cancelled"
    )
    status: Mapped[str] = mapped_column(
        String(12), default=OutboxStatus.PENDING.value, comment="the dispatcher's lifecycle (OutboxStatus)"
    )
    provider_status: Mapped[str | None] = mapped_column(
        String(24), nullable=True, comment="the provider's last delivery report (DeliveryStatus), for sends"
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(DateTime, comment=SETTLED_TO_THE_MINUTE)
    lease_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    provider_ref: Mapped[str | None] = mapped_column(
        String(64), nullable=True, index=True, comment="keyed hash of the provider's message id"
    )
    last_error: Mapped[str | None] = mapped_column(String(64), nullable=True, comment="error code only")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, comment="to the minute")
    attempt_started_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime, nullable=True, comment="to the minute: a send began and its result is not recorded yet"
    )


class ProcessedDelivery(Base):
    """A provider delivery already handled, remembered by keyed hash only and for a bounded time."""

    __tablename__ = "processed_deliveries"

    key: Mapped[str] = mapped_column(String(64), primary_key=True, comment="keyed hash of channel + delivery id")
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True, comment="to the minute")


class User(Base):
    """A console account. Roles combine: an admin who is not also a detective cannot read tips."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255), comment="argon2id")
    roles: Mapped[str] = mapped_column(String(32), comment="space-separated: detective, admin")
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    totp_secret_ct: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True, comment="encrypted")
    totp_kek_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    totp_last_step: Mapped[int] = mapped_column(Integer, default=0, comment="a TOTP code is accepted once")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # Alerts (services/alerts.py): where to, and which (AlertChoice). Admin-only accounts get none.
    email: Mapped[str | None] = mapped_column(String(254), nullable=True)
    alerts: Mapped[str] = mapped_column(String(8), default="urgent", server_default="urgent", comment="AlertChoice")

    @property
    def role_set(self) -> frozenset[str]:
        return frozenset(self.roles.split())


class KeyRotation(Base):
    """One rotation of a key purpose: its target version, mode and progress (resumable)."""

    __tablename__ = "key_rotations"

    id: Mapped[int] = mapped_column(primary_key=True)
    purpose: Mapped[str] = mapped_column(String(16))
    to_version: Mapped[int] = mapped_column(Integer)
    reencrypt: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(12), comment="running or done")
    requested_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    rows_total: Mapped[int] = mapped_column(Integer, default=0)
    rows_done: Mapped[int] = mapped_column(Integer, default=0)
    unlinked: Mapped[int] = mapped_column(Integer, default=0, comment="pepper rotation: senders whose link was lost")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class ConsoleSession(Base):
    """A signed-in console session, kept server-side so that it can be revoked."""

    __tablename__ = "console_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True, comment="SHA-256 of the cookie token")
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    stage: Mapped[str] = mapped_column(String(16), comment="enrol, password or full")
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime)
    last_seen_at: Mapped[dt.datetime] = mapped_column(DateTime)
    pending_totp_ct: Mapped[bytes | None] = mapped_column(
        LargeBinary, nullable=True, comment="encrypted, during enrolment"
    )


class SignInAttempt(Base):
    """A recent console sign-in attempt, one row per budget it counts against (a username's, a
    client address's), so that every process sees the same counts. Kept for a minute or two."""

    __tablename__ = "sign_in_attempts"
    __table_args__ = (Index("ix_sign_in_attempts_key_at", "key", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(
        String(64), comment="keyed hash of a username or of a client address; never either in clear"
    )
    at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)


class AuditEntry(Base):
    """One event of the audit log. Entries are hash-chained under a secret key (see audit.py)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_object", "object_type", "object_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, comment="UTC, microseconds")
    actor: Mapped[str | None] = mapped_column(
        String(64), nullable=True, comment="console username, or NULL for the system"
    )
    action: Mapped[str] = mapped_column(String(32))
    object_type: Mapped[str | None] = mapped_column(String(16), nullable=True)
    object_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))
    detail: Mapped[str] = mapped_column(String(500), default="", comment="never tip content or tipster identifiers")
    key_version: Mapped[int] = mapped_column(Integer)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(
        String(64), comment="HMAC-SHA256 under the audit key over prev_hash and this entry"
    )


class DataUpgrade(Base):
    """A one-time data upgrade that `tipline init` has carried out (it never runs twice)."""

    __tablename__ = "data_upgrades"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    done_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ProcessBeat(Base):
    """A running `tipline serve`, `dispatch` or `telegram poll` process, seen recently.

    Lets a command refuse what would break running processes (a master key rotation they cannot
    follow) and tells /healthz whether a dispatcher is alive (`dispatched_at`, copied from the
    process's dispatcher loop by its heartbeat). Nothing here concerns tipsters.
    """

    __tablename__ = "process_beats"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, comment="random per process start")
    kind: Mapped[str] = mapped_column(String(16), comment="serve, dispatch or poll")
    follows_master_file: Mapped[bool] = mapped_column(Boolean, comment="re-reads master.key when it changes")
    started_at: Mapped[dt.datetime] = mapped_column(DateTime)
    seen_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    dispatched_at: Mapped[dt.datetime | None] = mapped_column(
        DateTime, nullable=True, comment="when this process's dispatcher last completed a pass; NULL: it runs none"
    )


class HealthProbe(Base):
    """The one row /healthz updates to prove the database can be written, not only read.

    A full disk or a read-only database still answers reads, while every webhook's write fails.
    """

    __tablename__ = "health_probe"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False, comment="always 1: a single row")
    probed_at: Mapped[dt.datetime] = mapped_column(DateTime, comment="the last write /healthz made")


class ReconcileMark(Base):
    """How far a provider's message log has been reconciled (services/reconcile.py): one row per log.

    `mark` is the sending time of the newest message taken in or found already processed, cut to
    the minute (a time to the second would time a tipster's message); reconciliation always reads
    again from `mark - overlap`, an overlap longer than that minute, so nothing is skipped.
    """

    __tablename__ = "reconcile_marks"

    log: Mapped[str] = mapped_column(String(32), primary_key=True, comment="which log, e.g. sms")
    mark: Mapped[dt.datetime] = mapped_column(DateTime, comment="to the minute, UTC")
