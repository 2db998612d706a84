"""Which tip line processes are running: a heartbeat per `serve`, `dispatch` and `telegram poll`.

Each long-running process writes a row and refreshes it every BEAT seconds; a row not refreshed
for ALIVE is a process that stopped (or was killed). Commands that would break running processes
ask first: `tipline keys rotate-master` with the master key in TIPLINE_MASTER_KEY refuses while
any is alive, since a process cannot read a new value of its environment.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from dataclasses import dataclass

from sqlalchemy import delete, select

from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.db import read_only
from tipline.storage.models import ProcessBeat

log = logging.getLogger(__name__)

BEAT = 10.0  # seconds between heartbeats
ALIVE = dt.timedelta(seconds=3 * BEAT)  # a process silent for longer is taken for stopped


@dataclass(frozen=True)
class Running:
    kind: str
    follows_master_file: bool
    seen_at: dt.datetime


class Heartbeat:
    """This process's row in process_beats, refreshed by a daemon thread until `stop()`."""

    def __init__(self, ctx: ServiceContext, kind: str):
        self.ctx = ctx
        self.kind = kind
        self.id = records.new_id()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> Heartbeat:
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.kind}", daemon=True)
        self._thread.start()
        return self

    def beat(self) -> None:
        now = self.ctx.now()
        with self.ctx.factory.begin() as session:
            row = session.get(ProcessBeat, self.id)
            if row is None:
                follows = self.ctx.settings.master_key is None
                session.add(
                    ProcessBeat(id=self.id, kind=self.kind, follows_master_file=follows, started_at=now, seen_at=now)
                )
            else:
                row.seen_at = now
            session.execute(delete(ProcessBeat).where(ProcessBeat.seen_at < now - 10 * ALIVE))

    def _run(self) -> None:
        while not self._stop.wait(BEAT):
            try:
                self.beat()
                # An idle process looks at the keys too, so that a retired key leaves its memory
                # even when nothing asks for a key.
                self.ctx.keys.refresh()
            except Exception as error:  # noqa: BLE001 - a missed beat is not worth a dead thread
                log.warning("heartbeat failed: %s", type(error).__name__)

    def stop(self) -> None:
        """Say goodbye: the row goes at once, so a command run right after does not wait for it."""
        self._stop.set()
        try:
            with self.ctx.factory.begin() as session:
                session.execute(delete(ProcessBeat).where(ProcessBeat.id == self.id))
        except Exception as error:  # noqa: BLE001 - the row expires by itself
            log.warning("heartbeat not removed: %s", type(error).__name__)


def running(ctx: ServiceContext) -> list[Running]:
    """The processes seen within ALIVE."""
    since = ctx.now() - ALIVE
    with read_only(ctx.factory) as session:
        rows = session.scalars(select(ProcessBeat).where(ProcessBeat.seen_at >= since).order_by(ProcessBeat.kind))
        return [Running(r.kind, r.follows_master_file, r.seen_at) for r in rows]
