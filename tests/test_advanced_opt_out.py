"""Twilio's Advanced Opt-Out: when `OptOutType` says Twilio already answered STOP, START or HELP, the
tip line applies the effect and answers nothing (before, the tipster got two answers to HELP and
START). Without `OptOutType` (an account without Advanced Opt-Out), the keywords answer as before.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from tests.support.harness import TIPSTER, Harness, reference_of, replies
from tipline.services import review
from tipline.storage.models import Contact, Tip

EMPTY = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def contact(tipline: Harness) -> Contact:
    with tipline.runtime.factory() as session:
        return session.scalars(select(Contact)).one()


def tips(tipline: Harness) -> int:
    with tipline.runtime.factory() as session:
        return session.scalar(select(func.count()).select_from(Tip)) or 0


def test_help_answered_by_twilio_gets_an_empty_answer_and_changes_nothing(tipline: Harness) -> None:
    tipline.say("A man sells stolen bikes from a van outside the station")
    answer = tipline.sms("HELP", OptOutType="HELP")

    assert answer.get_data(as_text=True) == EMPTY
    # The draft still waits for its place: HELP was no answer to the question
    assert "When did it happen?" in tipline.say("outside the north entrance")[0]
    reference = reference_of(tipline.say("skip")[0])
    assert review.read_tip(tipline.runtime.ctx, reference).where == "outside the north entrance"


def test_a_custom_help_keyword_is_no_tip(tipline: Harness) -> None:
    # Advanced Opt-Out allows keywords of the operator's choosing: OptOutType decides, not the word
    answer = tipline.sms("AIDE", OptOutType="HELP")

    assert answer.get_data(as_text=True) == EMPTY
    assert tips(tipline) == 0


def test_stop_answered_by_twilio_opts_out_and_nothing_is_sent_after(tipline: Harness) -> None:
    reference = tipline.submit_tip()

    assert tipline.sms("STOP", OptOutType="STOP").get_data(as_text=True) == EMPTY
    assert contact(tipline).opted_out
    assert contact(tipline).address_ct is None

    # A later message is still taken, and gets no answer, by TwiML or otherwise
    assert tipline.sms("they came back").get_data(as_text=True) == EMPTY
    assert review.read_tip(tipline.runtime.ctx, reference).thread[-1].text == "they came back"
    with pytest.raises(review.RepliesImpossible):
        review.reply(tipline.runtime.ctx, reference, "Can you tell us more?")
    tipline.dispatch()
    assert tipline.twilio.sent == []


def test_start_answered_by_twilio_opts_back_in_and_messages_flow_again(tipline: Harness) -> None:
    reference = tipline.submit_tip()
    tipline.sms("STOP", OptOutType="STOP")

    assert tipline.sms("UNSTOP", OptOutType="START").get_data(as_text=True) == EMPTY
    assert not contact(tipline).opted_out
    assert contact(tipline).address_ct is not None

    # The bot answers again, and a detective's reply reaches the tipster
    assert tipline.say("the van is back") != []
    review.reply(tipline.runtime.ctx, reference, "Which van?")
    tipline.dispatch()
    assert [form["To"] for form in tipline.twilio.sent] == [TIPSTER]


def test_without_advanced_opt_out_the_keywords_answer_as_before(tipline: Harness) -> None:
    reference = tipline.submit_tip()

    help_text = tipline.say("HELP")
    assert len(help_text) == 1 and "911" in help_text[0]
    assert tipline.say("STOP") == []  # the carrier confirms an opt-out itself
    assert contact(tipline).opted_out
    assert replies(tipline.sms("START")) != []  # the tip line says the tipster is back
    assert not contact(tipline).opted_out
    review.reply(tipline.runtime.ctx, reference, "Which car?")
    tipline.dispatch()
    assert [form["To"] for form in tipline.twilio.sent] == [TIPSTER]


def test_while_the_database_is_down_a_keyword_twilio_answered_gets_no_second_answer(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def down(message: object) -> None:
        raise OperationalError("SELECT 1", {}, Exception("the database is unreachable"))

    monkeypatch.setattr(tipline.runtime.intake, "receive", down)

    assert tipline.sms("HELP", OptOutType="HELP").get_data(as_text=True) == EMPTY
    # A message Twilio did not answer gets the usual "received, we answer later"
    assert replies(tipline.sms("A grey pickup behind the school")) != []
