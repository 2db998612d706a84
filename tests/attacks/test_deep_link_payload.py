"""Threat: a Telegram deep link tags the tipster, and its payload becomes the tip's text.

`t.me/<bot>?start=PAYLOAD` opens the chat and sends "/start PAYLOAD" when the tipster presses Start.
The tip line took that as a description: the tip said "/start PAYLOAD" although the tipster typed
nothing, and the payload, chosen by whoever made the link (a suspect who handed the link to one
person only, say), was stored with it. What must hold: "/start" with anything after it is the
greeting, as "/start" alone is, and the payload is stored nowhere.
"""

from __future__ import annotations

import pytest

from tests.support import fake_telegram
from tests.support.anonymity import scan_database
from tests.support.harness import Harness, reference_of
from tests.support.telegram_updates import edited_update, message_update
from tipline.services import review

WORDS = "CANARY-DEEPLINK a man sells fake tickets outside the stadium"


@pytest.mark.parametrize(
    "text", ["/start abc123", "/start CANARYDEEPLINK_suspect42", "/start@example_tipline_bot ref-7K3Q9X"]
)
def test_a_deep_link_start_is_a_greeting_and_its_payload_is_kept_nowhere(
    tg: tuple[Harness, fake_telegram.FakeTelegram], text: str
) -> None:
    harness, fake = tg
    assert harness.post_update(message_update(text)).status_code == 200
    harness.dispatch()
    [greeting] = fake.called("sendMessage")
    assert "anonymous" in greeting["text"]
    assert "Where did it happen?" not in greeting["text"]  # no description was taken
    # What the tipster types next is what the tip says.
    for typed in (WORDS, "skip", "skip"):
        assert harness.post_update(message_update(typed)).status_code == 200
    harness.dispatch()
    reference = reference_of(fake.called("sendMessage")[-1]["text"])
    assert review.read_tip(harness.runtime.ctx, reference).what == WORDS
    payload = text.split(maxsplit=1)[1]
    assert scan_database(harness.runtime.engine, [payload, "/start"]) == []


def test_an_edited_deep_link_start_is_ignored_and_its_payload_kept_nowhere(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    assert harness.post_update(message_update("/start CANARYDEEPLINK_first")).status_code == 200
    # The tipster (or a client) edits the /start message: still no words of theirs
    assert harness.post_update(edited_update("/start CANARYDEEPLINK_edited")).status_code == 200
    harness.dispatch()
    [greeting] = fake.called("sendMessage")
    assert "anonymous" in greeting["text"]
    for typed in (WORDS, "skip", "skip"):
        assert harness.post_update(message_update(typed)).status_code == 200
    harness.dispatch()
    reference = reference_of(fake.called("sendMessage")[-1]["text"])
    detail = review.read_tip(harness.runtime.ctx, reference)
    assert detail.what == WORDS
    assert not any("start" in entry.text for entry in detail.thread if entry.kind == "tipster")
    assert scan_database(harness.runtime.engine, ["CANARYDEEPLINK", "/start"]) == []
