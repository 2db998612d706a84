"""Reconciliation from Twilio's Messages log: what Twilio received while the webhook could not take
it is taken in later, exactly once, in order, answered by REST, its photos fetched and Twilio's
copies deleted; and the fallback webhook behaves like the primary one.

Everything runs through the real `twilio` client against the stand-in Twilio (tests/support/fake_twilio.py).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import func, select

from tests.support import fake_twilio, samples
from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import LINE_NUMBER, TIPSTER, Harness, make_harness, photos, reference_of, replies
from tipline.cli import cli
from tipline.config import load_settings
from tipline.core.vocabulary import AttachmentStatus, KeyPurpose, OutboxKind, OutboxStatus
from tipline.services import reconcile, review, rotation
from tipline.services.maintenance import purge
from tipline.storage.models import Contact, OutboxItem, ProcessedDelivery, ReconcileMark, Tip, utcnow

OTHER = "+15555550143"
WHAT = "CANARY-RECON a grey pickup leaves the warehouse on Dock Road at 3 am"
PLACE = "CANARY-RECON-PLACE behind the fish market"


def run(tipline: Harness, now: dt.datetime | None = None, grace: dt.timedelta = dt.timedelta(0)) -> reconcile.Report:
    sms = tipline.runtime.sms
    assert sms is not None
    return reconcile.reconcile(tipline.runtime.ctx, sms, tipline.runtime.intake, grace=grace, now=now)


def sent_to(tipline: Harness, number: str) -> list[str]:
    return [form["Body"] for form in tipline.twilio.sent if form.get("To") == number]


def tips_count(tipline: Harness) -> int:
    with tipline.runtime.factory() as session:
        return session.scalar(select(func.count()).select_from(Tip)) or 0


def test_messages_twilio_kept_while_we_were_down_are_taken_in_once_in_order(tipline: Harness) -> None:
    twilio = tipline.twilio
    # Given two tipsters whose messages Twilio received but never delivered to the webhook
    for body in (WHAT, PLACE, "skip"):
        twilio.receive(TIPSTER, LINE_NUMBER, body)
    twilio.receive(OTHER, LINE_NUMBER, "CANARY-RECON-OTHER someone sells pills at the bus station")

    # When reconciliation runs
    report = run(tipline)

    # Then every message is taken in once, in order per sender, and answered by the REST API
    assert (report.listed, report.taken_in, report.already, report.failed) == (4, 4, 0, 0)
    assert tipline.dispatch() > 0
    mine = sent_to(tipline, TIPSTER)
    assert len(mine) == 3
    assert "Where did it happen?" in mine[0]
    assert "When did it happen?" in mine[1]
    reference = reference_of(mine[2])
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert (detail.what, detail.where, detail.when) == (WHAT, PLACE, None)
    assert len(sent_to(tipline, OTHER)) == 1
    # and Twilio's copies of the inbound messages are deleted like any message's
    assert twilio.logged("inbound") == []

    # When it runs again, nothing changes: nothing new taken in, nothing sent twice
    sends = len(twilio.sent)
    again = run(tipline)
    assert (again.taken_in, again.failed) == (0, 0)
    tipline.dispatch()
    assert len(twilio.sent) == sends
    assert tips_count(tipline) == 2


def test_what_the_webhook_took_in_is_not_taken_again(tipline: Harness, env: dict[str, str]) -> None:
    twilio = tipline.twilio
    # Given messages that the webhook processed (and Twilio's log still lists: copies not yet deleted)
    for body in (WHAT, "skip", "skip"):
        _, form = twilio.receive(TIPSTER, LINE_NUMBER, body)
        assert replies(tipline.post_signed("/webhooks/twilio/sms", form))
    # and one that never reached us
    twilio.receive(TIPSTER, LINE_NUMBER, "CANARY-RECON-LATE the pickup was back tonight")

    report = run(tipline)
    assert (report.listed, report.taken_in, report.already) == (4, 1, 3)
    tipline.dispatch()
    assert len(sent_to(tipline, TIPSTER)) == 1  # the follow-up's "Added to tip"; TwiML answered the rest
    assert "Added to tip" in sent_to(tipline, TIPSTER)[0]
    assert tips_count(tipline) == 1


def test_with_a_messaging_service_alone_only_its_messages_are_taken_in(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    service = "MG" + "0123456789abcdef" * 2
    settings = {**env, "TWILIO_FROM_NUMBER": "", "TWILIO_MESSAGING_SERVICE_SID": service}
    tipline = make_harness(settings, twilio_server, log_file)
    try:
        # A message to the tip line's service, and one to another number of the agency's account
        twilio_server.receive(TIPSTER, LINE_NUMBER, WHAT, MessagingServiceSid=service)
        twilio_server.receive(OTHER, "+15555550199", "CANARY-OTHER-APP your appointment is at 3")
        report = run(tipline)
        assert (report.listed, report.taken_in) == (1, 1)
        tipline.dispatch()
        assert sent_to(tipline, OTHER) == []
        assert tips_count(tipline) == 1  # the tip line's own message began a draft; the other text none
        with tipline.runtime.factory() as session:
            assert session.scalar(select(func.count()).select_from(ProcessedDelivery)) == 1
    finally:
        tipline.runtime.close()


def test_a_reconciled_stop_or_start_takes_effect_without_a_second_answer(tipline: Harness) -> None:
    """Twilio answered STOP and START itself when they arrived; the log does not say so."""
    twilio = tipline.twilio
    tipline.submit_tip(WHAT)
    twilio.receive(TIPSTER, LINE_NUMBER, "STOP")
    run(tipline)
    tipline.dispatch()
    assert sent_to(tipline, TIPSTER) == []
    assert tipline.say("are you there?") == []  # opted out: nothing is sent until START
    twilio.receive(TIPSTER, LINE_NUMBER, "START")
    run(tipline)
    tipline.dispatch()
    assert sent_to(tipline, TIPSTER) == []
    assert tipline.say("one more detail: the pickup is blue")[0].startswith("Added to tip")


def test_a_second_run_changes_nothing_while_twilio_keeps_the_messages(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    harness = make_harness({**env, "TIPLINE_PROVIDER_DELETE": "0"}, twilio_server, log_file)
    try:
        for body in (WHAT, "skip", "skip"):
            harness.twilio.receive(TIPSTER, LINE_NUMBER, body)
        first = run(harness)
        harness.dispatch()
        sends = len(harness.twilio.sent)
        with harness.runtime.factory() as session:
            remembered = session.scalar(select(func.count()).select_from(ProcessedDelivery))
        second = run(harness)
        harness.dispatch()
        assert (first.taken_in, second.taken_in, second.already) == (3, 0, 3)
        assert len(harness.twilio.sent) == sends == 3
        with harness.runtime.factory() as session:
            assert session.scalar(select(func.count()).select_from(ProcessedDelivery)) == remembered
        assert len(harness.twilio.logged("inbound")) == 3  # kept at Twilio, as configured
    finally:
        harness.runtime.close()


def test_photos_of_a_reconciled_mms_are_fetched_cleaned_and_deleted_at_twilio(tipline: Harness) -> None:
    sample = samples.camera_jpeg()
    sid, _ = tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT, media=[(sample.data, "image/jpeg")])
    report = run(tipline)
    assert report.taken_in == 1
    while tipline.dispatch():
        pass
    stored = photos(tipline)
    assert [p.status for p in stored] == [AttachmentStatus.STORED]
    assert any(sid in path for path in tipline.twilio.media_fetches)
    assert tipline.twilio.logged("inbound") == []  # message and media deleted once settled
    assert sent_to(tipline, TIPSTER)  # answered by REST


def test_the_mark_is_kept_to_the_minute_and_read_back_with_an_overlap(tipline: Harness) -> None:
    now = utcnow().replace(second=37, microsecond=123)
    tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT, when=(now - dt.timedelta(minutes=3)).replace(tzinfo=dt.UTC))
    run(tipline, now=now)
    with tipline.runtime.factory() as session:
        mark = session.get(ReconcileMark, reconcile.LOG_NAME)
        assert mark is not None
        assert mark.mark == now.replace(second=0, microsecond=0)  # the run's end, to the minute

    tipline.twilio.requests.clear()
    run(tipline, now=now + dt.timedelta(minutes=5))
    listing = [r.form for r in tipline.twilio.requests if r.path.endswith("/Messages.json")]
    assert listing and listing[0]["To"] == LINE_NUMBER
    since = dt.datetime.strptime(listing[0]["DateSent>"], "%Y-%m-%dT%H:%M:%SZ")
    assert since == now.replace(second=0, microsecond=0) - reconcile.OVERLAP


def test_a_mark_never_moves_past_a_message_that_failed(tipline: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    now = utcnow()
    first = (now - dt.timedelta(minutes=30)).replace(tzinfo=dt.UTC)
    tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT, when=first)
    tipline.twilio.receive(OTHER, LINE_NUMBER, "CANARY-RECON-FAIL this one fails", when=first + dt.timedelta(minutes=5))
    tipline.twilio.receive(TIPSTER, LINE_NUMBER, PLACE, when=first + dt.timedelta(minutes=10))
    intake = tipline.runtime.intake
    original = intake.receive

    def flaky(message):  # type: ignore[no-untyped-def]
        if "FAIL" in message.text:
            raise RuntimeError("boom")
        return original(message)

    monkeypatch.setattr(intake, "receive", flaky)
    report = run(tipline, now=now)
    assert (report.taken_in, report.failed) == (2, 1)  # the other sender's messages still go in
    assert reconcile.read_mark(tipline.runtime.ctx) == first.replace(tzinfo=None, second=0, microsecond=0)
    monkeypatch.setattr(intake, "receive", original)
    again = run(tipline, now=now)
    assert (again.taken_in, again.already, again.failed) == (1, 2, 0)


def test_messages_older_than_the_deduplication_memory_are_never_read(tipline: Harness) -> None:
    now = utcnow()
    old = (now - reconcile.LOOKBACK_LIMIT - dt.timedelta(minutes=5)).replace(tzinfo=dt.UTC)
    tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT, when=old)  # its delivery may have been forgotten
    # Even with a mark far in the past (reconciliation was off for weeks)
    reconcile.save_mark(tipline.runtime.ctx, now - dt.timedelta(days=30))
    report = run(tipline, now=now)
    assert (report.listed, report.taken_in, report.stale_mark) == (0, 0, True)
    assert tips_count(tipline) == 0


def test_the_windows_are_consistent_with_the_deduplication_memory() -> None:
    from tipline.services.intake import DELIVERY_MEMORY

    reconcile.check_windows()
    assert reconcile.MARK_PRECISION <= reconcile.OVERLAP < reconcile.LOOKBACK_LIMIT < DELIVERY_MEMORY


def test_the_periodic_run_leaves_the_youngest_messages_to_the_webhook(tipline: Harness) -> None:
    tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT)  # just now
    report = run(tipline, grace=reconcile.PERIODIC_GRACE)
    assert report.listed == 0
    later = utcnow() + reconcile.PERIODIC_GRACE + dt.timedelta(seconds=5)
    assert run(tipline, now=later, grace=reconcile.PERIODIC_GRACE).taken_in == 1


def test_the_dispatcher_reconciles_on_its_interval_and_not_when_off(tipline: Harness, env: dict[str, str]) -> None:
    runtime = tipline.runtime
    tipline.twilio.requests.clear()
    assert runtime.reconcile_due() == 0
    assert runtime.reconcile_due() == 0  # not due again before the interval
    listings = [r for r in tipline.twilio.requests if r.path.endswith("/Messages.json")]
    # one listing of what came in to our line, one of what we sent a day ago or more (the sweep)
    assert [("To" in r.form, "From" in r.form) for r in listings] == [(True, False), (False, True)]
    runtime._next_reconcile = 0.0  # reconciliation is due again; the sweep only once an hour
    assert runtime.reconcile_due() == 0
    listings = [r for r in tipline.twilio.requests if r.path.endswith("/Messages.json")]
    assert [("To" in r.form, "From" in r.form) for r in listings][2:] == [(True, False)]
    assert load_settings(env).twilio_reconcile_seconds == 300

    # Off: the dispatcher never lists, and a webhook that cannot store a message promises nothing
    off = load_settings({**env, "TIPLINE_TWILIO_RECONCILE_SECONDS": "0"})
    assert off.twilio_reconcile_seconds == 0
    runtime.settings = off
    runtime._next_reconcile = 0.0
    assert runtime.reconcile_due() == 0
    assert len([r for r in tipline.twilio.requests if r.path.endswith("/Messages.json")]) == 3
    assert reconcile.deferred_replies(off) == ()
    assert "911" in reconcile.deferred_replies(load_settings(env))[0]


def test_the_fallback_url_processes_like_the_primary_and_a_double_delivery_is_harmless(tipline: Harness) -> None:
    _, form = tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT)
    first = replies(tipline.post_signed("/webhooks/twilio/fallback", form))
    assert first and "Where did it happen?" in first[0]
    again = tipline.post_signed("/webhooks/twilio/sms", form)  # Twilio delivered it to both
    assert again.status_code == 200 and replies(again) == []
    unsigned = tipline.client.post("/webhooks/twilio/fallback", data=form)
    assert unsigned.status_code == 403
    assert tips_count(tipline) == 1


def test_the_command_reconciles_and_prints_counts_only(
    tipline: Harness, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    help_text = CliRunner().invoke(cli, ["twilio", "reconcile", "--help"]).output
    assert "Messages log" in help_text and "deduplication" in help_text
    tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tipline.data_dir.parent)
    result = CliRunner().invoke(cli, ["twilio", "reconcile"])
    assert result.exit_code == 0, result.output
    assert "listed 1, taken in 1, already processed 0" in result.output
    assert "past their delivery report queued for deletion: 0" in result.output  # the reply is minutes old
    assert sent_to(tipline, TIPSTER)  # the command sent the reply
    second = CliRunner().invoke(cli, ["twilio", "reconcile"])
    assert "taken in 0" in second.output

    # Nothing identifying was written: not the number, not the words, not a precise time
    needles = [*phone_formats(TIPSTER), WHAT]
    assert scan_files(tipline.data_dir, needles, [tipline.log_file]) == []
    assert scan_database(tipline.runtime.engine, needles) == []
    assert all(token not in result.output for token in [TIPSTER, "CANARY"])


def test_a_twilio_outage_while_listing_changes_nothing_and_is_retried(tipline: Harness) -> None:
    sms = tipline.runtime.sms
    assert sms is not None
    tipline.twilio.receive(TIPSTER, LINE_NUMBER, WHAT, when=(utcnow() - dt.timedelta(minutes=5)).replace(tzinfo=dt.UTC))
    tipline.twilio.fail_next_list(503)
    assert reconcile.periodic(tipline.runtime.ctx, sms, tipline.runtime.intake) is None  # logged, not raised
    assert reconcile.read_mark(tipline.runtime.ctx) is None
    assert tips_count(tipline) == 0
    report = reconcile.periodic(tipline.runtime.ctx, sms, tipline.runtime.intake)
    assert report is not None and report.taken_in == 1


def test_the_stand_in_lists_messages_as_twilio_does(tipline: Harness) -> None:
    """The stand-in's Messages log, through the real client: filters, paging, newest first."""
    sms = tipline.runtime.sms
    assert sms is not None
    base = dt.datetime(2026, 11, 20, 12, 0, tzinfo=dt.UTC)
    for n in range(5):
        tipline.twilio.receive(TIPSTER, LINE_NUMBER, f"m{n}", when=base + dt.timedelta(seconds=n))
    tipline.twilio.receive(OTHER, LINE_NUMBER, "other", when=base + dt.timedelta(seconds=2))
    sent = sms.client.messages.create(to=TIPSTER, from_=LINE_NUMBER, body="a reply")

    listed = list(sms.client.messages.stream(to=LINE_NUMBER, page_size=2))  # three pages
    assert [m.body for m in listed] == ["m4", "m3", "other", "m2", "m1", "m0"]  # newest first
    assert {m.direction for m in listed} == {"inbound"}
    assert listed[0].date_sent == base + dt.timedelta(seconds=4)
    pages = [r.form for r in tipline.twilio.requests if r.path.endswith("/Messages.json") and r.method == "GET"]
    assert len(pages) == 3 and "PageToken" in pages[1]

    window = sms.client.messages.list(
        to=LINE_NUMBER,
        from_=TIPSTER,
        date_sent_after=base + dt.timedelta(seconds=1),
        date_sent_before=base + dt.timedelta(seconds=3),
    )
    assert [m.body for m in window] == ["m3", "m2", "m1"]  # both bounds inclusive
    [outbound] = sms.client.messages.list(to=TIPSTER, from_=LINE_NUMBER)
    assert (outbound.sid, outbound.direction, outbound.body) == (sent.sid, "outbound-api", "a reply")
    sms.client.messages(sent.sid).delete()
    assert sms.client.messages.list(to=TIPSTER) == []


