"""How the console and the case file write a stored time for people: absolute, in the agency's zone."""

from __future__ import annotations

import datetime as dt


def local_time(moment: dt.datetime | None, zone: dt.tzinfo) -> str:
    """A stored time (naive UTC, or aware) as "2026-12-03 07:45 CST" in `zone`; "—" for none."""
    if moment is None:
        return "—"
    aware = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
    return aware.astimezone(zone).strftime("%Y-%m-%d %H:%M %Z")
