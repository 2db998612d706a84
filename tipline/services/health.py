"""What /healthz reports: can the database be written, do replies go out, how much is waiting.

The answer is content-free (states, counts and ages, never a reference, a number or a word), and
it is unhealthy (503) in the two cases where tipsters are failed without anyone noticing:

- the database cannot be WRITTEN. Reads go on answering with a full disk or a read-only file,
  while every webhook fails, so the check writes: one row of `health_probe`, in its own short
  transaction, nothing about anyone. A success is reused for PROBE_EVERY, so that a caller
  polling /healthz in a loop cannot turn it into a stream of synced writes.
- no dispatcher has completed a pass for SILENT. The dispatcher may run in `serve`, in `tipline
  dispatch` or in `telegram poll`, on this machine or another, so the signal is in the database:
  each process's heartbeat copies the time of its dispatcher's last pass into `process_beats`.
  A `serve --no-dispatcher` with no `dispatch` process anywhere is unhealthy too: replies never
  go out.

Why SILENT is two minutes: a dispatcher stamps its start, every pass (an idle one passes every
second, Dispatcher.run_forever) and every row it performs; the heartbeat copies the stamp every
BEAT (10 s). The longest a healthy dispatcher goes without a stamp is one provider call that times
out (Twilio 15 s, the Bot API 60 s) or one page of Twilio's log, so 10 + 60 s with room to spare;
a dispatcher stuck for longer is not sending replies either. Ages are measured against this
process's clock: servers of one database must keep their clocks in step (NTP).

Who sees what: the counts time tipsters. Every inbound SMS queues the deletion of Twilio's copy,
due a minute later, so a backlog polled from outside goes 0, 1, 0 with each message, and the age
of the oldest row would give its arrival to the second. So only a client on this machine (loopback:
the operator's monitor, `curl` over ssh) gets the counts and ages (`details`); anyone else gets
the status alone, 200 or 503. Behind a trusted reverse proxy the client is the proxy's client, so
the internet is never loopback. Ages are floored to whole minutes (the precision the tip line keeps
of any time), and the queues count only rows that wait: due and not being worked on (a row leased
by a worker is being sent or fetched; one whose lease ran out waits again). A send in progress is
not a backlog, and leaving it out keeps each send from showing as a blip.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from tipline.core.vocabulary import AttachmentStatus, OutboxStatus
from tipline.services.context import ServiceContext
from tipline.storage import faults
from tipline.storage.db import read_only, rowcount
from tipline.storage.models import Attachment, HealthProbe, OutboxItem, ProcessBeat

SILENT = dt.timedelta(minutes=2)
PROBE_EVERY = 2.0  # seconds a successful write probe is reused
NO_DISPATCHER = "no dispatcher is running: replies to tipsters do not go out (start `tipline dispatch`)"
SILENT_DISPATCHER = "the dispatcher has not completed a pass lately: replies to tipsters may not go out"


@dataclass(frozen=True)
class Queue:
    """Rows waiting: how many, and how long the longest-waiting one has been due (seconds, floored
    to whole minutes: see the module's docstring)."""

    count: int
    oldest_seconds: int | None


@dataclass(frozen=True)
class Dispatcher:
    state: str  # "ok", "silent", "none" (never seen) or "unknown" (the database did not answer)
    seconds_since_pass: int | None


@dataclass(frozen=True)
class Report:
    database: str  # "ok" or a faults.Cause value
    dispatcher: Dispatcher
    outbox: Queue | None
    photos: Queue | None

    @property
    def healthy(self) -> bool:
        return self.database == "ok" and self.dispatcher.state == "ok"

    @property
    def status(self) -> str:
        return "ok" if self.healthy else "unavailable"

    def as_json(self) -> dict[str, Any]:
        """The full report, for a client on this machine only (see the module's docstring)."""
        dispatcher: dict[str, Any] = {
            "state": self.dispatcher.state,
            "seconds_since_pass": self.dispatcher.seconds_since_pass,
            "silent_after_seconds": int(SILENT.total_seconds()),
        }
        problem = {"none": NO_DISPATCHER, "silent": SILENT_DISPATCHER}.get(self.dispatcher.state)
        if problem:
            dispatcher["problem"] = problem
        return {
            "status": self.status,
            "database": self.database,
            "dispatcher": dispatcher,
            "outbox": None if self.outbox is None else {"backlog": self.outbox.count, **_oldest(self.outbox)},
            "photos": None if self.photos is None else {"waiting": self.photos.count, **_oldest(self.photos)},
        }


def database_cause(error: BaseException) -> str | None:
    """For a log line: the cause of a database error ("database or disk is full"); None for any other."""
    return faults.describe(error) if isinstance(error, faults.ERRORS) else None


def _oldest(queue: Queue) -> dict[str, int | None]:
    return {"oldest_seconds": queue.oldest_seconds}


def is_local(address: str | None) -> bool:
    """Whether a client address is this machine's loopback (127.0.0.0/8, ::1, or 127.x mapped in IPv6)."""
    try:
        ip = ipaddress.ip_address((address or "").split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


class Probe:
    """This process's write check of the database (see the module's docstring)."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx
        self._lock = threading.Lock()
        self._ok_until = 0.0  # monotonic

    def database(self) -> str:
        """ "ok", or why the database cannot be written now (a faults.Cause value)."""
        with self._lock:  # concurrent checks share one write
            if time.monotonic() < self._ok_until:
                return "ok"
            try:
                self._write()
            except faults.ERRORS as error:
                return faults.cause(error).value
            self._ok_until = time.monotonic() + PROBE_EVERY
            return "ok"

    def _write(self) -> None:
        now = self.ctx.now()
        with self.ctx.factory.begin() as session:
            touched = session.execute(update(HealthProbe).where(HealthProbe.id == 1).values(probed_at=now))
            if not rowcount(touched):  # the row was deleted by hand: an update of nothing writes nothing
                session.add(HealthProbe(id=1, probed_at=now))


def report(ctx: ServiceContext, probe: Probe, now: dt.datetime | None = None) -> Report:
    """The database's state, the dispatcher's, and the queues (None where the database did not answer)."""
    database = probe.database()
    now = now or ctx.now()
    try:
        with read_only(ctx.factory) as session:
            last_pass = _last_pass(session)
            outbox = _queue(session, OutboxItem, OutboxStatus.PENDING, OutboxStatus.CLAIMED, now)
            photos = _queue(session, Attachment, AttachmentStatus.PENDING, AttachmentStatus.FETCHING, now)
    except faults.ERRORS as error:
        cause = faults.cause(error).value
        return Report(database if database != "ok" else cause, Dispatcher("unknown", None), None, None)
    return Report(database, _dispatcher(last_pass, now), outbox, photos)


def dispatcher_passing(ctx: ServiceContext) -> bool:
    """Whether /healthz would find a dispatcher passing (one read; False if the database fails)."""
    try:
        with read_only(ctx.factory) as session:
            last_pass = _last_pass(session)
    except faults.ERRORS:
        return False
    return _dispatcher(last_pass, ctx.now()).state == "ok"


def _last_pass(session: Session) -> dt.datetime | None:
    """When any process's dispatcher last completed a pass, as its heartbeat recorded it."""
    return session.scalar(select(func.max(ProcessBeat.dispatched_at)))


def _dispatcher(last_pass: dt.datetime | None, now: dt.datetime) -> Dispatcher:
    if last_pass is None:
        return Dispatcher("none", None)
    age = now - last_pass
    return Dispatcher("ok" if age <= SILENT else "silent", max(0, int(age.total_seconds())))


def _queue(session: Any, model: Any, waiting: str, leased: str, now: dt.datetime) -> Queue:
    """Rows that wait (due, or leased by a worker whose lease ran out): how many, and the longest
    overdue, in whole minutes. A row a worker holds now is being sent, not waiting."""
    status: InstrumentedAttribute[str] = model.status
    due_at: InstrumentedAttribute[dt.datetime] = model.next_attempt_at
    lease: InstrumentedAttribute[dt.datetime | None] = model.lease_until
    due = or_(and_(status == waiting, due_at <= now), and_(status == leased, lease < now))
    count, first = session.execute(select(func.count(), func.min(due_at)).where(due)).one()
    oldest = None if first is None else max(0, int((now - first).total_seconds())) // 60 * 60
    return Queue(int(count or 0), oldest)
