"""The outbox dispatcher (retries, leases, several dispatchers) and periodic upkeep."""

from __future__ import annotations

import datetime as dt
import threading

from sqlalchemy import func, select, update

from tests.support.harness import TIPSTER, Harness
from tipline.core.vocabulary import ErasedReason, OutboxKind, OutboxStatus, TipStatus
from tipline.services import review
from tipline.services.maintenance import purge
from tipline.services.outbox import Dispatcher
from tipline.storage.models import Contact, OutboxItem, ProcessedDelivery, Tip, utcnow


def submit_tip(tipline: Harness, sender: str = TIPSTER) -> str:
    """A tip by SMS whose inbound copies are already deleted at Twilio: the outbox holds nothing else."""
    reference = tipline.submit_tip("Stolen bikes being sold from a garage on Birch Rd", sender)
    tipline.dispatch()  # the provider deletions of the inbound copies
    tipline.twilio.requests.clear()
    return reference


def reply(tipline: Harness, reference: str, text: str = "Which garage number?") -> None:
    review.reply(tipline.runtime.ctx, reference, text)


def later(tipline: Harness, seconds: float) -> None:
    """Move the dispatcher's clock forward."""
    base = tipline.runtime.dispatcher.clock
    tipline.runtime.dispatcher.clock = lambda: base() + dt.timedelta(seconds=seconds)


def items(tipline: Harness, kind: OutboxKind = OutboxKind.SEND) -> list[OutboxItem]:
    with tipline.runtime.factory() as session:
        return list(session.scalars(select(OutboxItem).where(OutboxItem.kind == kind)))


