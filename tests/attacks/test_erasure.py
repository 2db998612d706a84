"""Threat: erased, but still on the disk.

A tipster sends FORGET (or STOP, or falls silent past the retention period) and is told their
return address is erased. An insider, or whoever copies the data directory, then reads the file
rather than the rows: the erased address ciphertext still sits in SQLite's WAL or in a free page,
and the contact's data key, still in its row, opens it; the pseudonym kept after retention lets
anyone holding the pepper recover the number by trying every number (milliseconds).

What must hold: after each erasure, none of the bytes of the sender's former record (the address
ciphertext, the wrapped data key that sealed it, and where the promise is "nothing links me" the
pseudonym and, for FORGET, the contact the tip pointed to) is in any file of the data directory
(database, -wal, -shm, journal). STOP keeps the pseudonym so that START works; that is said in the
README. What must survive the erasure still works: the provider copies still queued are deleted,
the tip still reads, and a detective's reply after FORGET is refused.

On PostgreSQL the same is asserted on the rows of every table: the old values are gone. That the
bytes also leave PostgreSQL's files (dead tuples, WAL, archives, backups) is the operator's part,
VACUUM and WAL/backup retention, as README says.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pytest
from sqlalchemy import select, update

from tests.support import samples
from tests.support.anonymity import scan_database, scan_files
from tests.support.harness import TIPSTER, Harness, new_sid, photos, reference_of, replies
from tests.support.processes import run
from tests.support.scratch import PG_URL
from tipline.core.vocabulary import AttachmentStatus, OutboxKind, OutboxStatus
from tipline.services import intake, review
from tipline.services.maintenance import purge
from tipline.storage.models import Contact, OutboxItem, Tip, to_minute, utcnow


@dataclass(frozen=True)
class Former:
    """What the sender's record held before the erasure."""

    contact_id: str
    address: bytes
    wrapped_key: bytes
    pseudonym: str


def the_contact(tipline: Harness) -> Contact:
    with tipline.runtime.factory() as session:
        return session.scalars(select(Contact).where(Contact.address_ct.is_not(None))).one()


def former_record(tipline: Harness) -> Former:
    contact = the_contact(tipline)
    assert contact.address_ct is not None
    assert contact.pseudonym is not None
    return Former(contact.id, bytes(contact.address_ct), bytes(contact.wrapped_dek), contact.pseudonym)


def still_stored(tipline: Harness, needles: list[str | bytes]) -> list[tuple[str, str | bytes]]:
    """Where any needle still is: every row of every table, and on SQLite every byte of every file."""
    hits = scan_database(tipline.runtime.engine, needles)
    if not PG_URL:
        hits += scan_files(tipline.data_dir, needles)
    return hits


def text(tipline: Harness, body: str) -> tuple[str, list[str]]:
    """Text the tip line; returns the message's sid (to find its deletion at Twilio) and the replies."""
    sid = new_sid()
    return sid, replies(tipline.sms(body, sid=sid))


def submit(tipline: Harness) -> tuple[str, list[str]]:
    """A tip by SMS; returns its reference and the sids of its messages."""
    sids = []
    for body in ("A man sells stolen bikes from a blue van on Oak St", "skip"):
        sids.append(text(tipline, body)[0])
    sid, receipt = text(tipline, "skip")
    return reference_of(receipt[0]), [*sids, sid]


def test_forget_leaves_no_byte_of_the_sender_and_no_link_to_the_tip(tipline: Harness) -> None:
    reference, sids = submit(tipline)
    before = former_record(tipline)
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Tip.contact_id).where(Tip.reference == reference)).one() == before.contact_id

    forget_sid, answer = text(tipline, "FORGET")
    assert "erased" in answer[0]

    assert still_stored(tipline, [before.address, before.wrapped_key, before.pseudonym, before.contact_id]) == []
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Tip.contact_id).where(Tip.reference == reference)).one() is None
    # The tip stays and reads; nobody can write to its sender any more
    assert review.read_tip(tipline.runtime.ctx, reference).what == "A man sells stolen bikes from a blue van on Oak St"
    with pytest.raises(review.RepliesImpossible):
        review.reply(tipline.runtime.ctx, reference, "Which van?")
    # The provider copies queued before the erasure (re-sealed under a fresh key) are still deleted
    tipline.dispatch()
    assert set(tipline.twilio.deleted) >= {*sids, forget_sid}
    assert tipline.twilio.sent == []
    # Once its finished rows are purged (after a week), the stand-in goes too: no sender row is left
    report = purge(tipline.runtime.intake, retention_days=90, now=utcnow() + dt.timedelta(days=8))
    assert report.senders_removed == 1
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Contact)).all() == []


