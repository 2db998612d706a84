"""Threat: a webhook that answers 400 or 500 to a real message, so the tipster's words are lost.

Twilio retries neither a 4xx nor a 5xx, and Telegram gives up after a few attempts. An MMS with
a photo and a video (or a PDF, or audio) beside it was answered 500 (the photo's pending row and
the refused file's row went into one batch insert with different columns), and an MMS whose
`MediaUrl` was not of the expected form was answered 400: in both cases nothing was stored.
Telegram updates carrying the right secret but odd shapes (a chat id that is not a number, a
file size that is a word, JSON nested 5,000 deep) were answered 500.

What must hold: a signed MMS keeps its words (200); what can be taken is taken (the photo is
fetched and stored by the media worker); what was refused shows in the tip's thread for the
detective. No Telegram update with the right secret gets a 500: it is answered 200 (taken in, or
in part) or 400.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support import fake_telegram, samples
from tests.support.harness import ACCOUNT_SID, Harness, new_sid, reference_of, replies
from tests.support.telegram_updates import USER_ID, message, message_update, next_update_id
from tipline.core.vocabulary import AttachmentStatus, MessageKind
from tipline.services import review

WORDS = "CANARY-LOST the blue sedan in these pictures drops packages at the school gate"


def mms(tipline: Harness, sid: str, media: list[tuple[str, str]]) -> list[str]:
    """A signed MMS with WORDS and the given (MediaUrl, MediaContentType) pairs; returns the replies."""
    form = {"NumMedia": str(len(media))}
    for n, (url, content_type) in enumerate(media):
        form[f"MediaUrl{n}"] = url
        form[f"MediaContentType{n}"] = content_type
    return replies(tipline.sms(WORDS, sid=sid, **form))  # asserts 200


def finish(tipline: Harness) -> str:
    tipline.say("skip")
    return reference_of(tipline.say("skip")[0])


def media_entries(tipline: Harness, reference: str) -> list[tuple[str, str | None]]:
    """(status, reason) of each file the tip's thread shows the detective."""
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert detail.what == WORDS
    return [
        (entry.attachment.status, entry.attachment.reason)
        for entry in detail.thread
        if entry.kind == MessageKind.MEDIA and entry.attachment is not None
    ]


@pytest.mark.parametrize(
    "content_type,data",
    [
        ("video/mp4", b"\x00\x00\x00\x18ftypmp42 not really a video"),
        ("application/pdf", samples.NOT_IMAGES["pdf"]),
        ("audio/amr", b"#!AMR\n not really audio"),
    ],
)
def test_a_photo_beside_a_file_we_refuse_keeps_the_words_and_the_photo(
    tipline: Harness, content_type: str, data: bytes
) -> None:
    sid = new_sid("MM")
    photo = tipline.twilio.add_media(sid, samples.camera_jpeg(1).data)
    other = tipline.twilio.add_media(sid, data, content_type)
    answer = mms(tipline, sid, [(photo, "image/jpeg"), (other, content_type)])
    assert answer[0].startswith("We can only accept photos")  # the tipster learns at once
    tipline.dispatch()
    reference = finish(tipline)
    assert media_entries(tipline, reference) == [
        (AttachmentStatus.STORED, None),
        (AttachmentStatus.REFUSED, "type"),
    ]
    assert len(tipline.twilio.media_fetches) == 1  # the refused file is never downloaded


def odd_urls(tipline: Harness, sid: str) -> dict[str, str]:
    path = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}/Media/ME{'d' * 32}"
    return {
        "wrong host": tipline.twilio.cdn_url + path,
        "wrong account": tipline.twilio.url + path.replace(ACCOUNT_SID, "AC" + "77" * 16),
        "another message": tipline.twilio.url + path.replace(sid, new_sid("MM")),
        "not a url": "not a url at all",
        "a path trick": tipline.twilio.url + path.replace("/Media/", "/Media/../"),
        "missing": "",
    }


@pytest.mark.parametrize(
    "oddity", ["wrong host", "wrong account", "another message", "not a url", "a path trick", "missing"]
)
def test_an_odd_media_url_is_refused_and_the_rest_is_kept(tipline: Harness, oddity: str) -> None:
    sid = new_sid("MM")
    photo = tipline.twilio.add_media(sid, samples.camera_jpeg(1).data)
    answer = mms(tipline, sid, [(photo, "image/jpeg"), (odd_urls(tipline, sid)[oddity], "image/jpeg")])
    assert answer[0].startswith("We could not open the picture you sent")
    tipline.dispatch()
    reference = finish(tipline)
    assert media_entries(tipline, reference) == [
        (AttachmentStatus.STORED, None),
        (AttachmentStatus.REFUSED, "unreadable"),
    ]
    assert tipline.twilio.cdn_requests
    assert all("Authorization" not in h for h in tipline.twilio.cdn_requests)
    assert len(tipline.twilio.media_fetches) == 1  # only the real photo was asked of Twilio


@pytest.mark.parametrize("count", ["lots", "-1", "11"])
def test_an_odd_media_count_keeps_the_words(tipline: Harness, count: str) -> None:
    response = tipline.sms(WORDS, sid=new_sid("MM"), NumMedia=count)
    assert replies(response)[0].startswith("We could not open the picture you sent")
    reference = finish(tipline)
    assert media_entries(tipline, reference) == [(AttachmentStatus.REFUSED, "unreadable")]


# Telegram -----------------------------------------------------------------------------------------


