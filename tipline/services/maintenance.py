"""Periodic upkeep: idle drafts, retention, and forgetting what we no longer need.

Run by the dispatcher every minute and on demand by `tipline purge`. Retention erases a silent
sender's return address, shreds the data key that sealed it and drops their pseudonym, so that
nothing can link them to anything again; senders left with no tip and nothing queued go entirely.
On SQLite the WAL is checkpointed afterwards, so that what was erased leaves the disk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, exists, or_, select

from tipline.core.vocabulary import ErasedReason, OutboxStatus
from tipline.services import abuse, auth, outbox
from tipline.services.intake import Intake, forget_deliveries
from tipline.storage.db import checkpoint, rowcount
from tipline.storage.models import ConsoleSession, Contact, OutboxItem, Tip, utcnow

FINISHED_OUTBOX_KEPT = dt.timedelta(days=7)
FINISHED = (OutboxStatus.SENT, OutboxStatus.DONE, OutboxStatus.FAILED, OutboxStatus.CANCELLED)


@dataclass(frozen=True)
class PurgeReport:
    drafts_expired: int
    addresses_erased: int
    deliveries_forgotten: int
    outbox_rows_deleted: int
    console_sessions_ended: int = 0
    senders_removed: int = 0

    def lines(self) -> list[str]:
        return [
            f"idle drafts submitted or dropped: {self.drafts_expired}",
            f"return addresses erased (retention): {self.addresses_erased}",
            f"remembered deliveries forgotten: {self.deliveries_forgotten}",
            f"finished outbox rows deleted: {self.outbox_rows_deleted}",
            f"expired console sessions removed: {self.console_sessions_ended}",
            f"unlinked senders removed: {self.senders_removed}",
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
    keyring = intake.ctx.keyring
    with intake.ctx.factory.begin() as session:
        # Opted-out senders too: STOP kept their pseudonym for START, retention ends that as well.
        # Locked as found: a sender writing right now is erased wholly before their message or not
        # at all (PostgreSQL checks the condition again on a row it had to wait for).
        stale = session.scalars(
            select(Contact)
            .where(
                Contact.last_activity_at < cutoff,
                or_(Contact.address_ct.is_not(None), Contact.pseudonym.is_not(None)),
            )
            .order_by(Contact.id)  # two purges at once lock in one order: no deadlock between them
            .with_for_update(key_share=True)
        ).all()
        erased = sum(contact.address_ct is not None for contact in stale)
        for contact in stale:
            outbox.erase_contact(session, keyring, contact, ErasedReason.RETENTION)
        deliveries = forget_deliveries(session, now)
        # The contacts the last statement may remove, locked before any of their rows goes, in one
        # order: whoever writes an outbox row locks its owner first (records.ROW_LOCK). A delivery
        # report arriving a week late held its stand-in and waited for the row deleted here, while
        # this waited for the stand-in: a deadlock, and the report got a 500.
        session.execute(select(Contact.id).where(*UNREACHABLE).order_by(Contact.id).with_for_update()).all()
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
        auth.forget_attempts(session, now)  # the sign-in budgets only look one window back
        abuse.forget_new_senders(session, now)  # administrators see the last day; two are kept
        removed = session.execute(delete(Contact).where(*UNREACHABLE_AND_UNUSED))
    report = PurgeReport(
        drafts,
        erased,
        deliveries,
        rowcount(finished),
        rowcount(ended),
        rowcount(removed),
    )
    if stale or any(count for count in (deliveries, report.outbox_rows_deleted, report.senders_removed)):
        checkpoint(intake.ctx.factory)  # what was erased or deleted leaves the WAL
    return report


# A contact no message can find again (no pseudonym), that no tip names and nothing in the outbox
# needs: a forgotten sender's blank stand-in once its provider deletions are done, or a silent
# sender who never sent a tip. Its conversation goes with it (ON DELETE CASCADE).
UNREACHABLE = (Contact.pseudonym.is_(None), ~exists().where(Tip.contact_id == Contact.id))
UNREACHABLE_AND_UNUSED = (*UNREACHABLE, ~exists().where(OutboxItem.contact_id == Contact.id))
