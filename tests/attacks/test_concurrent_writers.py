"""Fault: two writers touch one tipster's rows at the same moment on PostgreSQL, where writers do run
side by side (on SQLite one write transaction runs at a time). A tipster's message arrives while a
detective's reply to their tip is being written, while idle expiry submits their draft, while
retention erases silent senders, while the media worker settles their photo, or on a connection the
server has just cut.

What must hold: nothing is deferred or lost (a deadlock or a dead connection is not an outage), no
draft is taken over or orphaned, and the tipster's message is answered as usual. Each test holds one
writer at a chosen point (a paused function) and lets the other run into it.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support import samples
from tests.support.harness import Harness, inbound_form, new_sid, photos, replies, sign
from tests.support.scratch import PG_URL, cut_the_pooled_connection, lock_waiters, wait_for_lock_waiters
from tipline.core.vocabulary import AttachmentStatus, MessageKind, TipStatus
from tipline.services import abuse, maintenance, outbox, review
from tipline.storage import records
from tipline.storage.models import Contact, Conversation, Message, OutboxItem, Tip

pytestmark = pytest.mark.skipif(not PG_URL, reason="SQLite runs one write transaction at a time")

PATH = "/webhooks/twilio/sms"
DEFERRED = "We received your message and will answer in a few minutes"


class Paused:
    """Hold the thread named `who` when it calls `owner.name` (before the call runs): `reached` is
    set once it is held, and it goes on when the test sets `go`."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, owner: Any, name: str, who: str):
        self.reached, self.go = threading.Event(), threading.Event()
        original: Callable[..., Any] = getattr(owner, name)

        def paused(*args: Any, **kwargs: Any) -> Any:
            if threading.current_thread().name == who:
                self.reached.set()
                self.go.wait(10)
            return original(*args, **kwargs)

        monkeypatch.setattr(owner, name, paused)


