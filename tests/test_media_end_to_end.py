"""Photos end to end: through the real webhooks, the real `twilio`/`requests` and python-telegram-bot
clients against the stand-in providers, the media worker, and the console.

Every test ends with the tipster told something true, and nothing of the original file (its
EXIF, XMP, IPTC, file name) or of the sender anywhere the tip line wrote.
"""

from __future__ import annotations

import datetime as dt
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import select

from tests.support import fake_telegram, samples
from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.console import person
from tests.support.fake_telegram import TOKEN
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import (
    TIPSTER,
    Harness,
    make_harness,
    new_sid,
    photos,
    reference_of,
    replies,
    telegram_harness,
)
from tests.support.telegram_updates import USER_ID, USERNAME, message_update
from tipline.core.vocabulary import AttachmentStatus, KeyPurpose, MessageKind
from tipline.services import attachments, review, rotation
from tipline.storage.models import AuditEntry

PENDING, STORED, REFUSED, FAILED = (
    AttachmentStatus.PENDING,
    AttachmentStatus.STORED,
    AttachmentStatus.REFUSED,
    AttachmentStatus.FAILED,
)

METADATA = [
    samples.MAKE,
    samples.MODEL,
    samples.SERIAL,
    samples.OWNER,
    samples.TAKEN,
    samples.XMP_GPS,
    samples.IPTC_BYLINE.decode(),
    samples.IPTC_CITY.decode(),
    samples.COMMENT.decode(),
    samples.MAKER_NOTE.decode(),
    samples.THUMB_MARK.decode(),
    samples.ICC_OWNER.decode(),
]


@pytest.fixture(autouse=True)
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory of our own: the pipeline must leave nothing in it (no temp files)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    yield tmp
    assert list(tmp.iterdir()) == [], "the media pipeline wrote a temporary file"


def mms(tipline: Harness, body: str, files: list[tuple[bytes, str]], sid: str | None = None) -> tuple[str, list[str]]:
    """Post an MMS whose media are stored at the stand-in Twilio; returns (MessageSid, bot replies)."""
    sid = sid or new_sid("MM")
    media: dict[str, str] = {"NumMedia": str(len(files))}
    for n, (data, content_type) in enumerate(files):
        media[f"MediaUrl{n}"] = tipline.twilio.add_media(sid, data, content_type)
        media[f"MediaContentType{n}"] = content_type
    return sid, replies(tipline.sms(body, sid=sid, **media))


def finish_tip(tipline: Harness) -> str:
    """Skip "where" and "when" of the tip being written; returns its reference."""
    tipline.say("skip")
    return reference_of(tipline.say("skip")[0])


def later(tipline: Harness, minutes: int) -> None:
    """Move the worker's and dispatcher's clocks forward, past a retry's backoff."""
    moment = dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=minutes)
    tipline.runtime.media.clock = lambda: moment
    tipline.runtime.dispatcher.clock = lambda: moment


def assert_clean(data: bytes, size: tuple[int, int]) -> None:
    with Image.open(io.BytesIO(data)) as image:
        assert image.size == size
        assert dict(image.getexif()) == {}
        assert not {"exif", "xmp", "icc_profile", "comment"} & set(image.info)
    for secret in METADATA:
        assert secret.encode() not in data


