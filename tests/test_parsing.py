"""What the adapters make of the providers' traffic, case by case: Twilio's webhooks and errors,
Telegram's updates and errors. Every identifier here is made up (555-01XX numbers, canary names)."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut
from twilio.base.exceptions import TwilioRestException

from adapters import sms, telegram
from tests.support.harness import ACCOUNT_SID, CARRIER_CITY, CARRIER_ZIP, LINE_NUMBER, TIPSTER, inbound_form
from tests.support.telegram_updates import (
    USER_ID,
    callback_update,
    chat,
    edited_update,
    member_update,
    message,
    message_update,
    user,
)
from tipline.config import TelegramSettings
from tipline.core import images
from tipline.core.channels import ChannelError, ChatUpdate, InboundMessage, MalformedWebhook, MediaRef
from tipline.core.conversation import Intent
from tipline.core.vocabulary import DeliveryStatus, ErasedReason

# --- Twilio: inbound SMS and MMS --------------------------------------------------------------

SMS = "SM" + "1a" * 16
MMS = "MM" + "2b" * 16
MEDIA = ["ME" + str(n) * 32 for n in range(3)]  # media sids: ME and 32 hex digits


def media_url(n: int, message_sid: str = MMS) -> str:
    return f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{message_sid}/Media/{MEDIA[n]}"


def photo(n: int, declared: str = "image/jpeg") -> MediaRef:
    return MediaRef(media_url(n), declared, provider_copy=f"{MMS}/{MEDIA[n]}")


def sms_in(text: str, sid: str = SMS, **fields: Any) -> InboundMessage:
    """What an inbound SMS from the tipster should become; `fields` overrides the rest."""
    return InboundMessage(channel="sms", address=TIPSTER, delivery_id=sid, text=text, provider_message_id=sid, **fields)


@pytest.mark.parametrize(
    "body,sid,form,expected",
    [
        pytest.param(
            "A grey pickup behind the school", SMS, {}, sms_in("A grey pickup behind the school"), id="plain sms"
        ),
        pytest.param("", SMS, {"NumMedia": ""}, sms_in(""), id="empty body, empty NumMedia"),
        pytest.param(
            "the van",
            MMS,
            {"NumMedia": "1", "MediaUrl0": media_url(0), "MediaContentType0": "image/jpeg"},
            sms_in("the van", MMS, media=(photo(0),)),
            id="mms with a photo",
        ),
        pytest.param(
            "",
            MMS,
            {"NumMedia": "1", "MediaUrl0": media_url(0), "MediaContentType0": "image/PNG; name=x"},
            sms_in("", MMS, media=(photo(0, "image/png"),)),
            id="declared type normalised",
        ),
        pytest.param(
            "look",
            MMS,
            {
                "NumMedia": "3",
                "MediaUrl0": media_url(0),
                "MediaContentType0": "video/3gpp",
                "MediaUrl1": media_url(1),
                "MediaContentType1": "image/heic",
                "MediaUrl2": media_url(2),
                "MediaContentType2": "text/vcard",
            },
            sms_in("look", MMS, media=(photo(1, "image/heic"),), refused_media=(images.TYPE, images.TYPE)),
            id="mms with a video, a photo and a contact card",
        ),
        pytest.param(
            "",
            MMS,
            {"NumMedia": "1", "MediaUrl0": media_url(0)},
            sms_in("", MMS, refused_media=(images.TYPE,)),
            id="media without a declared type is refused",
        ),
        pytest.param(
            "STOP", SMS, {"OptOutType": "STOP"}, sms_in("STOP", provider_intent=Intent.STOP), id="opt-out STOP"
        ),
        pytest.param(
            "unstop", SMS, {"OptOutType": "start"}, sms_in("unstop", provider_intent=Intent.START), id="opt-out START"
        ),
        pytest.param(
            "info", SMS, {"OptOutType": "HELP"}, sms_in("info", provider_intent=Intent.HELP), id="opt-out HELP"
        ),
        pytest.param("hi", SMS, {"OptOutType": "SOMETHING"}, sms_in("hi"), id="unknown OptOutType ignored"),
        pytest.param("nul\x00byte\r\nbell\x07", SMS, {}, sms_in("nulbyte\nbell"), id="control characters dropped"),
        pytest.param("e\u0301 👨\u200d👩\u200d👧", SMS, {}, sms_in("é 👨\u200d👩\u200d👧"), id="NFC, joiners kept"),
        pytest.param("hi", SMS, {"From": "55501"}, dataclasses.replace(sms_in("hi"), address="55501"), id="short code"),
    ],
)
def test_twilio_inbound(body: str, sid: str, form: dict[str, str], expected: InboundMessage) -> None:
    assert sms.parse_inbound(inbound_form(body, sid=sid, **form)) == expected


def test_twilio_inbound_drops_the_carriers_guess_of_where_the_sender_is() -> None:
    parsed = sms.parse_inbound(inbound_form("a tip", sid=SMS))
    kept = repr(dataclasses.astuple(parsed))
    for dropped in (CARRIER_CITY, CARRIER_ZIP, LINE_NUMBER, ACCOUNT_SID, "NH", "US"):
        assert dropped not in kept


@pytest.mark.parametrize(
    "form,field",
    [
        ({"MessageSid": None}, "MessageSid"),
        ({"MessageSid": "SM123"}, "MessageSid"),
        ({"MessageSid": "XX" + "ab" * 16}, "MessageSid"),
        ({"MessageSid": "SM" + "zz" * 16}, "MessageSid"),
        ({"From": None}, "From"),
        ({"From": "not-a-number"}, "From"),
        ({"From": "+1 555 555 0142"}, "From"),
        ({"MessageSid": MMS + "\n"}, "MessageSid"),
        ({"From": TIPSTER + "\n"}, "From"),
    ],
)
def test_twilio_inbound_malformed(form: dict[str, str | None], field: str) -> None:
    sent = inbound_form("a tip", sid=MMS)
    for name, value in form.items():
        if value is None:
            sent.pop(name)
        else:
            sent[name] = value
    with pytest.raises(MalformedWebhook) as error:
        sms.parse_inbound(sent)
    assert field in str(error.value)
    for value in form.values():
        if value:
            assert value not in str(error.value)  # the error names the field, never echoes it


PREFIX = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/"


@pytest.mark.parametrize(
    "form,refused",
    [
        ({"NumMedia": "lots"}, images.UNREADABLE),
        ({"NumMedia": "-1"}, images.UNREADABLE),
        ({"NumMedia": "11"}, images.UNREADABLE),
        ({"NumMedia": "²"}, images.UNREADABLE),
        ({"NumMedia": "1", "MediaContentType0": "image/jpeg"}, images.UNREADABLE),
        ({"MediaUrl0": media_url(0, message_sid="MM" + "0" * 32)}, images.UNREADABLE),  # another message's
        ({"MediaUrl0": "https://api.twilio.com/steal?x=/Media/ME" + "1" * 32}, images.UNREADABLE),
        ({"MediaUrl0": media_url(0).replace("/Media/", "/Media/../")}, images.UNREADABLE),
        ({"MediaUrl0": media_url(0) + "\n"}, images.UNREADABLE),
        ({"MediaUrl0": media_url(0).replace("api.twilio.com", "api.example.org")}, images.UNREADABLE),  # not PREFIX
        ({"MediaUrl0": media_url(0).replace(ACCOUNT_SID, "AC" + "77" * 16)}, images.UNREADABLE),  # another account
        ({"MediaUrl0": "not a url", "MediaContentType0": "video/mp4"}, images.TYPE),
    ],
)
def test_twilio_inbound_media_we_cannot_take_are_refused_and_the_words_kept(form: dict[str, str], refused: str) -> None:
    # A signed message is never malformed for its media: Twilio retries no 4xx, so that would lose the words.
    sent = {**inbound_form("a tip", sid=MMS), "NumMedia": "1", "MediaContentType0": "image/jpeg", **form}
    assert sms.parse_inbound(sent, PREFIX) == sms_in("a tip", MMS, refused_media=(refused,))


# --- Twilio: delivery status callbacks --------------------------------------------------------


def status_form(status: str, error_code: str | None = None, sid: str = SMS) -> dict[str, str]:
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": ACCOUNT_SID,
        "To": TIPSTER,
        "From": LINE_NUMBER,
        "ApiVersion": "2010-04-01",
    }
    if error_code is not None:
        form["ErrorCode"] = error_code
    return form


@pytest.mark.parametrize("status", list(DeliveryStatus))
def test_twilio_status_every_status_is_read(status: DeliveryStatus) -> None:
    report = sms.parse_status(status_form(status.value))
    assert (report.provider_message_id, report.status, report.error_code, report.recipient_gone) == (
        SMS,
        status,
        None,
        None,
    )


@pytest.mark.parametrize(
    "status,error_code,expected",
    [
        ("DELIVERED", None, (DeliveryStatus.DELIVERED, None, None)),
        ("delivered", "", (DeliveryStatus.DELIVERED, None, None)),
        ("undelivered", "30003", (DeliveryStatus.UNDELIVERED, "30003", None)),  # unreachable for now: not gone
        ("undelivered", "21610", (DeliveryStatus.UNDELIVERED, "21610", ErasedReason.STOP)),  # opted out at the carrier
        ("failed", "21614", (DeliveryStatus.FAILED, "21614", ErasedReason.UNREACHABLE)),  # not a mobile number
        ("failed", "21211", (DeliveryStatus.FAILED, "21211", ErasedReason.UNREACHABLE)),  # not a valid number
    ],
)
def test_twilio_status_error_codes(status: str, error_code: str | None, expected: tuple[object, ...]) -> None:
    report = sms.parse_status(status_form(status, error_code))
    assert (report.status, report.error_code, report.recipient_gone) == expected


@pytest.mark.parametrize(
    "form,field",
    [
        (status_form("exploded"), "MessageStatus"),
        (status_form(""), "MessageStatus"),
        ({"MessageSid": SMS}, "MessageStatus"),
        (status_form("delivered", sid="SM1"), "MessageSid"),
        ({"MessageStatus": "delivered"}, "MessageSid"),
        (status_form("failed", "30x03"), "ErrorCode"),
    ],
)
def test_twilio_status_malformed(form: dict[str, str], field: str) -> None:
    with pytest.raises(MalformedWebhook, match=field):
        sms.parse_status(form)


@pytest.mark.parametrize(
    "replies,expected",
    [
        ((), "<Response></Response>"),
        (
            ("Thank you.", "When? <3 & more"),
            "<Response><Message>Thank you.</Message><Message>When? &lt;3 &amp; more</Message></Response>",
        ),
    ],
)
def test_twiml_answer(replies: tuple[str, ...], expected: str) -> None:
    assert sms.twiml(replies) == '<?xml version="1.0" encoding="UTF-8"?>' + expected


# --- Twilio: errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status,code,deleting,expected",
    [
        # (HTTP status, Twilio code, on delete) -> (code, permanent, recipient_gone, missing)
        (400, 21610, False, ("21610", True, ErasedReason.STOP, False)),
        (400, 21614, False, ("21614", True, ErasedReason.UNREACHABLE, False)),
        (400, 21211, False, ("21211", True, ErasedReason.UNREACHABLE, False)),
        (401, 20003, False, ("20003", True, None, False)),
        (404, 20404, True, ("20404", True, None, True)),  # the copy to delete is already gone
        (404, None, True, ("404", True, None, True)),
        (404, 20404, False, ("20404", True, None, False)),
        (429, 20429, False, ("20429", False, None, False)),
        (400, 30001, False, ("30001", False, None, False)),  # queue overflow: retried
        (503, None, True, ("503", False, None, False)),
    ],
)
def test_twilio_errors(status: int, code: int | None, deleting: bool, expected: tuple[object, ...]) -> None:
    error = sms._channel_error(TwilioRestException(status, "https://api.twilio.com/secret-uri", "msg", code), deleting)
    assert (error.code, error.permanent, error.recipient_gone, error.missing) == expected


# --- Telegram: updates ------------------------------------------------------------------------

ADDRESS = str(USER_ID)
GROUP = {"id": -100555, "type": "supergroup", "title": "Some group"}


def tg_in(text: str, *, language: str | None = "en", **fields: Any) -> InboundMessage:
    """What a message from the tipster's private chat should become (update_id 42)."""
    return InboundMessage(
        channel="telegram", address=ADDRESS, delivery_id="update:42", text=text, language_hint=language, **fields
    )


