"""STOP, START, FORGET and the detective's reply: who can still be written to, and why not."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support.harness import REFERENCE, TIPSTER, Harness
from tipline.services import review
from tipline.storage.models import Contact


def submit_tip(tipline: Harness, sender: str = TIPSTER) -> str:
    tipline.say("Someone keeps breaking into cars on Pine St", sender=sender)
    tipline.say("skip", sender=sender)
    return REFERENCE.search(tipline.say("skip", sender=sender)[0]).group(0)


def reply(tipline: Harness, reference: str, text: str = "Can you tell us more?") -> int:
    return review.reply(tipline.runtime.factory, tipline.runtime.keys.keyring, tipline.runtime.settings, reference, text)


def contact(tipline: Harness) -> Contact:
    with tipline.runtime.factory() as session:
        return session.scalars(select(Contact)).one()


def test_stop_erases_the_address_sends_nothing_and_blocks_replies(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    assert tipline.say("STOP") == []
    assert contact(tipline).address_ct is None and contact(tipline).opted_out
    with pytest.raises(review.RepliesImpossible) as refused:
        reply(tipline, reference)
    assert "opted out" in refused.value.reason
    detail = review.read_tip(tipline.runtime.factory, tipline.runtime.keys.keyring, reference)
    assert detail.replies_blocked and "opted out" in detail.replies_blocked
    # Messages from an opted-out sender are still tips (never lost), but get no answer
    assert tipline.say("one more thing: they drive a white truck") == []
    thread = review.read_tip(tipline.runtime.factory, tipline.runtime.keys.keyring, reference).thread
    assert thread[-1].text == "one more thing: they drive a white truck"
    tipline.dispatch()
    assert tipline.twilio.sent == []


def test_twilio_opt_out_type_is_honoured(tipline: Harness) -> None:
    submit_tip(tipline)
    response = tipline.sms("ARRET", OptOutType="STOP")
    assert "<Message>" not in response.get_data(as_text=True)
    assert contact(tipline).opted_out


def test_start_opts_back_in_and_replies_work_again(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    tipline.say("STOP")
    answer = tipline.say("START")
    assert "get messages from this tip line again" in answer[0]
    assert contact(tipline).address_ct is not None
    reply(tipline, reference)
    tipline.dispatch()
    assert len(tipline.twilio.sent) == 1 and tipline.twilio.sent[0]["To"] == TIPSTER


def test_forget_erases_the_address_and_unlinks_the_sender(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    answer = tipline.say("FORGET")
    assert reference in answer[0] and "erased" in answer[0]
    with pytest.raises(review.RepliesImpossible) as refused:
        reply(tipline, reference)
    assert "forgotten" in refused.value.reason
    # The tip stays; the next message starts a new conversation with no link to it
    assert review.read_tip(tipline.runtime.factory, tipline.runtime.keys.keyring, reference).what
    assert "anonymous" in tipline.say("hi")[0]
    with tipline.runtime.factory() as session:
        contacts = session.scalars(select(Contact)).all()
        assert len(contacts) == 2 and sum(c.pseudonym is None for c in contacts) == 1


def test_a_reply_queued_before_stop_is_never_sent(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    reply(tipline, reference)
    tipline.say("STOP")
    tipline.dispatch()
    assert tipline.twilio.sent == []
    thread = review.read_tip(tipline.runtime.factory, tipline.runtime.keys.keyring, reference).thread
    assert [e.delivery for e in thread if e.kind == "agency"] == ["failed"]


def test_carrier_opt_out_error_21610_marks_replies_impossible(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    tipline.dispatch()  # deletions of the inbound copies
    tipline.twilio.fail_next(400, 21610)
    reply(tipline, reference)
    tipline.dispatch()
    assert contact(tipline).opted_out and contact(tipline).address_ct is None
    with pytest.raises(review.RepliesImpossible):
        reply(tipline, reference)


def test_empty_and_overlong_replies_are_refused(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    with pytest.raises(ValueError):
        reply(tipline, reference, "   ")
    with pytest.raises(ValueError):
        reply(tipline, reference, "x" * 1001)


def test_a_reply_brings_the_tipsters_answer_back_to_that_tip(tipline: Harness) -> None:
    first = submit_tip(tipline)
    tipline.say("NEW")
    tipline.say("A second, unrelated tip about a stolen bike")
    tipline.say("skip")
    second = REFERENCE.search(tipline.say("skip")[0]).group(0)
    assert second != first
    reply(tipline, first, "About your first tip: which car?")
    assert tipline.say("The red one")[0] == f"Added to tip {first}. Thank you."


def test_notes_are_internal(tipline: Harness) -> None:
    reference = submit_tip(tipline)
    review.add_note(tipline.runtime.factory, tipline.runtime.keys.keyring, reference, "Matches case 24-1187")
    tipline.dispatch()
    assert tipline.twilio.sent == []
    thread = review.read_tip(tipline.runtime.factory, tipline.runtime.keys.keyring, reference).thread
    assert thread[-1].kind == "note" and thread[-1].text == "Matches case 24-1187"