def sweep(tipline: Harness, now: dt.datetime) -> int:
    sms = tipline.runtime.sms
    assert sms is not None
    return reconcile.sweep_replies(tipline.runtime.ctx, sms, now=now)


def test_a_reply_whose_final_report_never_came_is_deleted_at_twilio_a_day_later(tipline: Harness) -> None:
    """A reply's copy (the tipster's number and the text, in Twilio's log) is deleted once Twilio
    reports its final status. A carrier that never confirms delivery, or a report that found the
    tip line down, left it there until Twilio's retention ended."""
    twilio = tipline.twilio
    # Given a detective's reply (REST) and a bot's answer (TwiML) whose reports never came
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    sent = twilio.sent[-1]["_sid"]
    answered = twilio.record_reply(TIPSTER, LINE_NUMBER, "Thank you. Where did it happen?")
    # and an inbound message still in the log (not ours to sweep: reconciliation's)
    twilio.receive(OTHER, LINE_NUMBER, "CANARY-RECON-OTHER someone sells pills at the bus station")
    # When the sweep runs within the day, the reports may still come: nothing is queued
    assert sweep(tipline, utcnow()) == 0
    # When it runs a day later, both copies are queued once, under a stand-in that names no one
    later = utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
    assert sweep(tipline, later) == 2
    assert sweep(tipline, later + dt.timedelta(minutes=5)) == 0  # listed again, queued already
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    # Then Twilio's copies of both are deleted; the inbound message is left to reconciliation
    assert {sent, answered} <= set(twilio.deleted)
    assert [m["direction"] for m in twilio.logged()] == ["inbound"]
    assert scan_database(tipline.runtime.engine, [*phone_formats(TIPSTER), sent, answered]) == []
    # and the stand-in goes once its finished rows are purged, after a week
    purge(tipline.runtime.intake, retention_days=90, now=later + dt.timedelta(days=8))
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Contact).where(Contact.pseudonym.is_(None))).all() == []


