"""An API key and secret for Twilio's REST API instead of the auth token (TWILIO_API_KEY/_SECRET).

The stand-in Twilio is told to refuse the auth token, so every REST call that succeeds here
(sending, deleting, downloading a photo) proved it used the key. The webhooks are still signed
with the auth token, which the tip line keeps for that alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import samples
from tests.support.fake_twilio import FakeTwilio, require_api_key
from tests.support.harness import TIPSTER, Harness, make_harness, new_sid, photos, reference_of, replies
from tipline.config import ConfigError, load_settings
from tipline.services import attachments, review

API_KEY = "SK" + "7e" * 16
API_SECRET = "sec_" + "4d" * 14


@pytest.fixture
def keyed(env: dict[str, str], twilio_server: FakeTwilio, log_file: Path) -> Iterator[Harness]:
    require_api_key(twilio_server, API_KEY, API_SECRET)
    harness = make_harness({**env, "TWILIO_API_KEY": API_KEY, "TWILIO_API_SECRET": API_SECRET}, twilio_server, log_file)
    yield harness
    harness.runtime.close()


def test_rest_calls_use_the_api_key_and_webhooks_the_auth_token(keyed: Harness) -> None:
    tipline = keyed
    # An MMS, signed by Twilio with the auth token: its photo is fetched with the key
    sid = new_sid("MM")
    url = tipline.twilio.add_media(sid, samples.camera_jpeg().data)
    assert replies(tipline.sms("the van", sid=sid, NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg"))
    tipline.say("skip")
    reference = reference_of(tipline.say("skip")[0])
    tipline.dispatch()
    assert [photo.status for photo in photos(tipline)] == [attachments.STORED]
    assert tipline.twilio.media == {}  # deleted with the message
    assert sid in tipline.twilio.deleted

    # A detective's reply is sent, and deleted once delivered, with the key
    review.reply(tipline.runtime.ctx, reference, "Which van?")
    tipline.dispatch()
    [sent] = tipline.twilio.sent
    assert sent["To"] == TIPSTER
    tipline.status_callback(sent["_sid"], "delivered")
    tipline.dispatch()
    assert sent["_sid"] in tipline.twilio.deleted


def test_without_the_key_the_stand_in_refuses_the_auth_token(tipline: Harness) -> None:
    """The control: the stand-in really tells the two apart."""
    require_api_key(tipline.twilio, API_KEY, API_SECRET)
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which van?")
    tipline.dispatch()
    assert tipline.twilio.sent == []
    assert tipline.twilio.deleted == []


@pytest.mark.parametrize(
    "extra, named",
    [
        ({"TWILIO_API_KEY": "AC" + "7e" * 16, "TWILIO_API_SECRET": API_SECRET}, "TWILIO_API_KEY"),
        ({"TWILIO_API_KEY": API_KEY}, "TWILIO_API_SECRET"),
        ({"TWILIO_API_SECRET": API_SECRET}, "TWILIO_API_KEY"),
    ],
)
def test_a_half_or_malformed_key_is_refused_at_start(env: dict[str, str], extra: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_settings({**env, **extra})
    assert named in str(refused.value)
    assert API_SECRET not in str(refused.value)
