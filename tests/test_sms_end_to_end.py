"""A tipster texts a tip by SMS, a detective replies, and nothing identifying is left behind."""

from __future__ import annotations

from sqlalchemy import func, select

from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.harness import (
    CARRIER_CITY,
    CARRIER_ZIP,
    LINE_NUMBER,
    TIPSTER,
    Harness,
    inbound_form,
    new_sid,
    reference_of,
    replies,
    sign,
)
from tipline.core.vocabulary import MessageKind, ReplyDelivery, TipStatus
from tipline.services import review
from tipline.storage.models import OutboxItem, Tip

TIP_TEXT = "CANARY-TIP a blue van with plate QX-4417 unloads boxes behind Lincoln school at night"
PLACE = "CANARY-PLACE behind the gym on Maple Street"
FOLLOW_UP = "CANARY-FOLLOWUP the van came back tonight"


def test_a_tip_by_sms_from_greeting_to_detective_reply(tipline: Harness) -> None:
    sids = []

    def say(body: str) -> list[str]:
        sid = new_sid()
        sids.append(sid)
        return replies(tipline.sms(body, sid=sid))

    # Given a tipster who has never texted before
    greeting = say("Hi")
    assert len(greeting) == 1
    assert "anonymous" in greeting[0]
    assert "911" in greeting[0]
    assert "Example City Police" in greeting[0]

    # When they describe what they saw, where, and skip when
    assert "Where did it happen?" in say(TIP_TEXT)[0]
    assert "When did it happen?" in say(PLACE)[0]
    submitted = say("skip")
    assert len(submitted) == 1
    reference = reference_of(submitted[0])
    assert "detective may reply" in submitted[0]

    # Then later messages join the tip's thread
    assert say(FOLLOW_UP) == [f"Added to tip {reference}. Thank you."]

    tips, total = review.list_tips(tipline.runtime.ctx)
    assert total == 1
    assert (tips[0].reference, tips[0].status, tips[0].unread) == (reference, TipStatus.NEW, 1)
    assert tips[0].alias.startswith("Tipster ")
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert (detail.what, detail.where, detail.when) == (TIP_TEXT, PLACE, None)
    kinds = [(e.kind, e.text) for e in detail.thread]
    assert kinds[0] == (MessageKind.TIPSTER, TIP_TEXT)
    assert (MessageKind.TIPSTER, FOLLOW_UP) in kinds
    assert [k for k, _ in kinds].count(MessageKind.BOT) == 4  # where?, when?, submitted, added
    assert detail.replies_blocked is None

    # And the provider's copies of all five inbound messages are deleted once stored (G5)
    tipline.dispatch()
    assert sorted(tipline.twilio.deleted) == sorted(sids)

    # When a detective replies
    review.reply(tipline.runtime.ctx, reference, "Thank you. Did you see the driver?")
    assert tipline.dispatch() == 1

    # Then the real twilio client delivered it to the tipster's number through Twilio's REST API
    assert len(tipline.twilio.sent) == 1
    sent = tipline.twilio.sent[0]
    assert sent["To"] == TIPSTER
    assert sent["From"] == LINE_NUMBER
    assert sent["Body"] == "Example City Police: Thank you. Did you see the driver?"
    assert sent["StatusCallback"] == "https://tips.example.org/webhooks/twilio/status"
    thread = review.read_tip(tipline.runtime.ctx, reference).thread
    assert (thread[-1].kind, thread[-1].delivery) == (MessageKind.AGENCY, ReplyDelivery.SENT)

    # When Twilio reports delivery, the thread shows it and our outbound copy is deleted too
    assert tipline.status_callback(sent["_sid"], "delivered").status_code == 200
    thread = review.read_tip(tipline.runtime.ctx, reference).thread
    assert thread[-1].delivery == ReplyDelivery.DELIVERED
    tipline.dispatch()
    assert sent["_sid"] in tipline.twilio.deleted

    # And the tipster's answer joins the same tip
    assert say("He was tall, red cap")[0] == f"Added to tip {reference}. Thank you."
    tipline.dispatch()

    # Finally: nothing identifying or secret is anywhere the program wrote, in plaintext
    needles = [
        *phone_formats(TIPSTER),
        CARRIER_CITY,
        CARRIER_ZIP,
        *sids,
        sent["_sid"],
        "CANARY-TIP",
        "CANARY-PLACE",
        "CANARY-FOLLOWUP",
        "QX-4417",
        "red cap",
        "Did you see the driver",
    ]
    assert scan_files(tipline.data_dir, needles, [tipline.log_file]) == []
    assert scan_database(tipline.runtime.engine, needles) == []


def test_every_log_line_is_identifier_free_even_at_debug(tipline: Harness) -> None:
    tipline.say("There is a man selling pills at the bus stop every morning", sender="+15555550177")
    tipline.say("skip", sender="+15555550177")
    tipline.dispatch()
    log = tipline.log_file.read_text()
    assert "message processed" in log  # the log is useful: it says what happened...
    for needle in [*phone_formats("+15555550177"), "pills", CARRIER_CITY]:
        assert needle not in log  # ...and never who or what was said


def test_a_tip_lands_encrypted_with_a_random_reference(tipline: Harness) -> None:
    reference = tipline.submit_tip("Someone is dealing from the red house on the corner")
    with tipline.runtime.factory() as session:
        tip = session.scalars(select(Tip)).one()
        outbox = session.scalar(select(func.count()).select_from(OutboxItem))
    assert tip.reference == reference
    assert tip.what_ct is not None
    assert b"red house" not in tip.what_ct
    assert tip.where_ct is None
    assert outbox == 3  # deletions of three inbound copies


def test_concurrent_senders_each_get_their_own_tip(tipline: Harness) -> None:
    a, b = "+15555550111", "+15555550122"
    tipline.say("Car break-ins on 3rd street", sender=a)
    tipline.say("Graffiti crew at the rail yard", sender=b)
    tipline.say("skip", sender=a)
    tipline.say("skip", sender=b)
    ref_a = reference_of(tipline.say("skip", sender=a)[0])
    ref_b = reference_of(tipline.say("skip", sender=b)[0])
    assert ref_a != ref_b
    ctx = tipline.runtime.ctx
    assert review.read_tip(ctx, ref_a).what == "Car break-ins on 3rd street"
    assert review.read_tip(ctx, ref_b).what == "Graffiti crew at the rail yard"
    # Aliases are per tip and say nothing about the sender
    assert review.read_tip(ctx, ref_a).summary.alias != review.read_tip(ctx, ref_b).summary.alias


def test_the_webhook_only_trusts_the_public_url(tipline: Harness) -> None:
    form = inbound_form("hello")
    # Signed for the internal address the request really reached: refused, Twilio never signs that.
    signature = sign("/webhooks/twilio/sms", form, base="http://localhost")
    response = tipline.client.post("/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
