"""STOP, START, FORGET and the detective's reply: who can still be written to, and why not."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support.harness import TIPSTER, Harness
from tipline.core.vocabulary import MessageKind, ReplyDelivery
from tipline.services import review
from tipline.storage.models import Contact


def reply(tipline: Harness, reference: str, text: str = "Can you tell us more?") -> int:
    return review.reply(tipline.runtime.ctx, reference, text)


def contact(tipline: Harness) -> Contact:
    with tipline.runtime.factory() as session:
        return session.scalars(select(Contact)).one()


def test_stop_erases_the_address_sends_nothing_and_blocks_replies(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    assert tipline.say("STOP") == []
    assert contact(tipline).address_ct is None
    assert contact(tipline).opted_out
    with pytest.raises(review.RepliesImpossible) as refused:
        reply(tipline, reference)
    assert "opted out" in refused.value.reason
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert detail.replies_blocked is not None
    assert "opted out" in detail.replies_blocked
    # Messages from an opted-out sender are still tips (never lost), but get no answer
    assert tipline.say("one more thing: they drive a white truck") == []
    thread = review.read_tip(tipline.runtime.ctx, reference).thread
    assert thread[-1].text == "one more thing: they drive a white truck"
    tipline.dispatch()
    assert tipline.twilio.sent == []


def test_twilio_opt_out_type_is_honoured(tipline: Harness) -> None:
    tipline.submit_tip()
    response = tipline.sms("ARRET", OptOutType="STOP")
    assert "<Message" not in response.get_data(as_text=True)
    assert contact(tipline).opted_out


def test_start_opts_back_in_and_replies_work_again(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    tipline.say("STOP")
    answer = tipline.say("START")
    assert "get messages from this tip line again" in answer[0]
    assert contact(tipline).address_ct is not None
    reply(tipline, reference)
    tipline.dispatch()
    assert [form["To"] for form in tipline.twilio.sent] == [TIPSTER]


def test_forget_erases_the_address_and_unlinks_the_sender(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    answer = tipline.say("FORGET")
    assert reference in answer[0]
    assert "erased" in answer[0]
    with pytest.raises(review.RepliesImpossible) as refused:
        reply(tipline, reference)
    assert "forgotten" in refused.value.reason
    # The tip stays; the next message starts a new conversation with no link to it
    assert review.read_tip(tipline.runtime.ctx, reference).what
    assert "anonymous" in tipline.say("hi")[0]
    with tipline.runtime.factory() as session:
        contacts = session.scalars(select(Contact)).all()
    assert len(contacts) == 2
    assert sum(c.pseudonym is None for c in contacts) == 1  # the forgotten one


def test_a_reply_queued_before_stop_is_never_sent(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    reply(tipline, reference)
    tipline.say("STOP")
    tipline.dispatch()
    assert tipline.twilio.sent == []
    thread = review.read_tip(tipline.runtime.ctx, reference).thread
    assert [e.delivery for e in thread if e.kind == MessageKind.AGENCY] == [ReplyDelivery.FAILED]


def test_carrier_opt_out_error_21610_marks_replies_impossible(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    tipline.dispatch()  # deletions of the inbound copies
    tipline.twilio.fail_next(400, 21610)
    reply(tipline, reference)
    tipline.dispatch()
    assert contact(tipline).opted_out
    assert contact(tipline).address_ct is None
    with pytest.raises(review.RepliesImpossible):
        reply(tipline, reference)


def test_empty_and_overlong_replies_are_refused(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    with pytest.raises(ValueError):
        reply(tipline, reference, "   ")
    with pytest.raises(ValueError):
        reply(tipline, reference, "x" * 1001)


def test_a_reply_brings_the_tipsters_answer_back_to_that_tip(tipline: Harness) -> None:
    first = tipline.submit_tip()
    tipline.say("NEW")
    second = tipline.submit_tip("A second, unrelated tip about a stolen bike")
    assert second != first
    reply(tipline, first, "About your first tip: which car?")
    assert tipline.say("The red one")[0] == f"Added to tip {first}. Thank you."


def test_notes_are_internal(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    review.add_note(tipline.runtime.ctx, reference, "Matches case 24-1187")
    tipline.dispatch()
    assert tipline.twilio.sent == []
    thread = review.read_tip(tipline.runtime.ctx, reference).thread
    assert (thread[-1].kind, thread[-1].text) == (MessageKind.NOTE, "Matches case 24-1187")
