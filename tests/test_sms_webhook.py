"""The SMS webhook under forged, malformed, strange and repeated input: never a 500, never a lost tip."""

from __future__ import annotations

import threading
from urllib.parse import urlsplit

import pytest
from sqlalchemy import func, select, text

from tests.support.harness import Harness, inbound_form, make_harness, new_sid, replies, sign
from tests.support.scratch import PG_URL, wait_for_lock_waiters
from tipline.core.vocabulary import DeliveryStatus, TipStatus
from tipline.services import review
from tipline.storage.models import Message, ProcessedDelivery, Tip

PATH = "/webhooks/twilio/sms"


def count(harness: Harness, model: type) -> int:
    with harness.runtime.factory() as session:
        return session.scalar(select(func.count()).select_from(model)) or 0


def test_missing_signature_is_refused_and_nothing_is_written(tipline: Harness) -> None:
    response = tipline.client.post(PATH, data=inbound_form("a tip"))
    assert response.status_code == 403
    assert count(tipline, ProcessedDelivery) == 0


@pytest.mark.parametrize("forge", ["wrong token", "tampered body", "other path", "garbage"])
def test_forged_signatures_are_refused(tipline: Harness, forge: str) -> None:
    form = inbound_form("a tip")
    signature = {
        "wrong token": lambda: sign(PATH, form, token="not-the-token"),
        "tampered body": lambda: sign(PATH, {**form, "Body": "something else"}),
        "other path": lambda: sign("/webhooks/twilio/status", form),
        "garbage": lambda: "!!not base64!!",
    }[forge]()
    response = tipline.client.post(PATH, data=form, headers={"X-Twilio-Signature": signature})
    assert response.status_code == 403
    assert count(tipline, ProcessedDelivery) == 0


def test_a_signature_over_the_url_with_its_default_port_is_accepted(tipline: Harness) -> None:
    """Twilio may sign `https://host:443/...` for a URL configured without the port: the signature
    checked first (the URL as configured) fails, and the full check must still accept it."""
    form = inbound_form("CANARY-PORT a tip signed over the URL with :443")
    public = urlsplit(tipline.public_url)
    assert public.scheme == "https" and public.port is None
    with_port = public._replace(netloc=f"{public.hostname}:443").geturl()
    response = tipline.client.post(PATH, data=form, headers={"X-Twilio-Signature": sign(PATH, form, base=with_port)})
    assert response.status_code == 200
    assert count(tipline, ProcessedDelivery) == 1


@pytest.mark.parametrize(
    "bad,field",
    [
        ({"From": "not-a-number +15555550142"}, "From"),
        ({"MessageSid": "SM123"}, "MessageSid"),
        # Media we cannot take are refused and the words kept: tests/attacks/test_lost_words.py
    ],
)
def test_malformed_but_signed_webhooks_get_400(tipline: Harness, bad: dict[str, str], field: str) -> None:
    # Which forms are malformed is tabled in test_parsing.py; here, what the webhook answers.
    response = tipline.post_signed(PATH, inbound_form("a tip", **bad))
    assert response.status_code == 400
    assert field in response.get_data(as_text=True)
    assert "+1555" not in response.get_data(as_text=True)  # the error names the field, never echoes it
    assert count(tipline, ProcessedDelivery) == 0


def test_an_oversized_body_is_refused_before_anything_else(tipline: Harness) -> None:
    form = inbound_form("x" * 300_000)
    assert tipline.post_signed(PATH, form).status_code == 413


@pytest.mark.parametrize(
    "body",
    [
        "\u202eRTL override\u202c and zero\u200bwidth",
        "emoji 🚓🚨 and family 👨‍👩‍👧 and flags 🇺🇸",
        "nul\x00byte and bell\x07",
        "combining e\u0301 and Zalgo t̷̢̛e̸x̶t̵",
        "ﷺ and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and \U0010ffff",
        "x" * 1600,
        "<script>alert(1)</script> & ]]> \" '",
    ],
)
def test_strange_unicode_is_stored_and_answered(tipline: Harness, body: str) -> None:
    tipline.say("hi")
    answer = replies(tipline.sms(body))
    assert answer
    assert "Where did it happen?" in answer[-1]


def test_invalid_utf8_never_crashes(tipline: Harness) -> None:
    raw = "MessageSid=SM" + "ab" * 16 + "&From=%2B15555550142&Body=%FF%FE%80bad&NumMedia=0"
    response = tipline.client.post(
        PATH, data=raw, content_type="application/x-www-form-urlencoded", headers={"X-Twilio-Signature": "forged"}
    )
    assert response.status_code in (400, 403)
    # Signed over what Twilio would have sent: still answered, as text with replacement characters
    form = inbound_form("\ufffd\ufffd\ufffdbad")
    assert tipline.post_signed(PATH, form).status_code == 200


def test_a_redelivered_message_is_processed_once(tipline: Harness) -> None:
    sid = new_sid()
    first = tipline.sms("Somebody is stealing catalytic converters on Oak Ave", sid=sid)
    again = tipline.sms("Somebody is stealing catalytic converters on Oak Ave", sid=sid)
    assert replies(first)
    assert replies(again) == []
    assert count(tipline, Message) == 2  # the tipster's message and the bot's question, once