def test_the_sweep_lists_only_our_line_and_waits_out_a_twilio_outage(tipline: Harness) -> None:
    twilio = tipline.twilio
    ours = twilio.record_reply(TIPSTER, LINE_NUMBER, "Thank you. Where did it happen?")
    other_number = twilio._log("SM" + "0" * 32, "+15555550199", TIPSTER, "another line's text", "outbound-api", "sent")
    other_app = twilio._log(
        "SM" + "1" * 32, LINE_NUMBER, TIPSTER, "another app", "outbound-api", "sent", messaging_service_sid="MG9"
    )
    later = utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
    twilio.fail_next_list(500)
    with pytest.raises(reconcile.ChannelError):
        sweep(tipline, later)
    assert sweep(tipline, later) == 1  # the whole window is read again: nothing was skipped
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    assert ours in twilio.deleted
    assert [m["sid"] for m in twilio.logged()] == [other_number["sid"], other_app["sid"]]  # not ours to delete


def test_a_copy_whose_deletion_failed_for_good_is_queued_again_a_day_later(tipline: Harness) -> None:
    twilio = tipline.twilio
    reply = twilio.record_reply(TIPSTER, LINE_NUMBER, "Thank you. Where did it happen?")
    later = utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
    assert sweep(tipline, later) == 1
    twilio.fail_next(401, 20003)  # refused for good (say, a revoked API key)
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    assert [m["sid"] for m in twilio.logged()] == [reply]  # refused: still at Twilio
    with tipline.runtime.factory() as session:
        assert session.scalars(select(OutboxItem.status).where(OutboxItem.kind == OutboxKind.DELETE)).all() == [
            OutboxStatus.FAILED
        ]
    assert sweep(tipline, later + dt.timedelta(hours=23)) == 0  # within the day: not again
    again = later + reconcile.SWEEP_AGAIN + dt.timedelta(minutes=1)
    assert sweep(tipline, again) == 1
    tipline.runtime.dispatcher.clock = lambda: again
    tipline.dispatch()
    assert twilio.logged() == []


