"""The bot's own replies, sent as TwiML in the webhook's answer, are deleted at Twilio too.

Before, only the replies sent through the REST API (detectives') reported their status and were
deleted; every TwiML `<Message>` (the greeting, "Where did it happen?", the receipt with the tip's
reference) stayed in Twilio's Messages log with the tipster's number. Now each `<Message>` carries an
`action`: Twilio posts that reply's status there, and once it is final its copy is deleted.

Here the test plays Twilio: it reads the TwiML the webhook answered, makes up the MessageSid Twilio
would give the reply, and posts the signed status callback to the very URL the TwiML named.
"""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import select
from werkzeug.test import TestResponse

from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import (
    ACCOUNT_SID,
    LINE_NUMBER,
    PUBLIC_URL,
    TIPSTER,
    Harness,
    make_harness,
    new_sid,
    replies,
    sign,
    status_form,
)
from tipline.core.vocabulary import KeyPurpose, OutboxKind, OutboxStatus
from tipline.services import review, rotation
from tipline.services.maintenance import purge
from tipline.storage.models import Contact, OutboxItem, utcnow

ACTION_URL = PUBLIC_URL + "/webhooks/twilio/reply-status"
MESSAGE = re.compile(r"<Message( [^>]*)?>")
ACTION = re.compile(r'action="([^"]*)"')
TIP_TEXT = "CANARY-TWIML a silver sedan drops parcels at the laundromat on Birch Road"


def actions(response: TestResponse) -> list[str]:
    """The action URL of each <Message> of a TwiML answer ("" for one without)."""
    found = []
    for attributes in MESSAGE.findall(response.get_data(as_text=True)):
        match = ACTION.search(attributes or "")
        found.append(html.unescape(match.group(1)) if match else "")
    return found


def report(
    tipline: Harness, url: str, sid: str, status: str, error_code: str | None = None, to: str = TIPSTER
) -> TestResponse:
    """What Twilio posts to a <Message action> URL: the reply's status, signed for that URL."""
    form = status_form(sid, status, error_code, to)
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}" == tipline.public_url  # Twilio calls the public address
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    signature = sign(path, form, base=tipline.public_url)
    return tipline.client.post(path, data=form, headers={"X-Twilio-Signature": signature})


def reply_deletions(tipline: Harness) -> list[OutboxItem]:
    """Every queued deletion, of any provider copy."""
    with tipline.runtime.factory() as session:
        return list(session.scalars(select(OutboxItem).where(OutboxItem.kind == OutboxKind.DELETE)).all())


def later(tipline: Harness, seconds: float) -> None:
    """Move the dispatcher's clock forward."""
    base = tipline.runtime.dispatcher.clock
    tipline.runtime.dispatcher.clock = lambda: base() + dt.timedelta(seconds=seconds)


@pytest.fixture
def delayed(env: dict[str, str], twilio_server: FakeTwilio, log_file: Path) -> Iterator[Harness]:
    """The tip line with the production delay before deleting a provider's copy (60 s)."""
    harness = make_harness({**env, "TIPLINE_PROVIDER_DELETE_DELAY_SECONDS": "60"}, twilio_server, log_file)
    yield harness
    harness.runtime.close()


def test_every_twiml_reply_asks_for_its_status_at_the_public_url(tipline: Harness) -> None:
    tipline.say(TIP_TEXT)
    response = tipline.sms("ES")  # "OK, in Spanish" and the question again: two <Message>s

    assert len(replies(response)) == 2
    assert actions(response) == [ACTION_URL, ACTION_URL]
    assert response.get_data(as_text=True).count('method="POST"') == 2
    # The URL names nothing: the same for every reply and every tipster
    assert actions(tipline.sms("hello", sender="+15555550177")) == [ACTION_URL]


