"""Alerts to detectives that carry no content: by email (TIPLINE_SMTP_URL) and to an on-call SMS number.

Intake writes nothing for alerts. The dispatcher, on each pass (`AlertWorker.run_once`), derives
what is due from the tips table itself: a tip flagged urgent that has no urgent alert yet, a tip
submitted without its new-tip alert, an urgent tip nobody opened within TIPLINE_ESCALATE_MINUTES,
a tipster's new messages on an assigned tip. For each it marks the tip (a conditional UPDATE, so two
dispatchers never both win) and queues one `alerts` row per recipient in the same transaction: an
event becomes rows exactly once. Rows are then sent with a lease, retries and backoff, like the
tipsters' outbox; a slow or absent mail server delays alerts and nothing else.

What "sent once" means with SMTP: SMTP has no idempotency key. A message counts as delivered when the
server answers 250 to the end of DATA; if the connection drops before that answer, RFC 5321 makes
the server discard the message, and we send again. `attempt_started_at` is committed before the
server is contacted and the result right after it answers, so the one window left is between the
server's 250 and our commit (a few milliseconds, RFC 1047). A row caught in it is sent again, as the
same message: every attempt carries the same Message-ID (the row's id), which mail clients and many
servers use to fold duplicates. We chose "at least once, one Message-ID" over "at most once" because a
lost urgent alert costs more than a duplicate one.

The words (tipline/core/alerting.py) name the agency, the reference and a console link; never the
tip's words, the channel, the alias or a precise time (the Date header is cut to the minute).
"""

from __future__ import annotations

import datetime as dt
import logging
import smtplib
import ssl
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime

from sqlalchemy import ColumnElement, and_, case, delete, func, or_, select, update
from sqlalchemy.orm import Session

from adapters.sandbox import CHANNEL as SANDBOX_CHANNEL
from tipline.config import Settings, SmtpSettings
from tipline.core.alerting import WANTS, AlertChoice, AlertKind, AlertMedium, compose, valid_email
from tipline.core.channels import Channel, ChannelError
from tipline.core.vocabulary import OutboxStatus, Role, TipStatus
from tipline.services import audit
from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.db import claim_due, read_only, rowcount
from tipline.storage.models import Alert, Contact, Tip, User, table_of, to_minute

log = logging.getLogger(__name__)

LEASE = dt.timedelta(seconds=60)
MAX_ATTEMPTS = 12  # with the backoff below, about a day of trying
BACKOFF_CAP = dt.timedelta(hours=1)
BATCH = 50
KEEP_SETTLED = dt.timedelta(days=30)
SMTP_TIMEOUT = 10.0  # per connection; a server that cannot be reached holds up one alert per pass, not all
RELEASE_DELAY = dt.timedelta(minutes=1)  # alerts given back untried when the mail server was unreachable
_INSERT = table_of(Alert).insert()


class AlertError(Exception):
    """A send failed; `code` is safe to store and log (no address, no server text)."""

    def __init__(self, code: str, permanent: bool = False, unreachable: bool = False):
        super().__init__(code)
        self.code = code
        self.permanent = permanent
        self.unreachable = unreachable  # the server could not be reached or did not answer in time


# Preferences (the console's Alerts page and `tipline users add|set`) -----------------------------------


class PreferenceError(ValueError):
    pass


@dataclass(frozen=True)
class Preferences:
    username: str
    email: str | None
    choice: AlertChoice
    detective: bool  # admin-only accounts get no tip alerts


def preferences(ctx: ServiceContext, username: str) -> Preferences:
    with read_only(ctx.factory) as session:
        user = _user(session, username)
        return Preferences(user.username, user.email, AlertChoice(user.alerts), Role.DETECTIVE in user.role_set)