def test_an_mms_photo_is_fetched_cleaned_stored_encrypted_and_deleted_at_twilio(tipline: Harness) -> None:
    jpeg = samples.camera_jpeg(6)
    heic = samples.heic_with_location()
    sid, answer = mms(
        tipline,
        "CANARY-MMS the man in the red cap sells from this car",
        [(jpeg.data, "image/jpeg"), (heic.data, "image/heic")],
    )
    assert answer[0].startswith("Thank you, we got your 2 photos.")
    assert "Where did it happen?" in answer[-1]
    # The webhook answered without downloading anything, and nothing is at Twilio's mercy yet.
    assert tipline.twilio.media_fetches == []
    assert [a.status for a in photos(tipline)] == [PENDING, PENDING]
    assert tipline.twilio.deleted == []

    tipline.dispatch()
    stored = photos(tipline)
    assert [a.status for a in stored] == [STORED, STORED]
    assert [a.source_ct for a in stored] == [None, None]  # the originals are gone
    assert [(a.width, a.height, a.source_format) for a in stored] == [(64, 96, "JPEG"), (128, 96, "HEIF")]
    # Fetched with credentials from the API only; the CDN never saw them.
    assert len(tipline.twilio.media_fetches) == 2
    assert len(tipline.twilio.cdn_requests) == 2
    assert ["Authorization" in headers for headers in tipline.twilio.cdn_requests] == [False, False]
    # Both media, then the message, deleted at Twilio once the cleaned copies were committed.
    deleted = tipline.twilio.deleted
    assert len(deleted) == 3
    assert deleted[-1] == sid
    assert [d[:2] for d in deleted[:2]] == ["ME", "ME"]
    assert tipline.twilio.media == {}

    reference = finish_tip(tipline)
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert detail.what == "CANARY-MMS the man in the red cap sells from this car"
    entries = [e for e in detail.thread if e.kind == MessageKind.MEDIA]
    assert [e.attachment.status for e in entries if e.attachment] == [STORED, STORED]
    first = review.read_photo(tipline.runtime.ctx, reference, stored[0].id, actor="test")
    assert first.content_type == "image/jpeg"
    assert first.filename == f"{reference}-photo-{stored[0].seq}.jpg"
    assert_clean(first.data, (64, 96))
    assert_clean(review.read_photo(tipline.runtime.ctx, reference, stored[1].id, actor="test").data, (128, 96))

    needles = [*METADATA, *phone_formats(TIPSTER), "CANARY-MMS", sid, "api.twilio.com", tipline.twilio.url]
    assert scan_files(tipline.data_dir, needles, [tipline.log_file]) == []
    assert scan_database(tipline.runtime.engine, needles) == []


def test_a_photo_alone_starts_a_tip_that_the_next_message_describes(tipline: Harness) -> None:
    _, answer = mms(tipline, "", [(samples.camera_jpeg(1).data, "image/jpeg")])
    assert answer == [
        "Thank you, we got your photo. We remove its location and camera details before anyone sees it.",
        "What does it show, and what happened? Please do not include your name.",
    ]
    assert "Where did it happen?" in tipline.say("Graffiti crew tagging the underpass")[-1]
    reference = finish_tip(tipline)
    tipline.dispatch()
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert detail.what == "Graffiti crew tagging the underpass"
    assert [e.kind for e in detail.thread][:2] == [MessageKind.MEDIA, MessageKind.BOT]
    first = detail.thread[0].attachment
    assert first is not None
    assert first.status == STORED


def test_a_file_that_claims_to_be_a_photo_but_is_not_is_refused_after_download(tipline: Harness) -> None:
    sid, answer = mms(tipline, "the receipt", [(samples.NOT_IMAGES["pdf"], "image/jpeg")])
    assert answer[0].startswith("Thank you, we got your photo.")  # as far as anyone can tell yet
    tipline.dispatch()
    [refused] = photos(tipline)
    assert (refused.status, refused.reason) == (REFUSED, "type")
    assert refused.data_ct is None
    told = [m["Body"] for m in tipline.twilio.sent]
    assert told == [
        "We can only accept photos (JPEG, PNG, HEIC, WebP or GIF), not videos, audio or documents. "
        "Nothing of that file was kept. You can send a photo or screenshot, or describe it in words."
    ]
    assert sid in tipline.twilio.deleted
    assert tipline.twilio.media == {}


@pytest.mark.parametrize(
    "data,reason,words",
    [
        (samples.png_bomb(), "pixels", "too large for us to open"),
        (samples.truncated_jpeg(), "unreadable", "could not open the picture"),
    ],
)
def test_bombs_and_broken_images_are_refused_politely(tipline: Harness, data: bytes, reason: str, words: str) -> None:
    mms(tipline, "look at this", [(data, "image/png")])
    tipline.dispatch()
    assert [(a.status, a.reason) for a in photos(tipline)] == [(REFUSED, reason)]
    assert words in tipline.twilio.sent[-1]["Body"]


