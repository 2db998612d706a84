"""Reconciliation: take in what Twilio received while the tip line could not (issue 12).

Twilio does not retry a webhook that failed or timed out; it keeps the message in the account's
Messages log. `reconcile()` lists the inbound messages to our line since the last reconciled
point, oldest first, and hands each to the same `Intake.receive` the webhook uses. The delivery
deduplication (`ProcessedDelivery`, a keyed hash of the MessageSid) decides what is new: a message
the webhook already took in is recognised and nothing happens twice. A message taken in here has
nobody waiting for a TwiML answer, so its replies go through the outbox by the REST API
(`InboundMessage.answer_inline` is False); its photos are fetched and Twilio's copies deleted by
the same code as any message's.

The high-water mark (`ReconcileMark`) says up to when the log has been handled completely: the
end of the last run's window when every message in it was handled (taken in, or found already
processed), otherwise the sending time of the last message handled before the first one that
failed. It is kept to the minute, like every other time a tipster causes: a time to the second
could be matched against carrier records (and a run's own time says nothing about a tipster).
Each run reads again from `mark - OVERLAP`, an overlap longer than that minute and than any
clock skew or listing delay at Twilio, so no message is skipped; the messages read twice are
duplicates that change nothing.

Never twice: the deduplication remembers a delivery for `intake.DELIVERY_MEMORY` (7 days). A run
never looks at messages sent earlier than `now - LOOKBACK_LIMIT`, a limit shorter than that
memory, so a message old enough to have been forgotten can never be taken in a second time. The
price is that a message lost during an outage longer than LOOKBACK_LIMIT, with no reconciliation
in between, stays in Twilio's log only (the run says so in its log line, by count).

The run logs one INFO line with counts only: Twilio's log holds senders' numbers and texts, which
exist here only in memory on their way into intake (which seals them as it does the webhook's).
"""

from __future__ import annotations

import datetime as dt
import logging
import sqlite3
from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session

from tipline.config import Settings
from tipline.core.catalog import DEFAULT_LANGUAGE, Text, render
from tipline.core.channels import ChannelError, InboundMessage, LoggedInbound, LoggedOutbound
from tipline.core.conversation import guess_language
from tipline.core.crypto import Keyring
from tipline.services import outbox
from tipline.services.context import ServiceContext
from tipline.services.intake import DELIVERY_MEMORY, Duplicate, Intake, Result, delivery_keys, remember_once
from tipline.storage.db import rowcount
from tipline.storage.faults import describe
from tipline.storage.models import Contact, ProcessedDelivery, ReconcileMark, to_minute

log = logging.getLogger(__name__)

LOG_NAME = "sms"  # the ReconcileMark row of Twilio's Messages log
# A reply's copy is deleted once Twilio reports its final status. A report that has not come a day
# after the reply never will (a carrier that does not confirm delivery, a callback that found the
# tip line down): the sweep then deletes the copy all the same, and again a day later if it is
# still there (its deletion still retried, or failed for good).
SWEEP_AFTER = dt.timedelta(days=1)
SWEEP_AGAIN = dt.timedelta(days=1)
SWEEP_EVERY = dt.timedelta(hours=1)  # the dispatcher's sweeps: each lists the whole window again
# How far back the sweep lists at least, however short TIPLINE_RETENTION_DAYS: a copy whose deletion
# failed is still listed, and queued again, for days; a REST copy from our number can be told from
# another application's only while the tip line keeps its send (maintenance.FINISHED_OUTBOX_KEPT).
SWEEP_WINDOW = dt.timedelta(days=7)
MARK_PRECISION = dt.timedelta(minutes=1)  # the mark is stored to the minute
OVERLAP = dt.timedelta(minutes=10)  # read again before the mark: > MARK_PRECISION + clock skew
# The oldest message a run considers: younger than the deduplication memory, with an hour to
# spare for clock skew and the minute that memory is cut to.
LOOKBACK_LIMIT = DELIVERY_MEMORY - dt.timedelta(hours=1)
FIRST_LOOKBACK = dt.timedelta(days=1)  # a first run (no mark yet) looks back this far
PERIODIC_GRACE = dt.timedelta(seconds=60)  # the dispatcher leaves messages this young to the webhook
# The database cannot take a message now (stopped, unreachable, locked past its timeout, disk full,
# read-only): not a fault of the message, which Twilio keeps in its log for reconciliation. On SQLite
# a COMMIT that fails (a full disk) raises the sqlite3 module's own error: db.make_engine commits itself.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout, sqlite3.OperationalError)


