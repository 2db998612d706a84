"""Abuse control without identity: a flooding sender keeps every message but not the bot's voice.

Through the real SMS and Telegram webhooks and the console over HTTP. What must hold: every message
is stored; the bot's answers and the tip's unread count are bounded per sender and window; a
detective can mute a tip's sender (audited, never seeing who) and unmute them; a burst of new
senders shows to administrators as counts only; nothing identifying is written anywhere.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from tests.support import fake_telegram
from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.console import Person, person
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import REFERENCE, TIPSTER, Harness, make_harness, telegram_harness
from tests.support.telegram_updates import USER_ID, message_update
from tipline.core.vocabulary import MessageKind
from tipline.services import maintenance, review
from tipline.storage.models import AuditEntry, Contact, Message, NewSender, Tip, utcnow

TIP = "A grey van parks behind the pharmacy on Elm St every night and men unload boxes"
SLOW_DOWN = "We are receiving all your messages"


def thread_of(harness: Harness, reference: str) -> list[tuple[str, str]]:
    """The tip's thread as (kind, text), without auditing a view."""
    return [(e.kind, e.text) for e in review.read_tip(harness.runtime.ctx, reference, mark_read=False).thread]


def unread_of(harness: Harness) -> int:
    with harness.runtime.factory() as session:
        return session.scalars(select(Tip.unread)).one()


def later(harness: Harness, minutes: int) -> None:
    """Move intake's clock forward (the reply window is counted on it)."""
    moment = utcnow() + dt.timedelta(minutes=minutes)
    harness.runtime.intake.clock = lambda: moment


def marks(harness: Harness) -> int:
    """How many new-sender marks the database holds."""
    with harness.runtime.factory() as session:
        return len(session.scalars(select(NewSender.id)).all())


@pytest.fixture
def detective(tipline: Harness) -> Person:
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    assert dana.sign_in().location.endswith("/console/")
    return dana


def test_a_tipster_who_writes_fifteen_texts_in_a_row_gets_every_answer(tipline: Harness) -> None:
    reference = tipline.submit_tip(TIP)
    answers = [tipline.say(f"detail number {n} about the van") for n in range(15)]
    assert answers == [[f"Added to tip {reference}. Thank you."]] * 15
    assert unread_of(tipline) == 15


def test_a_flood_is_stored_whole_answered_up_to_the_limit_with_one_notice(tipline: Harness) -> None:
    # Given a tipster who submitted a tip (3 messages) and then sends 27 more within a minute
    reference = tipline.submit_tip(TIP)
    answers = [tipline.say(f"flood message {n}") for n in range(27)]
    # Then the first 20 messages of the window were answered, the 21st got the notice, the rest nothing
    assert answers[:17] == [[f"Added to tip {reference}. Thank you."]] * 17
    assert len(answers[17]) == 1 and answers[17][0].startswith(SLOW_DOWN)
    assert "911" in answers[17][0]
    assert answers[18:] == [[]] * 9
    # And every message is in the tip, in order; the notice too, so that the detective sees it
    thread = thread_of(tipline, reference)
    said = [text for kind, text in thread if kind == MessageKind.TIPSTER]
    assert said == [TIP] + [f"flood message {n}" for n in range(27)]
    assert sum(1 for kind, text in thread if kind == MessageKind.BOT and text.startswith(SLOW_DOWN)) == 1
    # And the unread count grew only with the answered messages
    assert unread_of(tipline) == 17

    # When the window has passed, the sender is answered again and the count grows again
    later(tipline, 11)
    assert tipline.say("one more detail: the van has a dented door") == [f"Added to tip {reference}. Thank you."]
    assert unread_of(tipline) == 18
    # and a detective's reply was never held back
    review.reply(tipline.runtime.ctx, reference, "Which night did you last see it?")
    tipline.dispatch()
    assert tipline.twilio.sent[-1]["Body"] == "Example City Police: Which night did you last see it?"

    needles = [*phone_formats(TIPSTER)]
    assert scan_database(tipline.runtime.engine, needles) == []
    assert scan_files(tipline.data_dir, needles, [tipline.log_file]) == []


