"""Abuse control without identity: bound what one sender can make the tip line do, never what it keeps.

A sender is known only by their contact row (a keyed pseudonym). Three tools:

- **A per-sender reply window** (`pace`): the first `TIPLINE_SENDER_REPLY_LIMIT` messages of a
  sender within `TIPLINE_SENDER_WINDOW_MINUTES` are answered and bump the tip's unread count as
  usual; the next one gets a single notice ("we are receiving and keeping all your messages; slow
  down; 911 if anyone is in danger"), and the ones after it are stored without an answer or a bump
  until the window passes. Nothing is dropped: every message is written to the tip as any other, so
  a real tipster who sends a long story in many short texts loses nothing, and a detective's reply
  is never held back. The window lives on the contact row (its start to the minute, like
  `last_activity_at`, and a count) rather than in process memory: several workers then share one
  count, the contact row is locked by intake anyway, and nothing more precise than the minute is kept.
- **Mute** (`review.set_muted`, from a tip in the console): the tip's sender gets no answers and
  bumps no unread count; their messages are still stored. The detective never learns who it is.
- **New senders per hour** (`count_new_sender`, `new_senders`): one mark per new sender with its
  hour and channel only, no link to any contact, counted per hour for administrators with a
  warning above a threshold; maintenance drops marks older than two days (`forget_new_senders`).
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tipline.config import Settings
from tipline.services.context import ServiceContext
from tipline.storage.db import rowcount
from tipline.storage.models import Contact, NewSender, table_of, to_minute

NEW_SENDER_MEMORY = dt.timedelta(days=2)  # hourly counts older than this are dropped
NEW_SENDER_SPAN = 24  # hours shown to administrators
_MARK = table_of(NewSender).insert()  # compiled once: this runs on the hot path of a first message


class Pace(enum.Enum):
    """What the tip line does with one more message from a sender."""

    ANSWER = "answer"  # as usual
    NOTICE = "notice"  # the first message past the limit: one "slow down" notice, no unread bump
    SILENT = "silent"  # stored; no answer, no unread bump (past the notice, or muted)


def pace(contact: Contact, now: dt.datetime, settings: Settings) -> Pace:
    """Count one more message of `contact` in its window (the caller holds the row locked)."""
    if contact.muted:
        return Pace.SILENT
    minute = to_minute(now)
    started = contact.window_started_at
    if started is None or minute >= started + dt.timedelta(minutes=settings.sender_window_minutes):
        contact.window_started_at, contact.window_messages = minute, 0
    contact.window_messages = (contact.window_messages or 0) + 1
    over = contact.window_messages - settings.sender_reply_limit
    if over <= 0:
        return Pace.ANSWER
    return Pace.NOTICE if over == 1 else Pace.SILENT


def _hour(moment: dt.datetime) -> dt.datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def count_new_sender(session: Session, channel: str, now: dt.datetime) -> None:
    """Mark that one more sender wrote for the first time this hour (inside intake's transaction).

    An INSERT, never an UPDATE of a shared counter: concurrent first messages never wait on each other."""
    session.connection().execute(_MARK, {"hour": _hour(now), "channel": channel})


def forget_new_senders(session: Session, now: dt.datetime) -> int:
    """Drop the marks older than NEW_SENDER_MEMORY (maintenance); returns how many."""
    return rowcount(session.execute(delete(NewSender).where(NewSender.hour < _hour(now) - NEW_SENDER_MEMORY)))


@dataclass(frozen=True)
class NewSenders:
    """New senders per hour over the last day, oldest first, for administrators (counts only)."""

    hours: tuple[tuple[dt.datetime, int], ...]  # (start of the hour, UTC; senders that hour, all channels)
    threshold: int

    @property
    def total(self) -> int:
        return sum(count for _, count in self.hours)

    @property
    def peak(self) -> int:
        return max((count for _, count in self.hours), default=0)

    @property
    def bursts(self) -> tuple[tuple[dt.datetime, int], ...]:
        """The hours above the threshold."""
        return tuple((hour, count) for hour, count in self.hours if count > self.threshold)


def new_senders(ctx: ServiceContext) -> NewSenders:
    """How many senders wrote for the first time in each of the last 24 hours (this one included)."""
    current = _hour(ctx.now())
    first = current - dt.timedelta(hours=NEW_SENDER_SPAN - 1)
    with ctx.factory() as session:
        rows = session.execute(
            select(NewSender.hour, func.count()).where(NewSender.hour >= first).group_by(NewSender.hour)
        ).all()
    counts: dict[dt.datetime, int] = {}
    for hour, senders in rows:
        counts[hour] = counts.get(hour, 0) + senders
    hours = tuple(
        (first + dt.timedelta(hours=n), counts.get(first + dt.timedelta(hours=n), 0)) for n in range(NEW_SENDER_SPAN)
    )
    return NewSenders(hours, ctx.settings.new_sender_alert_per_hour)
