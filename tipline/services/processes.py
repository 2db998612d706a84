"""Which tip line processes are running: a heartbeat per `serve`, `dispatch` and `telegram poll`.

Each long-running process writes a row and refreshes it every BEAT seconds; a row not refreshed
for ALIVE is a process that stopped (or was killed). Commands that would break running processes
ask first: `tipline keys rotate-master` with the master key in TIPLINE_MASTER_KEY refuses while
any is alive, since a process cannot read a new value of its environment.

The row also carries when the process's dispatcher last completed a pass (`dispatched_at`, NULL
when it runs none), copied from the dispatcher's memory at each beat: /healthz on any app server
reads it to tell whether replies still go out (services/health.py). The beat thread itself keeps
running when the dispatcher thread has died, so a stale `dispatched_at` under a fresh `seen_at` is
exactly "this process is up but its dispatcher is not".
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import delete, select

from tipline.services.context import ServiceContext
from tipline.storage import faults, records
from tipline.storage.db import read_only
from tipline.storage.models import ProcessBeat

log = logging.getLogger(__name__)

BEAT = 10.0  # seconds between heartbeats
ALIVE = dt.timedelta(seconds=3 * BEAT)  # a process silent for longer is taken for stopped
LOOK = 1.0  # seconds between looks at the dispatcher's first pass (in memory: free)


@dataclass(frozen=True)
class Running:
    kind: str
    follows_master_file: bool
    seen_at: dt.datetime


class Heartbeat:
    """This process's row in process_beats, refreshed by a daemon thread until `stop()`."""

    def __init__(self, ctx: ServiceContext, kind: str, dispatched: Callable[[], dt.datetime | None] | None = None):
        self.ctx = ctx
        self.kind = kind
        self.id = records.new_id()
        # When this process's dispatcher last completed a pass (None: it has not, or runs none).
        self.dispatched = dispatched or (lambda: None)
        self._written: dt.datetime | None = None  # the value the last beat stored
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self.try_beat()  # a process that starts on a full disk still serves (and /healthz says why)
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> None:
        now = self.ctx.now()
        dispatched = self.dispatched()
        with self.ctx.factory.begin() as session:
            row = session.get(ProcessBeat, self.id)
            if row is None:
                follows = self.ctx.settings.master_key is None
                row = ProcessBeat(id=self.id, kind=self.kind, follows_master_file=follows, started_at=now, seen_at=now)
                session.add(row)
            row.seen_at = now
            row.dispatched_at = dispatched
            session.execute(delete(ProcessBeat).where(ProcessBeat.seen_at < now - 10 * ALIVE))
        self._written = dispatched

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(LOOK):
            # Every BEAT; and at once when the dispatcher completes its first pass, so that a
            # dispatcher just started counts for /healthz within a second, not ten.
            first_pass = self._written is None and self.dispatched() is not None
            if not first_pass and time.monotonic() - last < BEAT:
                continue
            last = time.monotonic()
            if self.try_beat():
                # An idle process looks at the keys too, so that a retired key leaves its memory
                # even when nothing asks for a key.
                try:
                    self.ctx.keys.refresh()
                except Exception as error:  # noqa: BLE001 - the next beat looks again
                    log.warning("keys not refreshed: %s", _why(error))

    def try_beat(self) -> bool:
        """`beat`, saying so in the log when it fails: a missed beat is not worth a dead process
        (the next one, a second or BEAT later, tries again)."""
        try:
            self.beat()
        except Exception as error:  # noqa: BLE001 - see above
            log.warning("heartbeat failed: %s", _why(error))
            return False
        return True

    def stop(self) -> None:
        """Say goodbye: the row goes at once, so a command run right after does not wait for it."""
        self._stop.set()
        try:
            with self.ctx.factory.begin() as session:
                session.execute(delete(ProcessBeat).where(ProcessBeat.id == self.id))
        except Exception as error:  # noqa: BLE001 - the row expires by itself
            log.warning("heartbeat not removed: %s", _why(error))


def _why(error: Exception) -> str:
    """The exception's type, and for a database error its cause ("database or disk is full")."""
    name = type(error).__name__
    return f"{name}: {faults.describe(error)}" if isinstance(error, faults.ERRORS) else name


def running(ctx: ServiceContext) -> list[Running]:
    """The processes seen within ALIVE."""
    since = ctx.now() - ALIVE
    with read_only(ctx.factory) as session:
        rows = session.scalars(select(ProcessBeat).where(ProcessBeat.seen_at >= since).order_by(ProcessBeat.kind))
        return [Running(r.kind, r.follows_master_file, r.seen_at) for r in rows]