def test_a_twiml_reply_is_deleted_once_twilio_reports_it_delivered(delayed: Harness) -> None:
    tipline = delayed
    inbound_sid = new_sid()
    answer = tipline.sms(TIP_TEXT, sid=inbound_sid)
    [url] = actions(answer)
    # Twilio sends the reply and keeps it in its Messages log, with the tipster's number
    reply_sid = tipline.twilio.record_reply(TIPSTER, LINE_NUMBER, replies(answer)[0])
    assert reply_sid in [m["sid"] for m in tipline.twilio.logged("outbound-reply")]

    # Twilio reports the reply's progress to the action URL; only the final word counts
    for status in ("queued", "sent"):
        assert report(tipline, url, reply_sid, status).status_code == 200
    assert len(reply_deletions(tipline)) == 1  # the inbound message's
    response = report(tipline, url, reply_sid, "delivered")
    assert response.status_code == 200
    assert "<Message" not in response.get_data(as_text=True)
    assert len(reply_deletions(tipline)) == 2

    # Nothing goes before the delay Twilio needs (a message is deletable once it is complete)...
    tipline.dispatch()
    assert tipline.twilio.deleted == []
    # ...then the dispatcher deletes both the tipster's message and the bot's reply
    later(tipline, 61)
    tipline.dispatch()
    assert sorted(tipline.twilio.deleted) == sorted([inbound_sid, reply_sid])
    assert all(row.status == OutboxStatus.DONE and row.payload_ct == b"" for row in reply_deletions(tipline))
    assert tipline.twilio.logged("outbound-reply") == []  # gone from Twilio's log

    # And nothing identifying is anywhere the program wrote
    needles = [*phone_formats(TIPSTER), inbound_sid, reply_sid, "CANARY-TWIML", "laundromat"]
    assert scan_files(tipline.data_dir, needles, [tipline.log_file]) == []
    assert scan_database(tipline.runtime.engine, needles) == []


@pytest.mark.parametrize("status, error_code", [("undelivered", "30003"), ("failed", "30008")])
def test_a_reply_that_never_arrived_is_deleted_too(tipline: Harness, status: str, error_code: str) -> None:
    [url] = actions(tipline.sms(TIP_TEXT))
    reply_sid = new_sid()

    assert report(tipline, url, reply_sid, status, error_code).status_code == 200
    tipline.dispatch()

    assert reply_sid in tipline.twilio.deleted
    # A handset that was off is no reason to erase anyone
    with tipline.runtime.factory() as session:
        contact = session.scalars(select(Contact)).one()
    assert contact.address_ct is not None and not contact.opted_out


def test_a_repeated_callback_is_processed_once(tipline: Harness) -> None:
    inbound_sid, reply_sid = new_sid(), new_sid()
    [url] = actions(tipline.sms(TIP_TEXT, sid=inbound_sid))

    for _ in range(3):
        assert report(tipline, url, reply_sid, "delivered").status_code == 200
    assert report(tipline, url, reply_sid, "undelivered", "30003").status_code == 200  # a late contradiction

    assert len(reply_deletions(tipline)) == 2  # the inbound message's and the reply's, once each
    tipline.dispatch()
    assert sorted(tipline.twilio.deleted) == sorted([inbound_sid, reply_sid])


def test_concurrent_copies_of_one_report_queue_one_deletion(tipline: Harness) -> None:
    [url] = actions(tipline.sms(TIP_TEXT))
    reply_sid = new_sid()
    form = {"MessageSid": reply_sid, "MessageStatus": "delivered", "To": TIPSTER, "AccountSid": ACCOUNT_SID}
    path = urlsplit(url).path
    statuses = tipline.post_concurrently(path, form, sign(path, form))

    assert statuses == [200] * 6
    assert len(reply_deletions(tipline)) == 2  # the inbound message's and the reply's
    tipline.dispatch()
    assert tipline.twilio.deleted.count(reply_sid) == 1


def test_a_pepper_rotation_changes_neither_who_nor_how_often(tipline: Harness) -> None:
    [url] = actions(tipline.sms(TIP_TEXT))
    first, second = new_sid(), new_sid()
    assert report(tipline, url, first, "delivered").status_code == 200

    ctx = tipline.runtime.ctx
    rotation.run(ctx, rotation.start(ctx, tipline.master_key(), KeyPurpose.PSEUDONYM, False, None))

    assert report(tipline, url, first, "delivered").status_code == 200  # remembered under the old pepper
    assert report(tipline, url, second, "delivered").status_code == 200  # found under the new one
    assert len(reply_deletions(tipline)) == 3  # the inbound message's and the two replies', once each
    with tipline.runtime.factory() as session:
        [contact] = session.scalars(select(Contact)).all()  # no stand-in: the sender was found
    assert contact.pseudonym is not None
    tipline.dispatch()
    assert {first, second} <= set(tipline.twilio.deleted)