def in_thread(name: str, work: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    """Start `work` in a thread called `name`; its result (or error, as text) lands in the dict."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = work()
        except Exception as error:  # noqa: BLE001 - reported by the test's assertion
            out["result"] = f"{type(error).__name__}: {error}"

    thread = threading.Thread(target=run, name=name)
    thread.start()
    return thread, out


def collide(held: Paused, first: Callable[[], Any], second: Callable[[], Any], engine: Any) -> tuple[Any, Any]:
    """Run `first` (in the thread `held` pauses, "reply") until it is held, then `second`, which must
    come to wait for a lock `first` holds; then let `first` go on. Both results (or errors, as text)."""
    thread, firsts = in_thread("reply", first)
    assert held.reached.wait(10)
    other, seconds = in_thread("second", second)
    wait_for_lock_waiters(engine, 1)
    held.go.set()
    thread.join()
    other.join()
    return firsts["result"], seconds["result"]


def text_message(harness: Harness, body: str) -> tuple[int, list[str]]:
    form = inbound_form(body)
    response = harness.app.test_client().post(PATH, data=form, headers={"X-Twilio-Signature": sign(PATH, form)})
    return response.status_code, replies(response)


@pytest.fixture
def paused_reply(tipline: Harness, monkeypatch: pytest.MonkeyPatch) -> Iterator[Paused]:
    """A detective's reply held just before it queues the message in the outbox: it holds the tip."""
    yield Paused(monkeypatch, outbox, "enqueue_send", who="reply")


def test_a_message_arriving_while_a_reply_to_its_tip_is_written_is_answered_not_deferred(
    tipline: Harness, paused_reply: Paused
) -> None:
    reference = tipline.submit_tip()
    replied, said = collide(  # the message waits for the tip the reply holds
        paused_reply,
        lambda: review.reply(tipline.runtime.ctx, reference, "Can you tell us more?"),
        lambda: text_message(tipline, "He drives a blue van, plate starts with 7"),
        tipline.runtime.engine,
    )
    assert isinstance(replied, int), replied
    status, answer = said
    assert status == 200 and len(answer) == 1 and reference in answer[0] and DEFERRED not in answer[0]
    with tipline.runtime.factory() as session:
        kinds = session.scalars(select(Message.kind).order_by(Message.seq)).all()
    assert kinds[-3:] == [MessageKind.AGENCY, MessageKind.TIPSTER, MessageKind.BOT]
    assert "database unavailable" not in tipline.log_file.read_text()


def test_idle_expiry_and_a_reply_on_an_urgent_draft_both_complete(tipline: Harness, paused_reply: Paused) -> None:
    tipline.say("Shots fired behind the gym, someone is hurt")  # a draft; detectives see it once urgent
    with tipline.runtime.factory.begin() as session:
        session.execute(update(Tip).values(urgent=True))
        reference, contact_id = session.execute(select(Tip.reference, Tip.contact_id)).one()
    cutoff = tipline.runtime.ctx.now() + dt.timedelta(days=1)  # the draft counts as idle
    replied, expired = collide(
        paused_reply,
        lambda: review.reply(tipline.runtime.ctx, reference, "Are you safe?"),
        lambda: tipline.runtime.intake._expire_one(contact_id, cutoff),
        tipline.runtime.engine,
    )
    assert isinstance(replied, int), replied
    assert expired is True, expired
    with tipline.runtime.factory() as session:
        assert session.scalar(select(Tip.status)) == TipStatus.NEW  # submitted as it stood


def test_a_reply_written_while_the_tipster_begins_a_new_tip_orphans_no_draft(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply points the tipster's conversation back at its tip, so that their answer joins it, but
    never while they are writing a new draft. Read before the tipster's message and written after
    it, it pointed away from the new draft, which no one then saw or submitted."""
    reference = tipline.submit_tip()
    tipline.say("new")
    tipline.say("discard")  # no draft open: the reply may bring the conversation back to the tip
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Conversation.tip_id)).one() is None
    replied, said = collide(  # the message waits for the sender the reply holds
        Paused(monkeypatch, review, "_bring_back_to", who="reply"),
        lambda: review.reply(tipline.runtime.ctx, reference, "Any more detail?"),
        lambda: text_message(tipline, "Someone sells stolen bikes behind the skate park"),
        tipline.runtime.engine,
    )
    assert isinstance(replied, int), replied
    assert said[0] == 200
    with tipline.runtime.factory() as session:
        conversation = session.scalars(select(Conversation)).one()
        drafts = session.scalars(select(Tip.id).where(Tip.status == TipStatus.DRAFT)).all()
    assert all(draft == conversation.tip_id for draft in drafts), "a draft nothing points at"
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert "stolen bikes" in " ".join(entry.text for entry in detail.thread)  # the answer joined the tip


def test_a_message_postgresql_cancels_to_end_a_deadlock_is_run_again_and_answered(tipline: Harness) -> None:
    """Another writer holds the tip, the message holds its sender and waits for the tip, then the
    other writer waits for the sender: PostgreSQL cancels the one that waited first, the message.
    Intake runs it again once the other is done, rather than answering as in an outage."""
    reference = tipline.submit_tip()
    engine = tipline.runtime.engine
    with engine.connect() as other:
        other.execute(select(Tip.id).with_for_update(key_share=True))
        message, said = in_thread("sms", lambda: text_message(tipline, "He drives a blue van, plate starts with 7"))
        wait_for_lock_waiters(engine, 1)  # the message holds its sender and waits for the tip
        other.execute(select(Contact.id).with_for_update())  # the cycle; returns once the message is cancelled
        other.rollback()
    message.join()
    status, answer = said["result"]
    assert status == 200 and len(answer) == 1 and reference in answer[0] and DEFERRED not in answer[0]
    with tipline.runtime.factory() as session:
        kinds = session.scalars(select(Message.kind).order_by(Message.seq)).all()
    assert kinds[-2:] == [MessageKind.TIPSTER, MessageKind.BOT]


def test_a_message_on_a_connection_the_server_just_cut_is_answered_not_deferred(tipline: Harness) -> None:
    """Cut moments after its last use, so not pinged before it is handed out (db.PING_AFTER_IDLE):
    the statement fails, the pool makes new connections, and intake runs the message again."""
    cut_the_pooled_connection(tipline.runtime.engine)
    answer = tipline.say("Someone is stripping a red scooter for parts behind the laundromat")
    assert len(answer) == 1 and "Where did it happen?" in answer[0]
    with tipline.runtime.factory() as session:
        assert session.scalar(select(Tip.status)) == TipStatus.DRAFT


def test_retention_does_not_erase_a_tipster_who_writes_while_it_runs(tipline: Harness) -> None:
    """Retention erases senders silent for longer than it keeps them. One who writes again at the
    moment it runs is no longer silent: erased after their message, their address would be gone
    (no reply could reach them) and their conversation cut from them."""
    tipline.submit_tip()
    engine = tipline.runtime.engine
    long_ago = tipline.runtime.ctx.now() - dt.timedelta(days=400)
    with tipline.runtime.factory.begin() as session:
        session.execute(update(Contact).values(last_activity_at=long_ago))
    with engine.connect() as message:  # the tipster's message, holding their row until it commits
        message.execute(update(Contact).values(last_activity_at=tipline.runtime.ctx.now()))
        purge, purged = in_thread("purge", lambda: maintenance.purge(tipline.runtime.intake, retention_days=90))
        wait_for_lock_waiters(engine, 1)
        message.commit()
    purge.join()
    assert not isinstance(purged["result"], str), purged
    assert purged["result"].addresses_erased == 0
    with tipline.runtime.factory() as session:
        contact = session.scalars(select(Contact)).one()
    assert contact.pseudonym is not None and contact.address_ct is not None


def test_a_reply_to_an_urgent_draft_whose_urgency_was_cleared_meanwhile_is_refused(tipline: Harness) -> None:
    """A draft is the tipster's until submitted; detectives see it only while it is urgent. A reply
    that found it urgent, then waited for its sender (busy with a message) while another detective
    cleared the urgency, must not write into a draft no one sees any more."""
    tipline.say("Shots fired behind the gym, someone is hurt")
    with tipline.runtime.factory.begin() as session:
        session.execute(update(Tip).values(urgent=True))
        reference = session.scalars(select(Tip.reference)).one()
    engine = tipline.runtime.engine
    with engine.connect() as message:  # the tipster's next message holds their row meanwhile
        message.execute(select(Contact.id).with_for_update(key_share=True))
        reply, replied = in_thread("reply", lambda: review.reply(tipline.runtime.ctx, reference, "Are you safe?"))
        wait_for_lock_waiters(engine, 1)
        assert review.set_urgent(tipline.runtime.ctx, reference, False, actor="another detective") == (True, False)
        message.commit()
    reply.join()
    assert replied["result"].startswith("TipNotFound"), replied
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Message.kind).where(Message.kind == MessageKind.AGENCY)).all() == []


def test_the_copy_of_a_photo_settled_while_its_sender_sends_stop_is_still_deleted(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """STOP gives the sender a fresh data key and re-seals under it the provider deletions still
    queued. The media worker settling a photo of an earlier tip queues the deletion of its copies at
    Twilio. Queued under the old key while STOP ran (STOP did not wait for it), that deletion could
    no longer be opened: the photo and its message stayed at Twilio."""
    tipline.submit_tip()
    sid = new_sid("MM")
    photo = tipline.twilio.add_media(sid, samples.camera_jpeg(1).data, "image/jpeg")
    tipline.sms("one more of the van", sid=sid, NumMedia="1", MediaUrl0=photo, MediaContentType0="image/jpeg")
    tipline.say("new")
    tipline.say("discard")  # the conversation is no longer on the photo's tip
    stop_meanwhile(tipline, monkeypatch, tipline.dispatch)  # the worker fetches, cleans and settles the photo
    assert [a.status for a in photos(tipline)] == [AttachmentStatus.STORED]
    assert deletions_failed(tipline) == []
    assert sid in tipline.twilio.deleted
    assert tipline.twilio.media == {}


def test_the_copy_of_a_reply_reported_delivered_while_its_recipient_sends_stop_is_still_deleted(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same for a detective's reply: Twilio's final report on it queues the deletion of its copy,
    under the sender's key, which a STOP running meanwhile replaces."""
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    sid = tipline.twilio.sent[-1]["_sid"]
    stop_meanwhile(tipline, monkeypatch, lambda: tipline.status_callback(sid, "delivered").status_code)
    assert deletions_failed(tipline) == []
    assert sid in tipline.twilio.deleted


def test_the_copy_of_a_reply_reported_delivered_while_its_recipient_sends_forget_is_still_deleted(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """FORGET hands a sent reply still awaiting its report to a blank stand-in. A report that had
    read the reply's row and waited for its sender found the sender gone, and queued nothing."""
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    sid = tipline.twilio.sent[-1]["_sid"]
    forgot, reported = collide(  # the report waits for the sender FORGET holds
        Paused(monkeypatch, records, "forget_contact", who="reply"),
        lambda: text_message(tipline, "FORGET"),
        lambda: tipline.status_callback(sid, "delivered").status_code,
        tipline.runtime.engine,
    )
    assert forgot[0] == 200 and reported == 200, (forgot, reported)
    assert deletions_failed(tipline) == []
    assert sid in tipline.twilio.deleted


def test_a_reply_refused_for_good_while_its_recipient_sends_stop_settles_without_a_deadlock(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio refuses a reply because the number opted out at the carrier, as the tipster's STOP
    arrives. The dispatcher changed the reply's row, then waited for the sender to erase its
    address; STOP held the sender and waited for that row to re-seal it: a deadlock."""
    reference = tipline.submit_tip()
    tipline.dispatch()  # what is due already: the reply is the next row the dispatcher takes
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.twilio.fail_next(400, 21610)  # the carrier says the number opted out
    failing = Paused(monkeypatch, outbox.Dispatcher, "_failed", who="reply")
    stopping = Paused(monkeypatch, records, "shred_contact_key", who="second")
    dispatcher, dispatched = in_thread("reply", tipline.runtime.dispatcher.run_once)
    assert failing.reached.wait(10)  # the reply is claimed, its send refused
    stop, stopped = in_thread("second", lambda: text_message(tipline, "STOP"))
    assert stopping.reached.wait(10)  # STOP holds the sender, about to re-seal the claimed reply
    failing.go.set()
    wait_for_lock_waiters(tipline.runtime.engine, 1)  # the dispatcher waits for the sender
    stopping.go.set()
    dispatcher.join()
    stop.join()
    assert isinstance(dispatched["result"], int), dispatched
    assert stopped["result"][0] == 200, stopped
    with tipline.runtime.factory() as session:
        reply = session.scalars(select(OutboxItem).where(OutboxItem.kind == "send")).one()
    assert (reply.status, reply.last_error, reply.payload_ct) == ("failed", "21610", b"")


def test_a_report_a_week_late_while_retention_purges_its_stand_in_settles_without_a_deadlock(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reply sent before FORGET waits for its report under a blank stand-in. Over a week later,
    maintenance deletes that finished row and then the stand-in; a report arriving in between held
    the stand-in and waited for the row: a deadlock, and the report got a 500."""
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    sid = tipline.twilio.sent[-1]["_sid"]
    assert text_message(tipline, "FORGET")[0] == 200  # the reply now waits under a stand-in
    assert deletions_failed(tipline) == []  # the copies of the tipster's messages are gone: only the reply waits
    later = tipline.runtime.ctx.now() + maintenance.FINISHED_OUTBOX_KEPT + dt.timedelta(days=1)
    purged, reported = collide(  # the report waits for what the purge holds
        Paused(monkeypatch, abuse, "forget_new_senders", who="reply"),  # the rows deleted, not yet the stand-in
        lambda: maintenance.purge(tipline.runtime.intake, retention_days=90, now=later),
        lambda: tipline.status_callback(sid, "delivered").status_code,
        tipline.runtime.engine,
    )
    assert isinstance(purged, maintenance.PurgeReport), purged
    assert reported == 200
    assert purged.outbox_rows_deleted >= 1 and purged.senders_removed == 1
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Contact).where(Contact.pseudonym.is_(None))).all() == []


def stop_meanwhile(tipline: Harness, monkeypatch: pytest.MonkeyPatch, work: Callable[[], Any]) -> None:
    """Run `work` until it queues a deletion at the provider, then have the tipster send STOP, and
    let `work` go on once STOP is done or waits for it."""
    held = Paused(monkeypatch, outbox, "enqueue_delete", who="reply")
    worker, _ = in_thread("reply", work)
    assert held.reached.wait(10)
    stop, stopped = in_thread("second", lambda: text_message(tipline, "STOP"))
    deadline = time.monotonic() + 10
    while stop.is_alive() and lock_waiters(tipline.runtime.engine) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    held.go.set()
    worker.join()
    stop.join()
    assert stopped["result"][0] == 200, stopped


def deletions_failed(tipline: Harness) -> list[str | None]:
    """Run every deletion queued (their delay passed); the errors of those that failed."""
    later = tipline.runtime.ctx.now() + dt.timedelta(hours=1)
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    with tipline.runtime.factory() as session:
        return list(session.scalars(select(OutboxItem.last_error).where(OutboxItem.last_error.is_not(None))))