def test_a_reply_sent_before_forget_and_reported_after_it_is_still_deleted_at_twilio(tipline: Harness) -> None:
    """Twilio's final report on a detective's reply queues the deletion of its copy (the tipster's
    number and the reply's text, in Twilio's log). FORGET removed the sent reply's row with the
    sender, so a report arriving after FORGET found nothing and the copy stayed at Twilio."""
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    sid = tipline.twilio.sent[-1]["_sid"]
    assert "erased" in tipline.say("FORGET")[0]
    assert tipline.status_callback(sid, "delivered").status_code == 200
    later = utcnow() + dt.timedelta(hours=1)
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    assert sid in tipline.twilio.deleted
    # Handed to the blank stand-in, the row names no thread entry of the tip; once the finished rows
    # are purged (after a week), no sender row is left
    with tipline.runtime.factory() as session:
        assert session.scalars(select(OutboxItem.message_id).where(OutboxItem.kind == OutboxKind.SEND)).all() == [None]
    report = purge(tipline.runtime.intake, retention_days=90, now=utcnow() + dt.timedelta(days=8))
    assert report.senders_removed == 1
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Contact)).all() == []


def test_forget_keeps_no_reply_row_that_would_tie_two_tips_of_the_sender_together(tipline: Harness) -> None:
    """What FORGET hands to its one blank stand-in stays together for a week: rows of replies on two
    of the sender's tips, each created in the minute of its tip's reply, would tie the two tips
    to one sender again. Only replies still awaiting their report pass (their copy's deletion
    depends on it); a review found a change that kept every reply."""
    first = tipline.submit_tip("Someone keeps breaking into cars on Pine St")
    assert "new tip" in tipline.say("NEW")[0]
    second = tipline.submit_tip("A man sells stolen bikes from a blue van on Oak St")
    for reference in (first, second):
        review.reply(tipline.runtime.ctx, reference, "Which car was it?")
        tipline.dispatch()
        sid = tipline.twilio.sent[-1]["_sid"]
        assert tipline.status_callback(sid, "delivered").status_code == 200
        tipline.dispatch()
        assert sid in tipline.twilio.deleted
    assert "erased" in tipline.say("FORGET")[0]
    with tipline.runtime.factory() as session:
        assert session.scalars(select(OutboxItem).where(OutboxItem.kind == OutboxKind.SEND)).all() == []


def test_stop_leaves_no_byte_of_the_address_or_its_key(tipline: Harness) -> None:
    reference, _ = submit(tipline)
    review.reply(tipline.runtime.ctx, reference, "Which van?")  # queued, cancelled by the STOP
    before = former_record(tipline)

    assert tipline.say("STOP") == []

    assert still_stored(tipline, [before.address, before.wrapped_key]) == []
    # The pseudonym stays so that START can find the sender again (README says so)
    assert the_contact_after_stop(tipline).pseudonym == before.pseudonym
    with tipline.runtime.factory() as session:
        cancelled = session.scalars(select(OutboxItem).where(OutboxItem.kind == OutboxKind.SEND)).one()
    assert (cancelled.status, cancelled.payload_ct) == (OutboxStatus.CANCELLED, b"")
    assert "get messages from this tip line again" in tipline.say("START")[0]
    review.reply(tipline.runtime.ctx, reference, "Which van, please?")
    tipline.dispatch()
    assert [form["To"] for form in tipline.twilio.sent] == [TIPSTER]


def the_contact_after_stop(tipline: Harness) -> Contact:
    with tipline.runtime.factory() as session:
        return session.scalars(select(Contact)).one()


def test_retention_leaves_no_byte_of_the_address_its_key_or_the_pseudonym(
    tipline: Harness, env: dict[str, str]
) -> None:
    reference, _ = submit(tipline)
    tipline.dispatch()
    before = former_record(tipline)
    # Given a sender silent for longer than the retention period (90 days)
    with tipline.runtime.factory.begin() as session:
        session.execute(update(Contact).values(last_activity_at=to_minute(utcnow() - dt.timedelta(days=91))))

    # When the operator's `tipline purge` runs (as the dispatcher does every minute)
    purged = run(env, "purge")
    assert purged.returncode == 0, purged.stderr
    assert "return addresses erased (retention): 1" in purged.stdout

    assert still_stored(tipline, [before.address, before.wrapped_key, before.pseudonym]) == []
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert "expired" in (detail.replies_blocked or "")
    # The sender writing again is a stranger: a new conversation, no link to the old tip
    assert "anonymous" in tipline.say("hi")[0]


def test_a_photo_still_being_fetched_at_forget_is_kept_and_its_copy_deleted_later(tipline: Harness) -> None:
    # Given a photo the media worker has not fetched yet when its sender asks to be forgotten
    sid = new_sid("MM")
    photo = tipline.twilio.add_media(sid, samples.camera_jpeg(1).data, "image/jpeg")
    tipline.sms("the van again", sid=sid, NumMedia="1", MediaUrl0=photo, MediaContentType0="image/jpeg")
    tipline.say("FORGET")
    # When it is fetched: it joins the tip, but its copy at Twilio waits (the tip names no sender now)
    tipline.dispatch()
    [attachment] = photos(tipline)
    assert attachment.status == AttachmentStatus.STORED
    assert sid not in tipline.twilio.deleted
    # Then the deletion queued at FORGET, under the blank stand-in, runs once every fetch has settled
    later = utcnow() + intake.FORGOTTEN_FILES_DELETED_AFTER + dt.timedelta(minutes=1)
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    assert sid in tipline.twilio.deleted
    assert tipline.twilio.media == {}