def test_concurrent_copies_of_one_delivery_are_processed_once(tipline: Harness) -> None:
    sid = new_sid()
    form = inbound_form("Shots fired near the park", sid=sid)
    statuses = tipline.post_concurrently(PATH, form, sign(PATH, form))
    assert statuses == [200] * 6
    assert count(tipline, ProcessedDelivery) == 1
    with tipline.runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(Message.kind == "tipster")) == 1


def test_concurrent_first_messages_from_one_new_sender_make_one_contact(tipline: Harness) -> None:
    forms = [inbound_form(f"message {i} about the break-in") for i in range(4)]
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def deliver(form: dict[str, str]) -> None:
        client = tipline.app.test_client()
        barrier.wait()
        statuses.append(client.post(PATH, data=form, headers={"X-Twilio-Signature": sign(PATH, form)}).status_code)

    threads = [threading.Thread(target=deliver, args=(f,)) for f in forms]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 4
    from tipline.storage.models import Contact

    assert count(tipline, Contact) == 1
    with tipline.runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(Message.kind == "tipster")) == 4


@pytest.mark.skipif(not PG_URL, reason="SQLite runs one writer at a time: two messages cannot interleave")
def test_messages_of_one_sender_that_waited_on_each_other_each_see_what_the_one_before_left(tipline: Harness) -> None:
    """Two messages of one sender arrive while a writer holds the sender: each must continue the
    conversation the other left, not the one both saw when they started waiting. (PostgreSQL hands
    a query that waited for a row lock the joined rows of its first snapshot.)"""
    tipline.say("Car break-ins on 3rd street")  # a draft: its place is asked next, then its time
    answers = ["Behind the pharmacy on Main", "Yesterday around nine"]
    statuses: list[int] = []

    def deliver(body: str) -> None:
        form = inbound_form(body)
        statuses.append(
            tipline.app.test_client()
            .post(PATH, data=form, headers={"X-Twilio-Signature": sign(PATH, form)})
            .status_code
        )

    engine = tipline.runtime.engine
    threads = [threading.Thread(target=deliver, args=(body,)) for body in answers]
    with engine.connect() as holder:
        holder.execute(text("SELECT id FROM contacts FOR UPDATE"))  # as another message of theirs would
        for thread in threads:
            thread.start()
        wait_for_lock_waiters(engine, 2)  # both messages wait for the sender
        holder.commit()
    for thread in threads:
        thread.join()
    assert statuses == [200, 200]
    with tipline.runtime.factory() as session:
        reference, status = session.execute(select(Tip.reference, Tip.status)).one()
    tip = review.read_tip(tipline.runtime.ctx, reference)
    assert {tip.where, tip.when} == set(answers)  # one answered "where?", the other "when?"
    assert status == TipStatus.NEW  # the second answer submitted the tip


def test_the_sms_channel_is_off_without_credentials(env: dict[str, str], twilio_server, log_file) -> None:  # type: ignore[no-untyped-def]
    env = {k: v for k, v in env.items() if not k.startswith("TWILIO_")}
    harness = make_harness(env, twilio_server, log_file)
    try:
        form = inbound_form("a tip")
        assert harness.post_signed(PATH, form).status_code == 404
        assert harness.client.get("/healthz").get_json()["channels"] == ["sandbox"]
    finally:
        harness.runtime.close()


def test_get_and_other_methods_are_not_accepted(tipline: Harness) -> None:
    assert tipline.client.get(PATH).status_code == 405


def test_status_callbacks_are_authenticated_and_validated(tipline: Harness) -> None:
    unsigned = tipline.client.post(
        "/webhooks/twilio/status", data={"MessageSid": new_sid(), "MessageStatus": "delivered"}
    )
    assert unsigned.status_code == 403
    unknown = tipline.post_signed("/webhooks/twilio/status", {"MessageSid": new_sid(), "MessageStatus": "exploded"})
    assert unknown.status_code == 400
    assert "MessageStatus" in unknown.get_data(as_text=True)


def test_every_twilio_status_is_accepted(tipline: Harness) -> None:
    # Statuses for messages we never sent are acknowledged and ignored
    answered = {status: tipline.status_callback(new_sid(), status.value).status_code for status in DeliveryStatus}
    assert answered == dict.fromkeys(DeliveryStatus, 200)


def test_healthz(tipline: Harness) -> None:
    response = tipline.client.get("/healthz")
    assert response.status_code == 503  # no dispatcher runs beside this app: tests/test_health.py
    assert response.get_json()["database"] == "ok"


def test_a_video_by_mms_is_refused_at_once_never_fetched_and_its_copy_deleted(tipline: Harness) -> None:
    sid = new_sid("MM")
    url = tipline.twilio.add_media(sid, b"\x00\x00\x00\x18ftypmp42", "video/mp4")
    answer = replies(
        tipline.sms("the car in this video", sid=sid, NumMedia="1", MediaContentType0="video/mp4", MediaUrl0=url)
    )
    assert "only accept photos" in answer[0]
    assert "Where did it happen?" in answer[-1]
    tipline.dispatch()
    assert tipline.twilio.media_fetches == []
    assert tipline.twilio.deleted == [sid]
    assert tipline.twilio.media == {}  # deleting the message deletes its media