def set_preferences(
    ctx: ServiceContext,
    username: str,
    *,
    email: str | None = None,
    choice: str | None = None,
    actor: str,
) -> Preferences:
    """Change an account's alert address and/or choice (None: leave as is; "" clears the address).

    Audited in the same transaction; the entry names what changed, never the address itself."""
    checked_email = _checked_email(email)
    checked_choice = _checked_choice(choice)
    with ctx.factory.begin() as session:
        user = _user(session, username)
        changed: dict[str, object] = {}
        if email is not None and checked_email != user.email:
            user.email = checked_email
            changed["email"] = "set" if checked_email else "cleared"
        if checked_choice is not None and checked_choice != user.alerts:
            user.alerts = checked_choice
            changed["alerts"] = checked_choice.value
        if changed:
            audit.record(
                session,
                ctx.keyring,
                "user.alerts",
                actor=actor,
                object_type="user",
                object_id=user.username,
                detail=changed,
                now=ctx.now(),
            )
        return Preferences(user.username, user.email, AlertChoice(user.alerts), Role.DETECTIVE in user.role_set)


def check_preferences(email: str | None, choice: str | None) -> None:
    """Raise PreferenceError if either value would be refused (before an account is created with them)."""
    _checked_email(email)
    _checked_choice(choice)


def _checked_email(email: str | None) -> str | None:
    if email is None or not email.strip():
        return None
    email = email.strip()
    if not valid_email(email):
        raise PreferenceError("that does not look like an email address")
    return email


def _checked_choice(choice: str | None) -> AlertChoice | None:
    if choice is None:
        return None
    try:
        return AlertChoice(choice.strip().lower())
    except ValueError:
        raise PreferenceError(f"alerts must be one of {', '.join(AlertChoice)}") from None


def _user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == username.strip().lower())).first()
    if user is None:
        raise PreferenceError(f"no user {username}")
    return user


# The browser's view: how many tips arrived since the list was loaded --------------------------------


@dataclass(frozen=True)
class Fresh:
    reference: str
    urgent: bool
    id: int


def fresh_since(ctx: ServiceContext, since: int, limit: int = 20) -> tuple[int, list[Fresh]]:
    """The cursor of the tips detectives see (`Tip.shown_seq`), and the tips shown after `since`
    (newest first): submitted, or urgent (a draft included, and a tip marked urgent again counts
    again). `Fresh.id` is that cursor, not the tip's id: a draft begun before a newer tip was listed
    becomes visible later, and must still be counted. Only references: the tab title and the
    desktop notification say no more."""
    visible = records.visible_to_detectives()  # the same rule as the list's
    with read_only(ctx.factory) as session:
        newest = session.scalar(select(func.max(Tip.shown_seq)).where(visible)) or 0
        rows = session.execute(
            select(Tip.shown_seq, Tip.reference, Tip.urgent)
            .where(visible, Tip.shown_seq > since)
            .order_by(Tip.shown_seq.desc())
            .limit(limit)
        ).all()
    return newest, [Fresh(reference, bool(urgent), int(seq or 0)) for seq, reference, urgent in rows]


def prune(ctx: ServiceContext, keep: dt.timedelta = KEEP_SETTLED) -> int:
    """Forget settled alerts older than `keep` (run by the dispatcher's upkeep); returns how many.

    They say only that a tip was alerted to someone; kept a while to answer "was I told?", then dropped."""
    settled = (OutboxStatus.SENT, OutboxStatus.FAILED, OutboxStatus.CANCELLED)
    with ctx.factory.begin() as session:
        result = session.execute(delete(Alert).where(Alert.status.in_(settled), Alert.created_at < ctx.now() - keep))
        return rowcount(result)


# Deriving what is due from the tips table -----------------------------------------------------------


@dataclass(frozen=True)
class _Recipient:
    user_id: int
    choice: AlertChoice


def still_holds(kind: AlertKind, tip: Tip, user_id: int | None) -> bool:
    """Whether what an alert says is still true when it is about to be sent."""
    if kind is AlertKind.ESCALATION:
        return tip.urgent and tip.opened_at is None and tip.status != TipStatus.CLOSED
    if kind is AlertKind.URGENT:
        return tip.urgent and tip.status != TipStatus.CLOSED
    if kind is AlertKind.FOLLOW_UP:
        return user_id is not None and tip.assignee_id == user_id
    return tip.status != TipStatus.DRAFT  # NEW: a submitted tip stays submitted