def test_an_oversized_download_is_cut_off_and_refused(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    tipline = make_harness({**env, "TIPLINE_MEDIA_MAX_BYTES": "20000"}, twilio_server, log_file)
    try:
        noise = Image.frombytes("RGB", (200, 200), os.urandom(200 * 200 * 3))
        buf = io.BytesIO()
        noise.save(buf, "PNG")
        assert len(buf.getvalue()) > 100_000
        mms(tipline, "", [(buf.getvalue(), "image/png")])
        tipline.dispatch()
        assert [(a.status, a.reason) for a in photos(tipline)] == [(REFUSED, "size")]
        assert "too large for us" in tipline.twilio.sent[-1]["Body"]
    finally:
        tipline.runtime.close()


def test_a_failed_download_is_retried_and_a_permanent_failure_is_said_not_hidden(tipline: Harness) -> None:
    tipline.twilio.fail_next(503)
    mms(tipline, "CANARY retry me", [(samples.camera_jpeg(1).data, "image/jpeg")])
    tipline.dispatch()
    [waiting] = photos(tipline)
    assert (waiting.status, waiting.attempts) == (PENDING, 1)
    assert tipline.twilio.deleted == []
    later(tipline, 5)
    tipline.dispatch()
    assert photos(tipline)[0].status == STORED

    # A file that is gone at Twilio (404) will never come: the thread and the tipster are told.
    reference = finish_tip(tipline)
    sid, _ = mms(tipline, "", [(samples.camera_jpeg(1).data, "image/jpeg")])
    tipline.twilio.media.clear()
    tipline.dispatch()
    gone = photos(tipline)[-1]
    assert (gone.status, gone.reason) == (FAILED, "404")
    assert (
        tipline.twilio.sent[-1]["Body"]
        == f"We could not receive a photo you sent for tip {reference}. Please send it again."
    )
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert [e.attachment.status for e in detail.thread if e.attachment] == [STORED, FAILED]
    assert detail.summary.unread == 1  # the detective sees that something new came


def test_a_draft_discarded_before_its_photo_arrived_still_has_its_twilio_copy_deleted(tipline: Harness) -> None:
    tipline.twilio.fail_next(503)
    sid, _ = mms(tipline, "", [(samples.camera_jpeg(1).data, "image/jpeg")])
    tipline.dispatch()
    assert photos(tipline)[0].status == PENDING  # waiting for its retry
    assert tipline.say("discard") == ["Your unfinished tip was dropped. Nothing was sent. Text us again any time."]
    tipline.dispatch()
    assert photos(tipline) == []
    assert sid in tipline.twilio.deleted
    assert tipline.twilio.media == {}


def test_a_media_url_on_another_host_never_receives_our_credentials(tipline: Harness) -> None:
    # Signed, for this account and this message, but pointing elsewhere (here: the stand-in CDN's host,
    # which records every request it gets).
    sid = new_sid("MM")
    path = f"/2010-04-01/Accounts/{tipline.twilio.account_sid}/Messages/{sid}/Media/ME{'c' * 32}"
    answer = replies(
        tipline.sms(
            "look", sid=sid, NumMedia="1", MediaContentType0="image/jpeg", MediaUrl0=tipline.twilio.cdn_url + path
        )
    )
    assert answer[0].startswith("We could not open the picture you sent")  # refused at the door
    tipline.dispatch()
    assert tipline.twilio.cdn_requests == []
    assert tipline.twilio.media_fetches == []
    assert [(a.status, a.reason) for a in photos(tipline)] == [(REFUSED, "unreadable")]


def test_a_redelivered_mms_is_fetched_once(tipline: Harness) -> None:
    sid = new_sid("MM")
    url = tipline.twilio.add_media(sid, samples.camera_jpeg(1).data)
    form = {"NumMedia": "1", "MediaUrl0": url, "MediaContentType0": "image/jpeg"}
    tipline.sms("twice", sid=sid, **form)
    assert replies(tipline.sms("twice", sid=sid, **form)) == []
    tipline.dispatch()
    assert len(photos(tipline)) == 1
    assert len(tipline.twilio.media_fetches) == 1


def test_a_photo_survives_reencryption_of_tip_keys(tipline: Harness) -> None:
    mms(tipline, "a photo to keep", [(samples.camera_jpeg(1).data, "image/jpeg")])
    tipline.dispatch()
    reference = finish_tip(tipline)
    before = photos(tipline)[0]
    rotation_id = rotation.start(tipline.runtime.ctx, tipline.master_key(), KeyPurpose.TIPS, reencrypt=True)
    assert rotation.run(tipline.runtime.ctx, rotation_id)
    after = photos(tipline)[0]
    assert after.data_ct != before.data_ct
    photo = review.read_photo(tipline.runtime.ctx, reference, after.id, actor="test")
    assert_clean(photo.data, (96, 64))


def test_the_console_shows_and_downloads_photos_to_detectives_only_and_audits_it(tipline: Harness) -> None:
    mms(tipline, "car used in the robbery", [(samples.camera_jpeg(6).data, "image/jpeg")])
    tipline.dispatch()
    reference = finish_tip(tipline)
    photo_id = photos(tipline)[0].id
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    dana.sign_in()
    listed = dana.get("/console/").get_data(as_text=True)
    assert f'data-reference="{reference}"' in listed
    assert '<span class="badge photos">1 photo</span>' in listed
    page = dana.get(f"/console/tips/{reference}").get_data(as_text=True)
    url = f"/console/tips/{reference}/photos/{photo_id}"
    assert f'<img src="{url}"' in page
    assert "Location, camera and other hidden details were removed." in page
    shown = dana.get(url)
    assert shown.status_code == 200
    assert shown.content_type == "image/jpeg"
    assert shown.headers["Content-Disposition"].startswith("inline;")
    assert "sandbox" in shown.headers["Content-Security-Policy"]
    assert_clean(shown.data, (64, 96))
    downloaded = dana.get(url + "?download=1")
    assert (
        downloaded.headers["Content-Disposition"]
        == f'attachment; filename="{reference}-photo-{photos(tipline)[0].seq}.jpg"'
    )
    assert downloaded.data == shown.data
    with tipline.runtime.factory() as session:
        actions = [e.action for e in session.scalars(select(AuditEntry).where(AuditEntry.actor == "dana"))]
    assert "tip.photo_view" in actions
    assert "tip.photo_download" in actions

    assert dana.get(f"/console/tips/{reference}/photos/{'0' * 32}").status_code == 404
    mms(tipline, "", [(samples.NOT_IMAGES["text"], "image/jpeg")])  # refused: nothing to show
    tipline.dispatch()
    refused = photos(tipline)[-1]
    assert refused.status == REFUSED
    assert dana.get(f"/console/tips/{reference}/photos/{refused.id}").status_code == 404
    admin = person(tipline.app, tipline.runtime.ctx, "ada", roles=("admin",))
    admin.sign_in()
    assert admin.get(url).status_code == 403
    assert tipline.app.test_client().get(url).status_code == 302  # signed out: to the sign-in page


# Telegram ---------------------------------------------------------------------------------------


def deliver(harness: Harness, fake: fake_telegram.FakeTelegram, update: dict[str, Any]) -> list[str]:
    """Post a Telegram update and dispatch the outbox; returns the texts the bot sent meanwhile."""
    before = len(fake.called("sendMessage"))
    assert harness.post_update(update).status_code == 200
    harness.dispatch()
    return [m["text"] for m in fake.called("sendMessage")[before:]]


def test_telegram_photos_and_images_sent_as_files_are_cleaned_and_their_names_dropped(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    # A compressed photo (Telegram lists its sizes, smallest first) ...
    fake.files["documents/AgACAgQAAx-large.bin"] = samples.camera_jpeg(8).data
    sizes = [
        {"file_id": "AgACAgQAAx-small", "file_unique_id": "s1", "width": 32, "height": 21, "file_size": 900},
        {"file_id": "AgACAgQAAx-large", "file_unique_id": "s2", "width": 96, "height": 64, "file_size": 4265},
    ]
    told = deliver(harness, fake, message_update(photo=sizes, caption="CANARY-TGPHOTO the dealer's car"))
    assert told[0].startswith("Thank you, we got your photo.")
    assert "Where did it happen?" in told[-1]
    # ... and a HEIC sent as a file, which Telegram passes on byte for byte, with its revealing name.
    heic = samples.heic_with_location()
    fake.files["documents/BQACAgQAAx-doc.bin"] = heic.data
    document = {
        "file_id": "BQACAgQAAx-doc",
        "file_unique_id": "d1",
        "file_name": "IMG_20261120_221405_DanaWitness.heic",
        "mime_type": "image/heic",
        "file_size": len(heic.data),
    }
    assert deliver(harness, fake, message_update(document=document))[0].startswith("Thank you, we got your photo.")

    assert [c["file_id"] for c in fake.called("getFile")] == ["AgACAgQAAx-large", "BQACAgQAAx-doc"]
    stored = photos(harness)
    assert [(a.status, a.width, a.height) for a in stored] == [(STORED, 64, 96), (STORED, 128, 96)]
    deliver(harness, fake, message_update("skip"))
    reference = reference_of(deliver(harness, fake, message_update("skip"))[0])
    for attachment in stored:
        photo = review.read_photo(harness.runtime.ctx, reference, attachment.id, actor="t")
        assert_clean(photo.data, (attachment.width, attachment.height))
        assert "DanaWitness" not in photo.filename
    needles = [
        *METADATA,
        str(USER_ID),
        USERNAME,
        "CANARY-TGPHOTO",
        "DanaWitness",
        "IMG_20261120",
        "AgACAgQAAx",
        "BQACAgQAAx",
        TOKEN,
    ]
    assert scan_files(harness.data_dir, needles, [harness.log_file]) == []
    assert scan_database(harness.runtime.engine, needles) == []


def test_a_telegram_album_is_thanked_for_once(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    told: list[str] = []
    for n in range(3):
        fake.files[f"documents/AgAlbum{n}.bin"] = samples.camera_jpeg(1).data
        sizes = [{"file_id": f"AgAlbum{n}", "file_unique_id": f"a{n}", "width": 96, "height": 64}]
        told += deliver(harness, fake, message_update(photo=sizes, media_group_id="13579246801357924"))
    assert told == [
        "Thank you, we got your photo. We remove its location and camera details before anyone sees it.",
        "What does it show, and what happened? Please do not include your name.",
    ]
    assert [a.status for a in photos(harness)] == [STORED] * 3
    # Another album later is thanked for again.
    fake.files["documents/AgAlbumX.bin"] = samples.camera_jpeg(1).data
    again = deliver(
        harness,
        fake,
        message_update(
            photo=[{"file_id": "AgAlbumX", "file_unique_id": "x", "width": 96, "height": 64}],
            media_group_id="24680135792468013",
        ),
    )
    assert again[0].startswith("Thank you, we got your photo.")


def test_an_edited_telegram_photo_is_not_taken_twice(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    fake.files["documents/AgEdit.bin"] = samples.camera_jpeg(1).data
    update = message_update(
        photo=[{"file_id": "AgEdit", "file_unique_id": "e", "width": 96, "height": 64}], caption="the van"
    )
    deliver(harness, fake, update)
    edited = {"update_id": update["update_id"] + 1, "edited_message": {**update["message"], "caption": "the white van"}}
    deliver(harness, fake, edited)
    assert len(fake.called("getFile")) == 1
    assert [a.status for a in photos(harness)] == [STORED]


@pytest.mark.parametrize(
    "extra,words",
    [
        (
            {
                "document": {
                    "file_id": "BQbig",
                    "file_unique_id": "b",
                    "mime_type": "image/jpeg",
                    "file_size": 19_000_000,
                }
            },
            "too large for us",
        ),
        (
            {
                "document": {
                    "file_id": "BQpdf",
                    "file_unique_id": "p",
                    "mime_type": "application/pdf",
                    "file_name": "report.pdf",
                    "file_size": 5000,
                }
            },
            "only accept photos",
        ),
        ({"voice": {"file_id": "AwVoice", "file_unique_id": "v", "duration": 4}}, "only accept photos"),
    ],
)
def test_telegram_files_we_cannot_take_are_refused_without_download(
    tg: tuple[Harness, fake_telegram.FakeTelegram], extra: dict[str, Any], words: str
) -> None:
    harness, fake = tg
    deliver(harness, fake, message_update("CANARY a stolen bike for sale at the flea market"))
    told = deliver(harness, fake, message_update(**extra))
    assert words in told[0]
    assert fake.called("getFile") == []
    assert [(a.status, a.source_ct) for a in photos(harness)] == [(REFUSED, None)]


def test_the_worker_recovers_a_photo_whose_worker_died_mid_fetch(tipline: Harness) -> None:
    mms(tipline, "a photo", [(samples.camera_jpeg(1).data, "image/jpeg")])
    # A worker claimed it and died: nothing happens until its lease runs out, then it is retried.
    assert tipline.runtime.media._claim()
    assert tipline.runtime.media.run_once() == 0
    later(tipline, int(attachments.LEASE.total_seconds() // 60) + 1)
    tipline.dispatch()
    assert photos(tipline)[0].status == STORED


def test_a_telegram_file_larger_than_declared_is_refused_before_download(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    with telegram_harness(env, twilio_server, log_file, TIPLINE_MEDIA_MAX_BYTES="20000") as (harness, fake):
        # The update says nothing of the size; getFile does, and the download never starts.
        fake.files["documents/AgACAgQAAx-huge.bin"] = samples.camera_jpeg(1).data + b"\x00" * 30_000
        told = deliver(
            harness,
            fake,
            message_update(photo=[{"file_id": "AgACAgQAAx-huge", "file_unique_id": "h", "width": 96, "height": 64}]),
        )
        assert told[0].startswith("Thank you, we got your photo.")
        assert [(a.status, a.reason) for a in photos(harness)] == [(REFUSED, "size")]
        assert "too large for us" in fake.called("sendMessage")[-1]["text"]
        assert fake.called("download") == []


def test_the_sandbox_page_sends_photos_through_the_same_pipeline(tipline: Harness) -> None:
    browser = tipline.app.test_client()
    browser.get("/sandbox")
    sent = browser.post(
        "/sandbox/photos",
        data=samples.camera_jpeg(6).data,
        content_type="image/jpeg",
        headers={"X-Sandbox-Id": "photo-0001"},
    )
    assert sent.status_code == 200
    assert sent.get_json()["replies"][0].startswith("Thank you, we got your photo.")
    again = browser.post(
        "/sandbox/photos",
        data=samples.camera_jpeg(6).data,
        content_type="image/jpeg",
        headers={"X-Sandbox-Id": "photo-0001"},
    )
    assert again.get_json() == {"replies": [], "duplicate": True, "messages": []}  # a retried upload is taken once
    not_a_photo = browser.post("/sandbox/photos", data=samples.NOT_IMAGES["zip"], content_type="image/png")
    assert not_a_photo.status_code == 200
    # The page sends the bytes themselves: what is not a photo is refused at once, with no thanks first.
    (refusal,) = not_a_photo.get_json()["replies"]
    assert refusal.startswith("We can only accept photos")
    tipline.dispatch()
    assert [(a.status, a.width, a.height) for a in photos(tipline)] == [(STORED, 64, 96), (REFUSED, None, None)]
    assert tipline.runtime.channels["sandbox"]._held == {}  # nothing of the originals is kept
    assert browser.get("/sandbox/inbox").get_json()["messages"] == []  # nothing more was said later
    assert browser.post("/sandbox/photos", data=b"", content_type="image/jpeg").status_code == 400
    assert tipline.app.test_client().post("/sandbox/photos", data=b"x").status_code == 400  # no sandbox identity
