"""A reply whose send succeeded but whose "sent" mark was lost is not sent a second time (issue 12).

The fault is real: a `tipline dispatch --once` process is killed with SIGKILL while the stand-in
Twilio has already taken (and logged) the message but not yet answered, so the dispatcher never
learns the message id and never marks the row. Its lease then expires and another dispatcher
claims the row again. Before issue 12 that dispatcher sent the reply a second time; now it asks
Twilio's Messages log (the real `twilio` client, `GET Messages.json`) and adopts the message found.
"""

from __future__ import annotations

import datetime as dt
import signal
import threading
from typing import Any

import pytest
from sqlalchemy import select, update

from tests.support import fake_telegram
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import Harness
from tests.support.processes import spawn
from tests.support.telegram_updates import message_update
from tipline.core.vocabulary import OutboxKind, OutboxStatus
from tipline.services import review
from tipline.services.outbox import provider_ref
from tipline.storage import records
from tipline.storage.models import Contact, OutboxItem, utcnow

QUESTION = "Which garage number was it?"


def later(harness: Harness, seconds: float) -> None:
    """Move the in-process dispatcher's clock forward (past another dispatcher's lease)."""
    base = harness.runtime.dispatcher.clock
    harness.runtime.dispatcher.clock = lambda: base() + dt.timedelta(seconds=seconds)


def interrupt_pending_sends(harness: Harness, lease: dt.timedelta) -> None:
    """As after a dispatcher that began sending the pending replies (its attempt recorded, to the
    minute) and died before the provider answered: claimed, with a lease ending after `lease`."""
    now = utcnow()
    with harness.runtime.factory.begin() as session:
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.kind == OutboxKind.SEND, OutboxItem.status == OutboxStatus.PENDING)
            .values(
                status=OutboxStatus.CLAIMED,
                lease_until=now + lease,
                attempt_started_at=now.replace(second=0, microsecond=0),
            )
        )


def sends(harness: Harness) -> list[OutboxItem]:
    with harness.runtime.factory() as session:
        return list(session.scalars(select(OutboxItem).where(OutboxItem.kind == OutboxKind.SEND)))