def _recipients(session: Session) -> list[_Recipient]:
    """Active detectives with an email address (an admin-only account reads no tips, so gets no alert)."""
    users = session.scalars(select(User).where(User.disabled.is_(False), User.email.is_not(None))).all()
    return [_Recipient(u.id, AlertChoice(u.alerts)) for u in users if Role.DETECTIVE in u.role_set]


class AlertWorker:
    """Derives due alerts and sends them; run by the outbox dispatcher on every pass."""

    def __init__(self, ctx: ServiceContext, sms: Channel | None = None):
        self.ctx = ctx
        self.settings: Settings = ctx.settings
        self.clock: Callable[[], dt.datetime] = ctx.clock  # tests move time forward here
        self.sms = sms if ctx.settings.alert_sms_to else None

    @property
    def _media(self) -> tuple[AlertMedium, ...]:
        media = (AlertMedium.EMAIL,) if self.settings.smtp is not None else ()
        return media + ((AlertMedium.SMS,) if self.sms is not None else ())

    def run_once(self) -> int:
        """Queue what became due, then send what is due; returns how many sends were attempted.

        The dispatcher also sends tipsters' messages: when the mail server cannot be reached (or hangs
        until the timeout), the rest of the batch goes back to wait for the next retry rather than
        each alert waiting out its own timeout while replies to tipsters queue behind them."""
        self.derive()
        ids = self._claim()
        for done, alert_id in enumerate(ids):
            if not self._perform(alert_id):
                self._release(ids[done + 1 :])
                return done + 1
        return len(ids)

    def _release(self, alert_ids: list[str]) -> None:
        """Give claimed rows back untried, due again when the failed one is retried."""
        if not alert_ids:
            return
        with self.ctx.factory.begin() as session:
            session.execute(
                update(Alert)
                .where(Alert.id.in_(alert_ids), Alert.status == OutboxStatus.CLAIMED)
                .values(status=OutboxStatus.PENDING, lease_until=None, next_attempt_at=self.clock() + RELEASE_DELAY)
            )

    # Which events are due, found without the write lock (an idle tip line costs intake nothing).
    def _due(self) -> dict[AlertKind, list[int]]:
        now = self.clock()
        escalate_before = now - dt.timedelta(minutes=self.settings.escalate_minutes)
        finders = {
            AlertKind.URGENT: and_(Tip.urgent.is_(True), Tip.urgent_alerted_at.is_(None)),
            AlertKind.NEW: and_(Tip.alerted_new.is_(False), Tip.status != TipStatus.DRAFT),
            AlertKind.ESCALATION: and_(
                Tip.urgent.is_(True),
                Tip.escalated.is_(False),
                Tip.opened_at.is_(None),
                Tip.status != TipStatus.CLOSED,
                Tip.urgent_alerted_at <= escalate_before,
            ),
            AlertKind.FOLLOW_UP: and_(
                Tip.assignee_id.is_not(None), Tip.unread > Tip.alerted_unread, Tip.status != TipStatus.DRAFT
            ),
        }
        # Sandbox tips are the public playing tipster (the page is for demonstrations): they are
        # labelled in the console, but an alert is content-free and could not say so, so none is sent.
        # Nor for a sender a detective muted (abuse.py): a flood of "urgent" words must not page everyone.
        muted = select(Contact.id).where(Contact.muted.is_(True))
        real = and_(Tip.channel != SANDBOX_CHANNEL, or_(Tip.contact_id.is_(None), Tip.contact_id.not_in(muted)))
        with read_only(self.ctx.factory) as session:
            return {
                kind: list(session.scalars(select(Tip.id).where(where, real).order_by(Tip.id).limit(BATCH)))
                for kind, where in finders.items()
            }

    def derive(self) -> int:
        """Turn due events into alert rows, each exactly once; returns how many rows were queued."""
        due = {kind: ids for kind, ids in self._due().items() if ids}
        if not due:
            return 0
        queued = 0
        minute = to_minute(self.clock())
        with self.ctx.factory.begin() as session:
            recipients = _recipients(session)
            for kind, tip_ids in due.items():
                for tip_id in tip_ids:
                    claimed = self._mark(session, kind, tip_id, minute)
                    if claimed is not None:
                        queued += self._queue(session, kind, tip_id, claimed, recipients, minute)
        return queued

    def _mark(self, session: Session, kind: AlertKind, tip_id: int, minute: dt.datetime) -> int | None:
        """Mark the event done on the tip, if nobody did meanwhile; the assignee to tell (follow-ups) or 0."""
        if kind is AlertKind.FOLLOW_UP:
            row = session.execute(select(Tip.assignee_id, Tip.unread).where(Tip.id == tip_id)).first()
            if row is None or row.assignee_id is None:
                return None
            result = session.execute(
                update(Tip).where(Tip.id == tip_id, Tip.alerted_unread < row.unread).values(alerted_unread=row.unread)
            )
            return int(row.assignee_id) if rowcount(result) else None
        marks: dict[AlertKind, tuple[ColumnElement[bool], dict[str, object]]] = {
            AlertKind.URGENT: (Tip.urgent_alerted_at.is_(None), {"urgent_alerted_at": minute}),
            AlertKind.NEW: (Tip.alerted_new.is_(False), {"alerted_new": True}),
            AlertKind.ESCALATION: (Tip.escalated.is_(False), {"escalated": True}),
        }
        still, values = marks[kind]
        result = session.execute(update(Tip).where(Tip.id == tip_id, still).values(**values))
        return 0 if rowcount(result) else None

    def _queue(
        self,
        session: Session,
        kind: AlertKind,
        tip_id: int,
        assignee: int,
        recipients: list[_Recipient],
        minute: dt.datetime,
    ) -> int:
        rows: list[tuple[int | None, AlertMedium]] = []
        if AlertMedium.EMAIL in self._media:
            wanted = [r.user_id for r in recipients if r.choice in WANTS[kind]]
            if kind is AlertKind.FOLLOW_UP:
                wanted = [u for u in wanted if u == assignee]
            if kind is AlertKind.NEW and wanted:  # told already that it is urgent: once is enough
                told = set(
                    session.scalars(select(Alert.user_id).where(Alert.tip_id == tip_id, Alert.kind == AlertKind.URGENT))
                )
                wanted = [u for u in wanted if u not in told]
            rows += [(user_id, AlertMedium.EMAIL) for user_id in wanted]
        if AlertMedium.SMS in self._media and kind in (AlertKind.URGENT, AlertKind.ESCALATION):
            rows.append((None, AlertMedium.SMS))
        for user_id, medium in rows:
            session.execute(_INSERT, self._row(tip_id, user_id, kind, medium, minute))
        return len(rows)

    def _row(
        self, tip_id: int, user_id: int | None, kind: AlertKind, medium: AlertMedium, minute: dt.datetime
    ) -> dict[str, object]:
        return {
            "id": records.new_id(),
            "tip_id": tip_id,
            "user_id": user_id,
            "kind": kind,
            "medium": medium,
            "status": OutboxStatus.PENDING,
            "attempts": 0,
            "next_attempt_at": minute,
            "created_at": minute,
        }

    # Sending ---------------------------------------------------------------------------------------

    def _claim(self) -> list[str]:
        now = self.clock()
        due = or_(
            and_(Alert.status == OutboxStatus.PENDING, Alert.next_attempt_at <= now),
            and_(Alert.status == OutboxStatus.CLAIMED, Alert.lease_until < now),  # a dispatcher died
        )
        # The first alert about a tip before its escalation, whatever order their retries ended in.
        first = case({AlertKind.URGENT: 0, AlertKind.NEW: 1, AlertKind.FOLLOW_UP: 2}, value=Alert.kind, else_=3)
        query = select(Alert.id).where(due).order_by(first, Alert.next_attempt_at).limit(BATCH)
        return claim_due(self.ctx.factory, Alert, query, {"status": OutboxStatus.CLAIMED, "lease_until": now + LEASE})

    def _perform(self, alert_id: str) -> bool:
        """Send one alert; False when the mail server could not be reached (stop this pass)."""
        job = self._load(alert_id)
        if job is None:
            return True
        try:
            if job.medium is AlertMedium.EMAIL:
                self._send_email(job)
            else:
                self._send_sms(job)
        except AlertError as error:
            self._failed(alert_id, error)
            return error.permanent or job.medium is not AlertMedium.EMAIL or not error.unreachable
        self._settle(alert_id, OutboxStatus.SENT, None)
        return True

    def _load(self, alert_id: str) -> _Job | None:
        """Open a claimed row (recording that an attempt begins); None if it has nowhere to go any more."""
        with self.ctx.factory.begin() as session:
            alert = session.get(Alert, alert_id)
            if alert is None or alert.status != OutboxStatus.CLAIMED:
                return None
            tip = session.get(Tip, alert.tip_id)
            user = session.get(User, alert.user_id) if alert.user_id is not None else None
            address = self._address(alert, user)
            if tip is None or address is None:
                _settle(alert, OutboxStatus.CANCELLED, "no-recipient")
                return None
            if not still_holds(AlertKind(alert.kind), tip, alert.user_id):
                # Queued while mail was down, say, and no longer true: an escalation for a tip opened
                # since, an urgent alert for a tip cleared of it. A late alert that is wrong is worse
                # than none: it sends a detective to a tip someone already has.
                _settle(alert, OutboxStatus.CANCELLED, "stale")
                return None
            reference = tip.reference
            alert.attempt_started_at = to_minute(self.clock())
            return _Job(alert.id, AlertKind(alert.kind), AlertMedium(alert.medium), reference, address)

    def _address(self, alert: Alert, user: User | None) -> str | None:
        """Where the alert goes now: the account may have changed its mind (or its address) since."""
        if alert.medium == AlertMedium.SMS:
            return self.settings.alert_sms_to if self.sms is not None else None
        if user is None or user.disabled or not user.email or Role.DETECTIVE not in user.role_set:
            return None
        if AlertChoice(user.alerts) not in WANTS[AlertKind(alert.kind)]:
            return None
        return user.email

    def _link(self, reference: str) -> str:
        return f"{self.settings.public_url}/console/tips/{reference}"

    def _send_email(self, job: _Job) -> None:
        smtp, sender = self.settings.smtp, self.settings.mail_from
        if smtp is None or sender is None:
            raise AlertError("smtp-off", permanent=True)
        text = compose(job.kind, self.settings.agency_name, job.reference, self._link(job.reference))
        message = EmailMessage()
        message["From"] = sender
        message["To"] = job.address
        message["Subject"] = text.subject
        # To the minute, like every other time here; and the same id on every attempt (see the module doc).
        message["Date"] = format_datetime(to_minute(self.clock()).replace(tzinfo=dt.UTC))
        message["Message-ID"] = f"<alert-{job.alert_id}@{sender.rsplit('@', 1)[1]}>"
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies back to us
        message.set_content(text.body)
        send_mail(smtp, sender, job.address, message)

    def _send_sms(self, job: _Job) -> None:
        if self.sms is None:
            raise AlertError("sms-off", permanent=True)
        text = compose(job.kind, self.settings.agency_name, job.reference, self._link(job.reference))
        try:
            self.sms.send(job.address, text.sms)
        except ChannelError as error:
            raise AlertError(f"sms-{error.code}"[:64], permanent=error.permanent) from None

    def _settle(self, alert_id: str, status: OutboxStatus, error: str | None) -> None:
        with self.ctx.factory.begin() as session:
            alert = session.get(Alert, alert_id)
            if alert is not None:
                alert.attempts += 1
                _settle(alert, status, error)
        log.debug("alert %s %s", alert_id[:8], status)

    def _failed(self, alert_id: str, error: AlertError) -> None:
        with self.ctx.factory.begin() as session:
            alert = session.get(Alert, alert_id)
            if alert is None:
                return
            alert.attempts += 1
            if error.permanent or alert.attempts >= MAX_ATTEMPTS:
                _settle(alert, OutboxStatus.FAILED, error.code)
                log.warning("alert %s given up: %s", alert_id[:8], error.code)
                return
            alert.status = OutboxStatus.PENDING
            alert.lease_until = None
            alert.attempt_started_at = None
            alert.last_error = error.code
            alert.next_attempt_at = self.clock() + min(dt.timedelta(seconds=5 * 2**alert.attempts), BACKOFF_CAP)
        log.info("alert %s will be retried: %s", alert_id[:8], error.code)