def test_with_a_messaging_service_the_sweep_takes_that_service_s_messages(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    """A service sends from any number of its pool: its own messages are ours, whatever their
    number; another service's, sent from our number, are not."""
    service = "MG" + "0123456789abcdef" * 2
    tipline = make_harness({**env, "TWILIO_MESSAGING_SERVICE_SID": service}, twilio_server, log_file)
    try:
        pool = twilio_server._log(
            "SM" + "2" * 32, "+15555550177", TIPSTER, "a reply", "outbound-api", "sent", messaging_service_sid=service
        )
        other = twilio_server._log(
            "SM" + "3" * 32, LINE_NUMBER, TIPSTER, "another app", "outbound-api", "sent", messaging_service_sid="MG9"
        )
        assert sweep(tipline, utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)) == 1
        tipline.runtime.dispatcher.clock = lambda: utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
        tipline.dispatch()
        assert pool["sid"] in twilio_server.deleted
        assert [m["sid"] for m in twilio_server.logged()] == [other["sid"]]
    finally:
        tipline.runtime.close()


def test_the_sweep_deletes_nothing_when_provider_deletion_is_off(tipline: Harness, env: dict[str, str]) -> None:
    tipline.twilio.record_reply(TIPSTER, LINE_NUMBER, "Thank you. Where did it happen?")
    off = dataclasses.replace(tipline.runtime.ctx, settings=load_settings({**env, "TIPLINE_PROVIDER_DELETE": "0"}))
    tipline.twilio.requests.clear()
    sms = tipline.runtime.sms
    assert sms is not None
    assert reconcile.sweep_replies(off, sms, now=utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)) == 0
    assert tipline.twilio.requests == []  # not even listed


