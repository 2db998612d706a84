"""Periodic upkeep: idle drafts, retention, and forgetting what we no longer need.

Run by the dispatcher every minute and on demand by `tipline purge`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select

from tipline.core.vocabulary import ErasedReason, OutboxStatus
from tipline.services import outbox
from tipline.services.intake import Intake, forget_deliveries
from tipline.storage import records
from tipline.storage.db import rowcount
from tipline.storage.models import ConsoleSession, Contact, OutboxItem, utcnow

FINISHED_OUTBOX_KEPT = dt.timedelta(days=7)
FINISHED = (OutboxStatus.SENT, OutboxStatus.DONE, OutboxStatus.FAILED, OutboxStatus.CANCELLED)


@dataclass(frozen=True)
class PurgeReport:
    drafts_expired: int
    addresses_erased: int
    deliveries_forgotten: int
    outbox_rows_deleted: int
    console_sessions_ended: int = 0

    def lines(self) -> list[str]:
        return [
            f"idle drafts submitted or dropped: {self.drafts_expired}",
            f"return addresses erased (retention): {self.addresses_erased}",
            f"remembered deliveries forgotten: {self.deliveries_forgotten}",
            f"finished outbox rows deleted: {self.outbox_rows_deleted}",
            f"expired console sessions removed: {self.console_sessions_ended}",
        ]


def purge(
    intake: Intake,
    retention_days: int,
    now: dt.datetime | None = None,
    session_idle: dt.timedelta = dt.timedelta(minutes=15),
    session_lifetime: dt.timedelta = dt.timedelta(hours=12),
) -> PurgeReport:
    now = now or utcnow()
    drafts = intake.expire_idle()
    cutoff = now - dt.timedelta(days=retention_days)
    with intake.ctx.factory.begin() as session:
        stale = session.scalars(
            select(Contact).where(Contact.last_activity_at < cutoff, Contact.address_ct.is_not(None))
        ).all()
        for contact in stale:
            records.erase_address(contact, ErasedReason.RETENTION)
            outbox.cancel_sends(session, contact.id, ErasedReason.RETENTION)
        deliveries = forget_deliveries(session, now)
        finished = session.execute(
            delete(OutboxItem).where(
                OutboxItem.status.in_(FINISHED),
                OutboxItem.created_at < now - FINISHED_OUTBOX_KEPT,
            )
        )
        ended = session.execute(
            delete(ConsoleSession).where(
                (ConsoleSession.last_seen_at < now - session_idle)
                | (ConsoleSession.created_at < now - session_lifetime)
            )
        )
    return PurgeReport(
        drafts,
        len(stale),
        deliveries,
        rowcount(finished),
        rowcount(ended),
    )