def check_windows() -> None:
    """The windows' invariants (checked at import, i.e. at start-up, and by the tests)."""
    if not MARK_PRECISION <= OVERLAP < LOOKBACK_LIMIT < DELIVERY_MEMORY:
        raise RuntimeError("reconciliation windows must satisfy precision <= overlap < lookback < dedupe memory")
    if not FIRST_LOOKBACK <= LOOKBACK_LIMIT:
        raise RuntimeError("the first reconciliation must not look back past the deduplication memory")


check_windows()


class MessageLog(Protocol):
    """A provider's log of messages (adapters.sms.TwilioSms)."""

    name: str  # the channel whose log it is

    def inbound_since(self, since: dt.datetime, until: dt.datetime | None = None) -> list[LoggedInbound]: ...

    def outbound_between(self, since: dt.datetime, until: dt.datetime) -> list[LoggedOutbound]: ...


@dataclass(frozen=True)
class Report:
    """What one run did, in counts (safe to log)."""

    listed: int = 0  # inbound messages in the window
    taken_in: int = 0  # new: processed now
    already: int = 0  # processed before (by the webhook or an earlier run)
    unusable: int = 0  # not a message we can take in (e.g. an alphanumeric sender)
    failed: int = 0  # could not be processed now: read again next run
    stale_mark: bool = False  # the mark was older than LOOKBACK_LIMIT: older messages were not read


def window_start(mark: dt.datetime | None, now: dt.datetime) -> tuple[dt.datetime, bool]:
    """Where a run starts reading (naive UTC), and whether the limit cut the window short."""
    floor = now - LOOKBACK_LIMIT
    start = mark - OVERLAP if mark is not None else now - FIRST_LOOKBACK
    return (floor, True) if start < floor else (start, False)


def read_mark(ctx: ServiceContext) -> dt.datetime | None:
    with ctx.factory() as session:
        row = session.get(ReconcileMark, LOG_NAME)
        return row.mark if row is not None else None


def save_mark(ctx: ServiceContext, mark: dt.datetime) -> None:
    """Move the mark forward to `mark` (cut to the minute); never backwards (runs may overlap)."""
    mark = to_minute(mark)
    try:
        with ctx.factory.begin() as session:
            row = session.get(ReconcileMark, LOG_NAME, with_for_update=True)
            if row is None:
                session.add(ReconcileMark(log=LOG_NAME, mark=mark))
            elif row.mark < mark:
                row.mark = mark
    except IntegrityError:
        save_mark(ctx, mark)  # a concurrent first run inserted the row: move it forward instead


def reconcile(
    ctx: ServiceContext,
    source: MessageLog,
    intake: Intake,
    *,
    grace: dt.timedelta = dt.timedelta(0),
    now: dt.datetime | None = None,
) -> Report:
    """Take in every message of the provider's log since the mark that intake has not processed.

    `grace`: leave messages younger than this to the webhook (the periodic run); `now`: naive UTC
    (default: the context's clock). Raises ChannelError when the provider cannot be listed; a
    database failure stops the run (the mark stays before the message that failed)."""
    now = now or ctx.clock()
    start, stale = window_start(read_mark(ctx), now)
    end = now - grace
    listed = source.inbound_since(start.replace(tzinfo=dt.UTC), end.replace(tzinfo=dt.UTC) if grace else None)
    run = _Run(intake)
    for item in listed:
        if not run.handle(item):
            break  # the database is unavailable: the rest waits for the next run
    report = Report(len(listed), run.taken_in, run.already, run.unusable, run.failed, stale)
    mark = run.mark if run.blocked else end  # complete: the whole window is handled
    if mark is not None:
        try:
            save_mark(ctx, mark)
        except DATABASE_DOWN:
            if not run.blocked:
                raise
            # the database went away during the run: the next run reads from the old mark again
    log.info(
        "twilio reconcile: %d listed, %d taken in, %d already processed, %d unusable, %d failed%s",
        report.listed,
        report.taken_in,
        report.already,
        report.unusable,
        report.failed,
        "; the last run was longer ago than the deduplication memory allows reading back" if stale else "",
    )
    return report