def hold_outbound(fake: FakeTwilio, monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make the stand-in Twilio log each message it is asked to send, then hang before answering.

    Returns (taken: set once a message is in Twilio's log, release: lets the answers go)."""
    taken, release = threading.Event(), threading.Event()
    original = fake._log

    def log_then_hang(*args: Any, **kwargs: Any) -> dict[str, Any]:
        resource = original(*args, **kwargs)
        if resource["direction"] == "outbound-api":
            taken.set()
            release.wait(30)
        return resource

    monkeypatch.setattr(fake, "_log", log_then_hang)
    return taken, release


def test_a_dispatcher_killed_after_twilio_took_the_reply_does_not_make_it_sent_twice(
    tipline: Harness, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tipline.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
    tipline.dispatch()  # the deletions of the inbound copies: the outbox now holds only the reply
    review.reply(tipline.runtime.ctx, reference, QUESTION)
    taken, release = hold_outbound(tipline.twilio, monkeypatch)
    process = spawn(env, "dispatch", "--once")
    try:
        assert taken.wait(60), "the separate dispatcher never sent the reply"
        process.send_signal(signal.SIGKILL)  # between Twilio taking the message and the "sent" mark
        process.wait(30)
    finally:
        release.set()
        if process.poll() is None:
            process.kill()
    [item] = sends(tipline)
    assert item.status == OutboxStatus.CLAIMED  # nothing was recorded after the send
    assert item.attempt_started_at is not None  # but the attempt was
    assert item.attempt_started_at.second == 0 and item.attempt_started_at.microsecond == 0  # to the minute

    later(tipline, 61)  # the dead dispatcher's lease expires: another claims the row
    assert tipline.dispatch() == 1

    bodies = [form["Body"] for form in tipline.twilio.sent]
    assert bodies.count(f"Example City Police: {QUESTION}") == 1  # sent once, not twice
    [logged] = [m for m in tipline.twilio.logged("outbound-api") if m["body"].endswith(QUESTION)]
    [item] = sends(tipline)
    assert item.status == OutboxStatus.SENT
    assert item.attempt_started_at is None
    assert item.provider_ref == provider_ref(tipline.runtime.ctx.keyring, "sms", logged["sid"])
    # Twilio's status callback for the adopted message finds its row, as for any message.
    assert tipline.status_callback(logged["sid"], "delivered").status_code == 200
    tipline.dispatch()
    assert logged["sid"] in tipline.twilio.deleted


def test_a_send_whose_answer_never_came_is_checked_before_it_is_retried(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio took the message but its answer never arrived (the client timed out): the retry
    finds the message in Twilio's log and adopts it instead of sending it again."""
    reference = tipline.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
    tipline.dispatch()
    review.reply(tipline.runtime.ctx, reference, QUESTION)
    taken, release = hold_outbound(tipline.twilio, monkeypatch)
    monkeypatch.setattr(tipline.runtime.channels["sms"].client.http_client, "timeout", 1)  # type: ignore[attr-defined]
    try:
        tipline.dispatch()
    finally:
        release.set()
    assert taken.is_set()
    [item] = sends(tipline)
    assert item.status == OutboxStatus.PENDING  # a retry is due later
    assert item.attempt_started_at is not None  # and it will check first: the message may have gone
    later(tipline, 3600)
    tipline.dispatch()
    assert [form["Body"] for form in tipline.twilio.sent].count(f"Example City Police: {QUESTION}") == 1
    [item] = sends(tipline)
    assert item.status == OutboxStatus.SENT


def test_a_reply_already_sent_with_the_same_words_is_not_taken_for_this_one(tipline: Harness) -> None:
    """Two replies with the same words to one tipster: the log's first copy belongs to the first
    row (its id recorded), so the second row, left unconfirmed, is still sent."""
    reference = tipline.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
    tipline.dispatch()
    review.reply(tipline.runtime.ctx, reference, QUESTION)
    tipline.dispatch()
    review.reply(tipline.runtime.ctx, reference, QUESTION)
    # The second row's attempt began, then its dispatcher died before Twilio took the message.
    interrupt_pending_sends(tipline, lease=dt.timedelta(seconds=60))
    later(tipline, 61)
    tipline.dispatch()
    bodies = [form["Body"] for form in tipline.twilio.sent]
    assert bodies.count(f"Example City Police: {QUESTION}") == 2
    assert {i.status for i in sends(tipline)} == {OutboxStatus.SENT}
    refs = [i.provider_ref for i in sends(tipline) if i.provider_ref]
    assert len(set(refs)) == len(refs) == 2


def test_an_unreachable_log_defers_the_resend_rather_than_guessing(tipline: Harness) -> None:
    """If Twilio's log cannot be read, the row waits (backoff) instead of being sent blind."""
    reference = tipline.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
    tipline.dispatch()
    review.reply(tipline.runtime.ctx, reference, QUESTION)
    interrupt_pending_sends(tipline, lease=dt.timedelta(0))
    tipline.twilio.fail_next_list(503, None)  # the list request
    later(tipline, 1)
    tipline.dispatch()
    assert tipline.twilio.sent == []
    [item] = sends(tipline)
    assert (item.status, item.last_error) == (OutboxStatus.PENDING, "503")
    assert item.attempt_started_at is not None  # still to be checked before any send
    later(tipline, 3600)
    tipline.dispatch()
    assert len(tipline.twilio.sent) == 1


def test_a_telegram_reply_whose_id_was_recorded_is_not_sent_again(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    """The id is recorded in its own short transaction right after Telegram answers: a row that
    has it, but was never marked sent (the rest of the bookkeeping failed), is finished unsent."""
    harness, fake = tg
    harness.post_update(message_update("I saw a man with a gun behind the school"))
    harness.dispatch()
    before = len(fake.called("sendMessage"))
    with harness.runtime.factory() as session:
        item = session.scalars(select(OutboxItem).where(OutboxItem.kind == OutboxKind.SEND)).first()
        assert item is not None and item.provider_ref is not None
    resealed = _reseal(harness, item)
    with harness.runtime.factory.begin() as session:
        # As after a send whose id was recorded, then a crash before it was marked sent.
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.id == item.id)
            .values(status=OutboxStatus.CLAIMED, lease_until=utcnow(), payload_ct=resealed)
        )
    later(harness, 61)
    harness.dispatch()
    assert len(fake.called("sendMessage")) == before
    with harness.runtime.factory() as session:
        assert session.get(OutboxItem, item.id).status == OutboxStatus.SENT  # type: ignore[union-attr]


def _reseal(harness: Harness, item: OutboxItem) -> bytes:
    """A settled row's payload is emptied: seal the text again, as it was while the row waited."""
    with harness.runtime.factory() as session:
        contact = session.get(Contact, item.contact_id)
        assert contact is not None
        key = records.contact_dek(harness.runtime.ctx.keyring, contact)
    payload = '{"text": "again", "keyboard": null}'
    return records.OUTBOX_PAYLOAD.seal(key, item.id, payload.encode())