def in_group(update: dict[str, Any]) -> dict[str, Any]:
    for kind in ("message", "edited_message", "my_chat_member"):
        if kind in update:
            update[kind]["chat"] = dict(GROUP)
    if "callback_query" in update:
        update["callback_query"]["message"]["chat"] = dict(GROUP)
    return update


def sent_by(sender: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    update["message"]["from"] = sender
    return update


def without(update: dict[str, Any], kind: str, field: str) -> dict[str, Any]:
    del update[kind][field]
    return update


PHOTO_SIZES = [
    {"file_id": "AgAD-small", "file_unique_id": "s1", "width": 90, "height": 60, "file_size": 1500},
    {"file_id": "AgAD-large", "file_unique_id": "s2", "width": 1280, "height": 960, "file_size": 90000},
]
PNG_FILE = {
    "file_id": "BQAD-png",
    "file_unique_id": "d1",
    "file_name": "IMG_20240501_Canarina.png",
    "mime_type": "image/PNG",
    "file_size": 1234,
}
PDF_FILE = {"file_id": "BQAD-pdf", "file_unique_id": "d2", "file_name": "ledger.pdf", "mime_type": "application/pdf"}
VIDEO = {"file_id": "BAAD", "file_unique_id": "v1", "width": 90, "height": 90, "duration": 3}
STICKER = {
    "file_id": "CAAD",
    "file_unique_id": "k1",
    "type": "regular",
    "width": 512,
    "height": 512,
    "is_animated": False,
    "is_video": False,
}
CARD = {"phone_number": "+15555550188", "first_name": "Cardholder", "user_id": 7111111111}
PLACE = {"latitude": 40.446944, "longitude": -79.982222}
VENUE = {"location": PLACE, "title": "Market", "address": "1 Market Sq"}
FORWARDED_FROM = {
    "type": "user",
    "date": 1,
    "sender_user": {"id": 7987654321, "is_bot": False, "first_name": "Witnessa"},
}


@pytest.mark.parametrize(
    "update,expected",
    [
        pytest.param(
            message_update("Someone sells stolen bikes"), ChatUpdate(tg_in("Someone sells stolen bikes")), id="text"
        ),
        pytest.param(message_update("/start"), ChatUpdate(tg_in("/start")), id="/start"),
        pytest.param(
            message_update("/erase", message_id=555),
            ChatUpdate(tg_in("", language=None, erase_request=telegram.erase_payload(ADDRESS, 555))),
            id="/erase",
        ),
        pytest.param(
            message_update("/erase@example_tipline_bot", message_id=556),
            ChatUpdate(tg_in("", language=None, erase_request=telegram.erase_payload(ADDRESS, 556))),
            id="/erase@bot",
        ),
        pytest.param(
            message_update(photo=PHOTO_SIZES, caption="the van", media_group_id="album-1"),
            ChatUpdate(tg_in("the van", media=(MediaRef("AgAD-large", "image/jpeg", 90000),), album="album-1")),
            id="photo: the largest size",
        ),
        pytest.param(
            message_update(document=PNG_FILE),
            ChatUpdate(tg_in("", media=(MediaRef("BQAD-png", "image/png", 1234),))),
            id="image sent as a file",
        ),
        pytest.param(
            message_update(document=PDF_FILE, caption="the ledger"),
            ChatUpdate(tg_in("the ledger", refused_media=(images.TYPE,))),
            id="document that is not an image",
        ),
        pytest.param(
            message_update(location=PLACE), ChatUpdate(tg_in("Shared location: 40.44694, -79.98222")), id="location"
        ),
        pytest.param(
            message_update(location=PLACE, venue=VENUE), ChatUpdate(tg_in("", refused_media=(images.TYPE,))), id="venue"
        ),
        pytest.param(
            message_update(contact=CARD), ChatUpdate(tg_in("", refused_media=(images.TYPE,))), id="contact card"
        ),
        pytest.param(message_update(video=VIDEO), ChatUpdate(tg_in("", refused_media=(images.TYPE,))), id="video"),
        pytest.param(
            message_update(sticker=STICKER), ChatUpdate(tg_in("", refused_media=(images.TYPE,))), id="sticker"
        ),
        pytest.param(
            message_update("they meet every Friday", forward_origin=FORWARDED_FROM),
            ChatUpdate(tg_in("they meet every Friday")),
            id="forward: the origin is dropped",
        ),
        pytest.param(
            sent_by(user(language="es-MX"), message_update("hola")),
            ChatUpdate(tg_in("hola", language="es")),
            id="language hint",
        ),
        pytest.param(
            sent_by(user(language=None), message_update("hi")),
            ChatUpdate(tg_in("hi", language=None)),
            id="no language",
        ),
        pytest.param(
            callback_update("skip", query_id="cb-1"),
            ChatUpdate(tg_in("skip", language=None), button_press="cb-1"),
            id="button",
        ),
        pytest.param(
            callback_update("drop table", query_id="cb-2"),
            ChatUpdate(button_press="cb-2"),
            id="button with unknown data: acknowledged only",
        ),
        pytest.param(
            in_group(callback_update("skip", query_id="cb-3")),
            ChatUpdate(button_press="cb-3"),
            id="button in a group: acknowledged only",
        ),
        pytest.param(member_update("kicked"), ChatUpdate(blocked_address=ADDRESS), id="bot blocked"),
        pytest.param(member_update("left"), ChatUpdate(blocked_address=ADDRESS), id="bot left"),
        pytest.param(member_update("member"), ChatUpdate(), id="bot unblocked"),
        pytest.param(in_group(member_update("kicked")), ChatUpdate(), id="bot removed from a group"),
        pytest.param(edited_update("the van is grey"), ChatUpdate(tg_in("(edited) the van is grey")), id="edited text"),
        pytest.param(
            edited_update(photo=PHOTO_SIZES, caption="the van", media_group_id="album-1"),
            ChatUpdate(tg_in("(edited) the van")),
            id="edited caption: the photo was taken already",
        ),
        pytest.param(edited_update(photo=PHOTO_SIZES), ChatUpdate(tg_in("")), id="edited photo without caption"),
        pytest.param(in_group(message_update("hello group")), ChatUpdate(), id="group message"),
        pytest.param(without(message_update("no chat"), "message", "chat"), ChatUpdate(), id="message without a chat"),
        pytest.param(
            {
                "update_id": 42,
                "channel_post": {"message_id": 1, "date": 0, "chat": {"id": -100, "type": "channel"}, "text": "news"},
            },
            ChatUpdate(),
            id="channel post",
        ),
        pytest.param(
            {
                "update_id": 42,
                "message_reaction": {
                    "chat": chat(),
                    "message_id": 1,
                    "date": 0,
                    "old_reaction": [],
                    "new_reaction": [],
                },
            },
            ChatUpdate(),
            id="reaction",
        ),
        pytest.param({"update_id": 42, "some_future_kind": {"x": 1}}, ChatUpdate(), id="unknown update kind"),
    ],
)
def test_telegram_update(update: dict[str, Any], expected: ChatUpdate) -> None:
    assert telegram.parse_update({**update, "update_id": 42}) == (42, expected)


def test_telegram_update_keeps_nothing_identifying() -> None:
    forwarded = message_update(
        "they meet",
        forward_origin=FORWARDED_FROM,
        document=PNG_FILE,
        via_bot={"id": 7555555555, "is_bot": True, "first_name": "Helper", "username": "helper_bot"},
    )
    _, parsed = telegram.parse_update(forwarded)
    kept = repr(dataclasses.astuple(parsed))
    for dropped in ("Canarina", "Tipsterova", "canary_tipster", "Witnessa", "7987654321", "helper_bot", "IMG_20240501"):
        assert dropped not in kept


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        "update",
        {"update_id": "1"},
        {"message": {}},
        {"update_id": 5, "message": {"chat": 3}},
        {"update_id": 5, "message": message(photo="not a list")},
        {"update_id": 5, "message": message(text="x") | {"text": 5}},
        without(member_update("kicked"), "my_chat_member", "new_chat_member"),
    ],
)
def test_telegram_update_malformed(data: Any) -> None:
    with pytest.raises(MalformedWebhook):
        telegram.parse_update(data)