@dataclass(frozen=True)
class _Job:
    alert_id: str
    kind: AlertKind
    medium: AlertMedium
    reference: str
    address: str  # never logged


def _settle(alert: Alert, status: OutboxStatus, error: str | None) -> None:
    alert.status = status
    alert.last_error = error
    alert.lease_until = None
    alert.attempt_started_at = None
    alert.next_attempt_at = to_minute(alert.next_attempt_at)


# SMTP ---------------------------------------------------------------------------------------------


def tls_context(smtp: SmtpSettings) -> ssl.SSLContext:
    """Verifying TLS: the system's CAs, or only the agency's own (TIPLINE_SMTP_CA_FILE) when given."""
    return ssl.create_default_context(cafile=str(smtp.ca_file) if smtp.ca_file else None)


def send_mail(smtp: SmtpSettings, sender: str, recipient: str, message: EmailMessage) -> None:
    """Hand one message to the server. STARTTLS whenever offered (smtp://), TLS throughout for
    smtps://; certificates always verified. Credentials never go over a connection without TLS.
    Raises AlertError with a code: permanent for a 5xx refusal, temporary otherwise."""
    context = tls_context(smtp)
    try:
        with _connect(smtp, context) as server:
            server.ehlo()
            if not smtp.implicit_tls:
                _starttls(server, smtp, context)
            if smtp.username and smtp.password is not None:
                server.login(smtp.username, smtp.password)
            server.send_message(message, from_addr=sender, to_addrs=[recipient])
    except smtplib.SMTPRecipientsRefused as error:
        codes = [code for code, _ in error.recipients.values()]
        raise AlertError(f"smtp-rcpt-{codes[0] if codes else 0}", permanent=_permanent(codes)) from None
    except smtplib.SMTPResponseException as error:
        raise AlertError(f"smtp-{error.smtp_code}", permanent=_permanent([error.smtp_code])) from None
    except ssl.SSLCertVerificationError:
        log.warning("alert mail: the SMTP server's certificate did not verify (see TIPLINE_SMTP_CA_FILE)")
        raise AlertError("smtp-tls-verify") from None
    except (smtplib.SMTPServerDisconnected, OSError) as error:  # refused, timed out, dropped: all alike
        raise AlertError(f"smtp-{type(error).__name__}"[:64], unreachable=True) from None
    except smtplib.SMTPException as error:
        raise AlertError(f"smtp-{type(error).__name__}"[:64]) from None


def _connect(smtp: SmtpSettings, context: ssl.SSLContext) -> smtplib.SMTP:
    if smtp.implicit_tls:
        return smtplib.SMTP_SSL(smtp.host, smtp.port, timeout=SMTP_TIMEOUT, context=context)
    return smtplib.SMTP(smtp.host, smtp.port, timeout=SMTP_TIMEOUT)


def _starttls(server: smtplib.SMTP, smtp: SmtpSettings, context: ssl.SSLContext) -> None:
    if server.has_extn("starttls"):
        server.starttls(context=context)
        server.ehlo()
    elif smtp.username:
        # A password in clear, or a server stripped of STARTTLS by someone in the middle: refuse.
        raise AlertError("smtp-no-starttls")
    else:
        _warn_plain_once()


_warned: list[bool] = []


def _warn_plain_once() -> None:
    if not _warned:
        _warned.append(True)
        log.warning("alert mail: the SMTP server offers no STARTTLS; alerts (content-free) go unencrypted")


def _permanent(codes: Iterable[int]) -> bool:
    return any(500 <= code < 600 for code in codes)