def sweep_replies(ctx: ServiceContext, source: MessageLog, *, now: dt.datetime | None = None) -> int:
    """Queue the deletion of every copy of our own messages (REST sends and TwiML replies) still in
    the provider's log more than SWEEP_AFTER after it was sent: a copy whose final report never
    came would otherwise stay there, with the tipster's number, until the log's retention ends.

    Lists the whole window every time, from TIPLINE_RETENTION_DAYS back (what the tip line keeps no
    longer, it leaves at the provider no longer either; SWEEP_WINDOW at least) to `now -
    SWEEP_AFTER`: copies already deleted are no longer listed, so what is listed is what still
    needs doing, and a run that failed halfway loses nothing. A copy is queued at most once a day
    (remembered by keyed hash, as deliveries are): one whose deletion is still being retried, or
    failed for good, is queued again a day later. A REST copy the listing cannot tell from another
    application's on our number is deleted only if the tip line remembers sending it. Queued under
    a blank stand-in contact: the sweep learns no sender. Returns how many were queued; nothing
    when provider deletion is off (TIPLINE_PROVIDER_DELETE=0). Raises ChannelError when the
    provider cannot be listed."""
    if not ctx.settings.provider_delete:
        return 0
    now = now or ctx.clock()
    start = now - max(dt.timedelta(days=ctx.settings.retention_days), SWEEP_WINDOW)
    listed = source.outbound_between(start, now - SWEEP_AFTER)  # naive UTC, as every time the tip line keeps
    queued = unknown = 0
    if listed:
        keyring = ctx.keyring
        with ctx.factory.begin() as session:
            stand_in: tuple[Contact, bytes] | None = None
            for copy in listed:
                if not copy.certain and outbox.find_sent(session, keyring, source.name, copy.sid) is None:
                    unknown += 1  # perhaps another application's, on our number: not ours to delete
                    continue
                if not _due_again(session, keyring, f"{source.name}:swept:{copy.sid}", now):
                    continue  # queued within the day: its deletion is under way
                stand_in = stand_in or outbox.stand_in(session, keyring, source.name, now)
                outbox.enqueue_delete(session, stand_in[0], stand_in[1], copy.sid, now)
                queued += 1
    log.info(
        "twilio sweep: %d of our messages in the log past their report, %d queued for deletion, "
        "%d from our number not known as ours left alone",
        len(listed) - unknown,
        queued,
        unknown,
    )
    return queued


def _due_again(session: Session, keyring: Keyring, value: str, now: dt.datetime) -> bool:
    """Whether the copy `value` names may be queued now (not within SWEEP_AGAIN); if so, remember it."""
    until = to_minute(now) + SWEEP_AGAIN
    try:
        with session.begin_nested():
            remember_once(session, keyring, value, until)
        return True
    except Duplicate:
        keys = delivery_keys(keyring, value)  # remembered under this pepper or, since a rotation, an older one
        again = update(ProcessedDelivery).where(ProcessedDelivery.key.in_(keys), ProcessedDelivery.expires_at <= now)
        return rowcount(session.execute(again.values(expires_at=until))) > 0