# --- Telegram: errors, the webhook's secret and answer ----------------------------------------


@pytest.mark.parametrize(
    "error,expected",
    [
        # -> (code, permanent, recipient_gone, missing, retry_after)
        (Forbidden("Forbidden: bot was blocked by the user"), ("403", True, ErasedReason.BLOCKED, False, None)),
        (BadRequest("Message to delete not found"), ("400", True, None, True, None)),
        (BadRequest("Message can't be deleted for everyone"), ("400", True, None, False, None)),
        (RetryAfter(dt.timedelta(seconds=7)), ("429", False, None, False, 7.0)),
        (TimedOut(), ("network", False, None, False, None)),
        (NetworkError("connection reset"), ("network", False, None, False, None)),
        (TelegramError("something new"), ("TelegramError", False, None, False, None)),
    ],
)
def test_telegram_errors(error: TelegramError, expected: tuple[object, ...]) -> None:
    found: ChannelError = telegram._channel_error(error)
    assert (found.code, found.permanent, found.recipient_gone, found.missing, found.retry_after) == expected


@pytest.fixture
def bot() -> Iterator[telegram.TelegramChannel]:
    """A channel that is never asked to reach Telegram."""
    channel = telegram.TelegramChannel(TelegramSettings("7000000001:made-up", "the-secret_0123", "http://127.0.0.1:9"))
    yield channel
    channel.close()


@pytest.mark.parametrize(
    "header,accepted",
    [
        ("the-secret_0123", True),
        (None, False),
        ("", False),
        ("the-secret_01234", False),
        ("THE-SECRET_0123", False),
    ],
)
def test_telegram_webhook_secret(bot: telegram.TelegramChannel, header: str | None, accepted: bool) -> None:
    assert bot.authenticate(header) is accepted


def test_telegram_webhook_refuses_everything_without_a_configured_secret(bot: telegram.TelegramChannel) -> None:
    bot.settings = dataclasses.replace(bot.settings, webhook_secret=None)
    assert bot.authenticate("") is False
    assert bot.authenticate(None) is False


@pytest.mark.parametrize(
    "update,expected",
    [
        (ChatUpdate(button_press="cb-1"), {"method": "answerCallbackQuery", "callback_query_id": "cb-1"}),
        (ChatUpdate(tg_in("hi")), {}),
    ],
)
def test_telegram_webhook_response(bot: telegram.TelegramChannel, update: ChatUpdate, expected: dict[str, str]) -> None:
    assert bot.webhook_response(update) == expected