def nested(depth: int) -> bytes:
    """A JSON array `depth` deep, as text (json.dumps would itself run out of recursion)."""
    return b"[" * depth + b'"deep"' + b"]" * depth


def with_message(**fields: Any) -> dict[str, Any]:
    """An update whose message has these fields (None: without the field)."""
    found = {**message("hi"), **fields}
    return {"update_id": next_update_id(), "message": {k: v for k, v in found.items() if v is not None}}


PHOTO = [{"file_id": "AgAC-odd", "file_unique_id": "o", "width": 9, "height": 9}]
HOSTILE: dict[str, Any] = {
    "text is true": with_message(text=True),
    "text is a number": with_message(text=5),
    "text is a list": with_message(text=["hi"]),
    "text is an object": with_message(text={"hi": 1}),
    "text has a lone surrogate": json.loads(
        '{"update_id": 81, "message": {"message_id": 1, "date": 1, '
        '"chat": {"id": 7123456789, "type": "private"}, "text": "a\\ud800b"}}'
    ),
    "caption is true": with_message(text=None, photo=PHOTO, caption=True),
    "chat id is a string": with_message(chat={"id": "abc", "type": "private"}),
    "chat id has a lone surrogate": json.loads(
        '{"update_id": 82, "message": {"message_id": 1, "date": 1, '
        '"chat": {"id": "\\ud800", "type": "private"}, "text": "hi"}}'
    ),
    "chat id is an object": with_message(chat={"id": {"a": 1}, "type": "private"}),
    "chat id is null": with_message(chat={"id": None, "type": "private"}),
    "chat id is a huge float": with_message(chat={"id": 1e308, "type": "private"}),
    "chat type is a list": with_message(chat={"id": USER_ID, "type": ["private"]}),
    "chat is a string": with_message(chat="private"),
    "from is a number": with_message(**{"from": 5}),
    "language is a number": with_message(**{"from": {"id": 1, "is_bot": False, "first_name": "x", "language_code": 5}}),
    "album id is an object": with_message(text=None, photo=PHOTO, media_group_id={"a": 1}),
    "photo file id is a number": with_message(text=None, photo=[{"file_id": 5, "file_unique_id": 5}]),
    "photo size is a string": with_message(text=None, photo=[{**PHOTO[0], "file_size": "big"}]),
    "photo is empty": with_message(text=None, photo=[{}]),
    "photo is a string": with_message(text=None, photo="x"),
    "document type is a number": with_message(
        text=None, document={"file_id": "x", "file_unique_id": "y", "mime_type": 5}
    ),
    "location is text": with_message(text=None, location={"latitude": "north", "longitude": 1}),
    "erase with a text message id": with_message(text="/erase", message_id="one"),
    "message is a list": {"update_id": next_update_id(), "message": []},
    "message is a string": {"update_id": next_update_id(), "message": "hi"},
    "edited text is true": {"update_id": next_update_id(), "edited_message": {**message("hi"), "text": True}},
    "button data is a list": {
        "update_id": next_update_id(),
        "callback_query": {
            "id": "1",
            "from": {"id": 1, "is_bot": False, "first_name": "x"},
            "chat_instance": "1",
            "data": ["skip"],
            "message": {**message("..."), "text": "..."},
        },
    },
    "button message is a string": {
        "update_id": next_update_id(),
        "callback_query": {
            "id": "2",
            "from": {"id": 1, "is_bot": False, "first_name": "x"},
            "chat_instance": "1",
            "data": "skip",
            "message": "x",
        },
    },
    "membership status is a number": {
        "update_id": next_update_id(),
        "my_chat_member": {
            "chat": {"id": USER_ID, "type": "private"},
            "from": {"id": 1, "is_bot": False, "first_name": "x"},
            "date": 1,
            "old_chat_member": {"status": "member", "user": {"id": 2, "is_bot": True, "first_name": "b"}},
            "new_chat_member": {"status": 5},
        },
    },
    "update id is true": {"update_id": True, "message": message("hi")},
    "update id is huge": {"update_id": 10**30, "message": message("hi")},
    "update id is negative": {"update_id": -5, "message": message("hi")},
    "unknown kinds only": {"update_id": next_update_id(), "poll": {"id": 5}},
    "nested 5,000 deep": b'{"update_id": 90, "message": ' + nested(5000) + b"}",
    "nested 900 deep inside a message": b'{"update_id": 91, "message": '
    + json.dumps(message("hi")).encode()[:-1]
    + b', "reply_to_message": '
    + nested(900)
    + b"}}",
    "an array 5,000 deep": nested(5000),
}


def raw_json(value: Any) -> bytes:
    return value if isinstance(value, bytes) else json.dumps(value).encode()


@pytest.mark.parametrize("shape", list(HOSTILE))
def test_hostile_telegram_shapes_never_get_a_500(tg: tuple[Harness, fake_telegram.FakeTelegram], shape: str) -> None:
    harness, _ = tg
    response = harness.client.post(
        "/webhooks/telegram",
        data=raw_json(HOSTILE[shape]),
        content_type="application/json",
        headers={"X-Telegram-Bot-Api-Secret-Token": fake_telegram.SECRET},
    )
    assert response.status_code == 200 or 400 <= response.status_code < 500, response.get_data(as_text=True)
    harness.dispatch()  # whatever was taken in can be answered
    # And the line still takes tips afterwards.
    assert harness.post_update(message_update("still here")).status_code == 200