class _Run:
    """One pass over a listing, oldest first: counts, and how far everything was handled."""

    def __init__(self, intake: Intake):
        self.intake = intake
        self.taken_in = self.already = self.unusable = self.failed = 0
        self.mark: dt.datetime | None = None  # naive UTC: everything sent up to here is handled
        self.blocked = False  # a message failed: the mark stays before it
        self._failed_senders: set[str] = set()  # in memory only: their later messages wait (order)

    def handle(self, item: LoggedInbound) -> bool:
        """Handle one listed message; False when the database is unavailable (stop the run)."""
        message = item.message
        if message is None:
            self.unusable += 1
        elif message.address in self._failed_senders:
            self.failed += 1  # an earlier message of this sender failed: keep their order
        else:
            try:
                result = self.intake.receive(message)
            except DATABASE_DOWN as error:
                name, cause = type(error).__name__, describe(error)
                log.warning("twilio reconcile stopped: database unavailable (%s): %s", name, cause)
                self.failed += 1
                self.blocked = True
                return False
            except Exception as error:  # noqa: BLE001 - one message must not stop the others
                log.error("twilio reconcile: a message could not be processed (%s)", type(error).__name__)
                self._failed_senders.add(message.address)
                self.failed += 1
                self.blocked = True
                return True
            if result.duplicate:
                self.already += 1
            else:
                self.taken_in += 1
        if not self.blocked:
            self.mark = item.sent_at.astimezone(dt.UTC).replace(tzinfo=None)
        return True


def periodic(ctx: ServiceContext, source: MessageLog | None, intake: Intake, *, sweep: bool = True) -> Report | None:
    """The dispatcher's run: like `tipline twilio reconcile`, leaving the youngest messages to the
    webhook, and with `sweep`, sweeping our own copies (`sweep_replies`); None when there is no SMS
    channel. Provider failures are logged, not raised."""
    if source is None:
        return None
    report = None
    try:
        report = reconcile(ctx, source, intake, grace=PERIODIC_GRACE)
    except ChannelError as error:
        log.warning("twilio reconcile: Twilio could not be listed (%s)", error.code)
    except DATABASE_DOWN as error:
        log.warning("twilio reconcile: database unavailable (%s): %s; next time", type(error).__name__, describe(error))
    if sweep:
        sweep_or_warn(ctx, source)
    return report


def sweep_or_warn(ctx: ServiceContext, source: MessageLog) -> int | None:
    """`sweep_replies`, its failures logged (the next run sweeps the whole window again); None then."""
    try:
        return sweep_replies(ctx, source)
    except ChannelError as error:
        log.warning("twilio sweep: Twilio could not be listed (%s); next time", error.code)
    except DATABASE_DOWN as error:
        log.warning("twilio sweep: database unavailable (%s): %s; next time", type(error).__name__, describe(error))
    return None


def receive_or_defer(intake: Intake, message: InboundMessage) -> Result | None:
    """The webhook's intake, or None when the database cannot take the message now.

    Twilio does not retry a failed webhook but keeps the message in its Messages log, so the
    webhook answers 200 anyway (`deferred_replies`) and reconciliation takes the message in once
    the database is back. Nothing of the message is written anywhere meanwhile."""
    try:
        return intake.receive(message)
    except DATABASE_DOWN as error:
        log.error(
            "sms webhook: database unavailable (%s): %s; the message waits in Twilio's log",
            type(error).__name__,
            describe(error),
        )
        return None


def deferred_replies(settings: Settings, text: str = "") -> tuple[str, ...]:
    """What the webhook answers a message it could not store: "received, we answer in a few
    minutes, 911 if in danger", when reconciliation runs by itself; nothing when it is off (an
    operator must run it). The tipster's language is in the database, so it is guessed from the
    message's own words (the default language when they say nothing)."""
    if not settings.twilio_reconcile_seconds:
        return ()
    language = guess_language(text) or DEFAULT_LANGUAGE
    return (render(Text.of("received_later"), language, settings.catalog_defaults),)