def test_a_copy_swept_and_then_reported_is_deleted_once_and_the_second_deletion_settles(tipline: Harness) -> None:
    """A reply's report may come after the sweep took its copy (a carrier days late): its deletion
    is queued again, Twilio answers 404 (gone already), and that is done, not a failure to retry."""
    twilio = tipline.twilio
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    sent = twilio.sent[-1]["_sid"]
    later = utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
    assert sweep(tipline, later) == 1
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    assert twilio.deleted.count(sent) == 1 and sent not in [m["sid"] for m in twilio.logged()]

    tipline.status_callback(sent, "delivered")  # the late report
    tipline.runtime.dispatcher.clock = lambda: later + dt.timedelta(minutes=5)
    tipline.dispatch()
    assert twilio.deleted.count(sent) == 2  # asked again, answered 404
    with tipline.runtime.factory() as session:
        deletions = session.execute(
            select(OutboxItem.status, OutboxItem.last_error).where(OutboxItem.kind == OutboxKind.DELETE)
        ).all()
    # every deletion settled done (the tip's messages, the sweep's, the report's), the last one by its 404
    assert {status for status, _ in deletions} == {OutboxStatus.DONE}
    assert [error for _, error in deletions if error is not None] == ["20404"]
    # and nothing is tried again
    tipline.runtime.dispatcher.clock = lambda: later + dt.timedelta(days=1)
    tipline.dispatch()
    assert twilio.deleted.count(sent) == 2