def test_the_reply_confirming_forget_is_deleted_although_its_sender_is_gone(tipline: Harness) -> None:
    reference = tipline.submit_tip(TIP_TEXT)
    answer = tipline.sms("FORGET")
    assert reference in replies(answer)[0]
    [url] = actions(answer)
    reply_sid = new_sid()

    assert report(tipline, url, reply_sid, "delivered").status_code == 200
    tipline.dispatch()

    assert reply_sid in tipline.twilio.deleted
    # It was queued under a blank stand-in: no pseudonym, no address, no tip
    with tipline.runtime.factory() as session:
        contacts = session.scalars(select(Contact)).all()
    assert all(c.pseudonym is None and c.address_ct is None for c in contacts)
    assert review.read_tip(tipline.runtime.ctx, reference).replies_blocked is not None
    # Maintenance removes the stand-ins once their finished deletions are purged
    assert all(row.status == OutboxStatus.DONE for row in reply_deletions(tipline))
    purge(tipline.runtime.intake, retention_days=90, now=utcnow() + dt.timedelta(days=8))
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Contact)).all() == []


def test_a_reply_twilio_refuses_for_an_opted_out_number_erases_the_address(tipline: Harness) -> None:
    reference = tipline.submit_tip(TIP_TEXT)
    [url] = actions(tipline.sms("one more thing"))
    reply_sid = new_sid()

    assert report(tipline, url, reply_sid, "failed", "21610").status_code == 200  # opted out at the carrier

    with tipline.runtime.factory() as session:
        contact = session.scalars(select(Contact)).one()
    assert contact.opted_out and contact.address_ct is None
    with pytest.raises(review.RepliesImpossible):
        review.reply(tipline.runtime.ctx, reference, "Are you there?")
    tipline.dispatch()
    assert reply_sid in tipline.twilio.deleted  # still deleted: the key that seals it was renewed, not lost


def test_reply_reports_must_be_signed_by_twilio_for_the_public_url(tipline: Harness) -> None:
    [url] = actions(tipline.sms(TIP_TEXT))
    form = {"MessageSid": new_sid(), "MessageStatus": "delivered", "To": TIPSTER, "AccountSid": ACCOUNT_SID}
    path = urlsplit(url).path

    unsigned = tipline.client.post(path, data=form)
    forged = tipline.client.post(path, data=form, headers={"X-Twilio-Signature": sign(path, form, token="x" * 32)})
    internal = tipline.client.post(
        path, data=form, headers={"X-Twilio-Signature": sign(path, form, base="http://localhost")}
    )

    assert [r.status_code for r in (unsigned, forged, internal)] == [403, 403, 403]
    assert len(reply_deletions(tipline)) == 1  # the inbound message's only


@pytest.mark.parametrize(
    "change, field",
    [
        ({"To": ""}, "To"),
        ({"To": "someone"}, "To"),
        ({"MessageSid": "XX123"}, "MessageSid"),
        ({"MessageStatus": "teleported"}, "MessageStatus"),
    ],
)
def test_a_malformed_reply_report_is_refused_naming_the_field(
    tipline: Harness, change: dict[str, str], field: str
) -> None:
    form = {"MessageSid": new_sid(), "MessageStatus": "delivered", "To": TIPSTER, **change}
    response = tipline.post_signed("/webhooks/twilio/reply-status", form)

    assert response.status_code == 400
    assert field in response.get_data(as_text=True)
    assert TIPSTER not in response.get_data(as_text=True)


def test_legacy_sms_field_names_are_understood(tipline: Harness) -> None:
    [url] = actions(tipline.sms(TIP_TEXT))
    reply_sid = new_sid()
    form = {"SmsSid": reply_sid, "SmsStatus": "delivered", "To": TIPSTER, "AccountSid": ACCOUNT_SID}

    assert tipline.post_signed(urlsplit(url).path, form).status_code == 200
    tipline.dispatch()
    assert reply_sid in tipline.twilio.deleted


def test_without_provider_deletion_nothing_is_queued(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    harness = make_harness({**env, "TIPLINE_PROVIDER_DELETE": "0"}, twilio_server, log_file)
    try:
        [url] = actions(harness.sms(TIP_TEXT))
        assert report(harness, url, new_sid(), "delivered").status_code == 200
        harness.dispatch()
        assert reply_deletions(harness) == []
        assert twilio_server.deleted == []
    finally:
        harness.runtime.close()