def test_the_limit_and_window_are_settings(env: dict[str, str], twilio_server: FakeTwilio, log_file: Path) -> None:
    harness = make_harness(
        {**env, "TIPLINE_SENDER_REPLY_LIMIT": "4", "TIPLINE_SENDER_WINDOW_MINUTES": "2"}, twilio_server, log_file
    )
    try:
        harness.submit_tip(TIP)
        assert harness.say("first detail")  # the 4th message of the window
        assert harness.say("second detail")[0].startswith(SLOW_DOWN)
        assert harness.say("third detail") == []
        later(harness, 3)
        assert harness.say("fourth detail") != []
    finally:
        harness.runtime.close()


@pytest.fixture
def strict_tg(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> Iterator[tuple[Harness, fake_telegram.FakeTelegram]]:
    with telegram_harness(env, twilio_server, log_file, TIPLINE_SENDER_REPLY_LIMIT="5") as pair:
        yield pair


def test_a_telegram_flood_sends_at_most_the_limit_and_one_notice(
    strict_tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = strict_tg
    for n in range(30):
        assert harness.post_update(message_update(f"telegram flood {n} about the van")).status_code == 200
    harness.dispatch()
    sent = [call["text"] for call in fake.called("sendMessage")]
    assert len(sent) == 6  # answers to the first 5 messages, then the notice
    assert sent[-1].startswith(SLOW_DOWN)
    with harness.runtime.factory() as session:
        texts = session.scalars(select(Message).where(Message.kind == MessageKind.TIPSTER)).all()
        assert len(texts) == 30  # every one stored (sealed)
    assert scan_database(harness.runtime.engine, [str(USER_ID)]) == []


def test_a_detective_mutes_and_unmutes_a_tips_sender(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(TIP)
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "Mute sender" in page
    assert "Sender muted" not in page

    # When the detective mutes the sender from the tip (a form with its CSRF token)
    refused = detective.post(f"/console/tips/{reference}/sender/mute", csrf=False)
    assert refused.status_code == 400
    response = detective.post(f"/console/tips/{reference}/sender/mute")
    assert response.status_code == 302
    page = detective.get(response.location).get_data(as_text=True)
    assert "Sender muted" in page
    assert "Unmute sender" in page
    # Then the sender's messages are stored, unanswered, and bump no unread count
    assert tipline.say("muted message one") == []
    assert tipline.say("muted message two") == []
    said = [text for kind, text in thread_of(tipline, reference) if kind == MessageKind.TIPSTER]
    assert said[-2:] == ["muted message one", "muted message two"]
    assert unread_of(tipline) == 0
    # A detective may still write to them
    review.reply(tipline.runtime.ctx, reference, "Are you safe?")
    tipline.dispatch()
    assert tipline.twilio.sent[-1]["Body"] == "Example City Police: Are you safe?"

    # When the detective unmutes them, they are answered again
    detective.get(f"/console/tips/{reference}")
    response = detective.post(f"/console/tips/{reference}/sender/unmute")
    assert "Sender unmuted" in detective.get(response.location).get_data(as_text=True)
    assert tipline.say("after the unmute") == [f"Added to tip {reference}. Thank you."]
    assert unread_of(tipline) == 1

    # Both acts are in the audit log, by the tip, never by the sender
    with tipline.runtime.factory() as session:
        entries = session.execute(
            select(AuditEntry.action, AuditEntry.actor, AuditEntry.object_id).where(
                AuditEntry.action.in_(["tip.mute_sender", "tip.unmute_sender"])
            )
        ).all()
        contact_id = session.scalars(select(Contact.id)).one()
    assert sorted(entries) == [("tip.mute_sender", "dana", reference), ("tip.unmute_sender", "dana", reference)]
    pages = "".join(detective.pages)
    assert contact_id not in pages
    assert all(form not in pages for form in phone_formats(TIPSTER))


def test_a_mute_shows_on_its_own_tip_only_so_that_it_links_no_tips(tipline: Harness, detective: Person) -> None:
    first = tipline.submit_tip(TIP)
    tipline.say("new")
    second = tipline.submit_tip("The same van was at the school gate this morning")
    # When the detective mutes the sender from the first tip
    detective.get(f"/console/tips/{first}")
    detective.post(f"/console/tips/{first}/sender/mute")
    # Then the second tip's page does not tell that its sender is the same, muted one
    page = detective.get(f"/console/tips/{second}").get_data(as_text=True)
    assert "Sender muted" not in page
    assert "Mute sender" in page
    # Nor does a mute and unmute from the second tip undo the first tip's mute (which would tell)
    detective.post(f"/console/tips/{second}/sender/mute")
    detective.post(f"/console/tips/{second}/sender/unmute")
    assert "Sender muted" in detective.get(f"/console/tips/{first}").get_data(as_text=True)
    assert tipline.say("still muted") == []
    # Unmuting the tip it was set from ends it
    detective.post(f"/console/tips/{first}/sender/unmute")
    assert tipline.say("answered again") == [f"Added to tip {second}. Thank you."]


def test_a_forgotten_sender_cannot_be_muted(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(TIP)
    tipline.say("FORGET")
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "Mute sender" not in page
    response = detective.post(f"/console/tips/{reference}/sender/mute")
    assert "Not changed: nothing links this tip to a sender any more" in detective.get(response.location).get_data(
        as_text=True
    )


def test_a_burst_of_new_senders_shows_to_admins_as_counts_only(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    harness = make_harness({**env, "TIPLINE_NEW_SENDER_ALERT_PER_HOUR": "3"}, twilio_server, log_file)
    try:
        moment = utcnow()
        harness.runtime.intake.clock = lambda: moment  # all in one hour, whenever the test runs
        admin = person(harness.app, harness.runtime.ctx, "alex", roles=("admin",))
        admin.sign_in()
        detective = person(harness.app, harness.runtime.ctx, "dana")
        detective.sign_in()
        calm = admin.get("/console/admin/activity").get_data(as_text=True)
        assert 'id="burst-none"' in calm
        assert 'id="new-senders-total">0<' in calm

        senders = [f"+1555555{n:04d}" for n in range(150, 155)]
        for sender in senders:
            harness.say("hello", sender=sender)
        harness.say("hello again", sender=senders[0])  # not a new sender
        page = admin.get("/console/admin/activity").get_data(as_text=True)
        assert 'id="burst-warning"' in page
        assert "more than 3 new senders" in page
        assert 'id="new-senders-total">5<' in page
        assert f'{moment:%Y-%m-%d %H}:00</td><td data-label="New senders">5<' in page
        assert all(form not in page for sender in senders for form in phone_formats(sender))
        # A detective does not see it
        assert detective.get("/console/admin/activity").status_code == 403
        # Maintenance keeps two days of marks: one day later they remain, three days later they are gone.
        maintenance.purge(harness.runtime.intake, 30, now=moment + dt.timedelta(days=1))
        assert marks(harness) == 5
        maintenance.purge(harness.runtime.intake, 30, now=moment + dt.timedelta(days=3))
        assert marks(harness) == 0
    finally:
        harness.runtime.close()


def test_a_muted_telegram_sender_is_stored_unanswered_and_can_still_erase(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    for typed in (TIP, "skip", "skip"):
        assert harness.post_update(message_update(typed)).status_code == 200
    harness.dispatch()
    reference = REFERENCE.search(fake.called("sendMessage")[-1]["text"]).group(0)
    assert review.set_muted(harness.runtime.ctx, reference, True, actor="dana")
    assert not review.set_muted(harness.runtime.ctx, reference, True, actor="dana")  # already muted
    assert review.read_tip(harness.runtime.ctx, reference, mark_read=False).sender_muted is True
    sent = len(fake.called("sendMessage"))
    assert harness.post_update(message_update("muted on telegram")).status_code == 200
    assert harness.post_update(message_update("/erase")).status_code == 200
    harness.dispatch()
    assert len(fake.called("sendMessage")) == sent  # nothing said
    assert fake.called("deleteMessages")  # but the erasure was carried out
    assert ("tipster", "muted on telegram") in thread_of(harness, reference)