def test_with_the_shortest_retention_a_copy_is_still_swept_and_again_after_a_refusal(
    tipline: Harness, env: dict[str, str]
) -> None:
    """TIPLINE_RETENTION_DAYS=1 made the window from a day back to a day back: nothing was listed."""
    ctx = dataclasses.replace(tipline.runtime.ctx, settings=load_settings({**env, "TIPLINE_RETENTION_DAYS": "1"}))
    tipline.twilio.record_reply(TIPSTER, LINE_NUMBER, "Thank you. Where did it happen?")
    start = utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
    hourly = [start + dt.timedelta(hours=h) for h in range(24)]
    assert sum(reconcile.sweep_replies(ctx, tipline.runtime.sms, now=at) for at in hourly) == 1
    tipline.twilio.fail_next(401, 20003)  # refused for good
    tipline.runtime.dispatcher.clock = lambda: start
    tipline.dispatch()
    assert len(tipline.twilio.logged("outbound-reply")) == 1  # still at Twilio
    again = [start + reconcile.SWEEP_AGAIN + dt.timedelta(hours=h) for h in range(24)]
    assert sum(reconcile.sweep_replies(ctx, tipline.runtime.sms, now=at) for at in again) == 1
    tipline.runtime.dispatcher.clock = lambda: again[-1]
    tipline.dispatch()
    assert tipline.twilio.logged() == []