def test_a_provider_outage_is_retried_with_backoff_until_it_succeeds(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    tipline.twilio.fail_next(500, None, times=2)
    reply(tipline, reference)
    tipline.dispatch()
    [item] = items(tipline)
    assert (item.status, item.attempts, item.last_error) == (OutboxStatus.PENDING, 1, "500")
    assert item.next_attempt_at > utcnow()  # backing off, not hammering
    tipline.dispatch()
    assert len(tipline.twilio.sent) == 1  # not due yet
    later(tipline, 3600)
    tipline.dispatch()
    later(tipline, 7200)
    tipline.dispatch()
    [item] = items(tipline)
    assert (item.status, item.attempts) == (OutboxStatus.SENT, 3)
    assert len(tipline.twilio.sent) == 3  # two failures and one success: nothing lost


def test_a_permanent_refusal_is_not_retried(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    tipline.twilio.fail_next(400, 21211)
    reply(tipline, reference)
    tipline.dispatch()
    later(tipline, 86400)
    tipline.dispatch()
    [item] = items(tipline)
    assert item.status == OutboxStatus.FAILED
    assert len(tipline.twilio.sent) == 1


def test_a_dispatcher_that_died_mid_send_leaves_a_lease_that_expires(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    reply(tipline, reference)
    # A dispatcher claimed the row and then died (kill -9) before recording anything.
    with tipline.runtime.factory.begin() as session:
        session.execute(
            update(OutboxItem)
            .where(OutboxItem.kind == OutboxKind.SEND)
            .values(status=OutboxStatus.CLAIMED, lease_until=utcnow() + dt.timedelta(seconds=60))
        )
    assert tipline.dispatch() == 0
    later(tipline, 61)
    assert tipline.dispatch() == 1
    assert len(tipline.twilio.sent) == 1


def test_several_dispatchers_never_send_one_row_twice(tipline: Harness) -> None:
    senders = [f"+1555555{n:04d}" for n in range(100, 112)]
    references = [submit_tip(tipline, sender) for sender in senders]
    for reference in references:
        for n in range(3):
            reply(tipline, reference, f"question {n} for {reference}")
    runtime = tipline.runtime
    dispatchers = [Dispatcher(runtime.ctx, runtime.channels, batch=4) for _ in range(4)]
    barrier = threading.Barrier(len(dispatchers))

    def work(dispatcher: Dispatcher) -> None:
        barrier.wait()
        while dispatcher.run_once():
            pass

    threads = [threading.Thread(target=work, args=(d,)) for d in dispatchers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bodies = [form["Body"] for form in tipline.twilio.sent]
    assert len(bodies) == 36
    assert len(set(bodies)) == 36  # no row sent twice
    assert {i.status for i in items(tipline)} == {OutboxStatus.SENT}


def test_the_in_process_dispatcher_sends_without_being_asked(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    _, stop = tipline.runtime.start_dispatcher()
    try:
        reply(tipline, reference)
        tipline.runtime.wake_dispatcher()
        for _ in range(100):
            if tipline.twilio.sent:
                break
            threading.Event().wait(0.05)
    finally:
        stop.set()
        tipline.runtime.wake_dispatcher()
    assert len(tipline.twilio.sent) == 1


def test_a_woken_dispatcher_with_nothing_to_do_rests_until_woken_again(tipline: Harness) -> None:
    """A wake-up is spent by the pass it starts. It once stayed set forever: after the first tip, an
    idle dispatcher ran pass after pass (258,229 in one CI run), taking a core from intake."""
    submit_tip(tipline)
    dispatcher = tipline.runtime.dispatcher
    passes = []
    run_once = dispatcher.run_once
    dispatcher.run_once = lambda: passes.append(1) or run_once()  # type: ignore[method-assign]
    stop = threading.Event()
    thread = threading.Thread(target=dispatcher.run_forever, args=(stop, 30.0))
    thread.start()
    try:
        for _ in range(3):
            dispatcher.wake()
            threading.Event().wait(0.5)
        busy = len(passes)
    finally:
        stop.set()
        dispatcher.wake()
        thread.join(10)
    assert not thread.is_alive()
    assert 3 <= busy <= 6, busy  # the first pass and one per wake-up (a wake during a pass: one more)


def test_closing_the_runtime_stops_the_dispatcher_it_started(tipline: Harness) -> None:
    """A dispatcher outlived its runtime: in CI one kept failing against a database a finished test
    had removed, logging into the tests that came after it."""
    thread, _ = tipline.runtime.start_dispatcher()
    tipline.runtime.close()
    assert not thread.is_alive()


def test_an_idle_draft_is_submitted_and_the_tipster_told(tipline: Harness) -> None:
    tipline.say("Loud parties with fights every Friday at the warehouse")
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Tip)).one().status == TipStatus.DRAFT
    intake = tipline.runtime.intake
    intake.clock = lambda: utcnow() + dt.timedelta(minutes=31)
    later(tipline, 31 * 60)
    report = purge(intake, retention_days=90)
    assert report.drafts_expired == 1
    tipline.dispatch()
    with tipline.runtime.factory() as session:
        tip = session.scalars(select(Tip)).one()
    assert tip.status == TipStatus.NEW
    [told] = tipline.twilio.sent
    assert told["To"] == TIPSTER
    assert tip.reference in told["Body"]
    assert "submitted as it stood" in told["Body"]
    # The tipster's next message is a follow-up to that tip
    intake.clock = utcnow
    assert tipline.say("also they park on the lawn")[0] == f"Added to tip {tip.reference}. Thank you."


def test_a_draft_is_not_expired_early(tipline: Harness) -> None:
    tipline.say("Someone dumping trash in the creek")
    assert purge(tipline.runtime.intake, retention_days=90).drafts_expired == 0


def test_retention_erases_silent_tipsters_addresses_and_forgets_old_deliveries(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    report = purge(tipline.runtime.intake, retention_days=90, now=utcnow() + dt.timedelta(days=91))
    assert report.addresses_erased == 1
    assert report.deliveries_forgotten == 3
    with tipline.runtime.factory() as session:
        contact = session.scalars(select(Contact)).one()
        remembered = session.scalar(select(func.count()).select_from(ProcessedDelivery))
    assert contact.address_ct is None
    assert contact.erased_reason == ErasedReason.RETENTION
    assert remembered == 0
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert "expired" in (detail.replies_blocked or "")


def test_a_deletion_refused_because_the_message_is_not_final_is_retried(tipline: Harness) -> None:
    tipline.twilio.fail_next(400, 20009)  # "Cannot delete this resource before it is complete"
    tipline.say("hi")
    tipline.dispatch()
    [item] = items(tipline, OutboxKind.DELETE)
    assert (item.status, item.last_error) == (OutboxStatus.PENDING, "20009")
    later(tipline, 600)
    tipline.dispatch()
    [item] = items(tipline, OutboxKind.DELETE)
    assert item.status == OutboxStatus.DONE
    assert item.payload_ct == b""  # nothing of the message is kept once it is gone