def test_a_reply_younger_than_a_day_is_left_even_if_twilio_filters_by_the_date_alone(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Twilio documents DateSent< and DateSent> as dates: a sweep just after midnight would then list
    a reply sent minutes before it, and delete it before its delivery report could come."""
    exact = fake_twilio._instant
    monkeypatch.setattr(fake_twilio, "_instant", lambda value: (exact(value[:10])[0], True))  # the date alone
    now = dt.datetime(2026, 11, 21, 0, 30)
    young = "SM" + "4" * 32
    tipline.twilio._log(
        young, LINE_NUMBER, TIPSTER, "Which car was it?", "outbound-reply", "sent",
        when=dt.datetime(2026, 11, 20, 23, 50, tzinfo=dt.UTC),
    )  # fmt: skip
    assert sweep(tipline, now) == 0
    assert sweep(tipline, now + dt.timedelta(days=1)) == 1  # a day after it was sent
    tipline.runtime.dispatcher.clock = lambda: now + dt.timedelta(days=1)
    tipline.dispatch()
    assert tipline.twilio.deleted == [young]


def test_another_application_s_message_from_our_number_is_left_alone_and_ours_is_not(tipline: Harness) -> None:
    """With TWILIO_FROM_NUMBER and no Messaging Service, a REST message from our number may be
    another application's on the same number (the agency's non-emergency notices): only the
    replies the tip line remembers sending are deleted."""
    other = tipline.twilio._log(
        "SM" + "5" * 32, LINE_NUMBER, "+15555550188", "Your report no. 42 was received", "outbound-api", "sent"
    )["sid"]
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    ours = tipline.twilio.sent[-1]["_sid"]
    later = utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
    assert sweep(tipline, later) == 1
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    assert ours in tipline.twilio.deleted and other not in tipline.twilio.deleted
    assert [m["sid"] for m in tipline.twilio.logged("outbound-api")] == [other]


def test_a_copy_still_there_after_a_pepper_rotation_is_queued_again_a_day_later(tipline: Harness) -> None:
    """The sweep remembers what it queued by keyed hash under the pepper of the time; after a
    rotation it asked under the new pepper alone whether a day had passed, and waited until the
    old row was forgotten."""
    tipline.twilio.record_reply(TIPSTER, LINE_NUMBER, "Thank you. Where did it happen?")
    later = utcnow() + reconcile.SWEEP_AFTER + dt.timedelta(minutes=1)
    assert sweep(tipline, later) == 1
    tipline.twilio.fail_next(401, 20003)  # refused for good
    tipline.runtime.dispatcher.clock = lambda: later
    tipline.dispatch()
    ctx = tipline.runtime.ctx
    rotation.run(ctx, rotation.start(ctx, tipline.master_key(), KeyPurpose.PSEUDONYM, False, None))
    assert sweep(tipline, later + dt.timedelta(hours=23)) == 0  # within the day: not again
    assert sweep(tipline, later + reconcile.SWEEP_AGAIN + dt.timedelta(minutes=1)) == 1
