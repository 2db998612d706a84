"""The sandbox as an agency demonstrates it to the public, in chromium: a chat that behaves like one.

Enter sends and Shift+Enter starts a new line; the conversation is still there after a reload, for
this browser only, until FORGET erases it; a file that is not a photo, or is too large, gets one clear
refusal from the bot and never a thank-you for a photo first. The same holds by SMS.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import samples
from tests.support.harness import REFERENCE, Harness, make_harness, new_sid, photos, replies
from tests.test_console_browser import browser, free_port, live  # noqa: F401 (fixtures)
from tipline.services import review

THANKS = "we got your photo"
REFUSED_TYPE = "We can only accept photos"
REFUSED_SIZE = "That file is too large for us"
SMALL_LIMIT = 20_000  # TIPLINE_MEDIA_MAX_BYTES in `small_live`: a "too large" file stays small in a test


@pytest.fixture
def small_live(env: dict[str, str], twilio_server, log_file: Path) -> Iterator[tuple[Harness, str]]:  # type: ignore[no-untyped-def]
    """`live` with a 20 kB photo limit."""
    import waitress

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    overrides = {"TIPLINE_PUBLIC_URL": base, "TIPLINE_MEDIA_MAX_BYTES": str(SMALL_LIMIT)}
    harness = make_harness({**env, **overrides}, twilio_server, log_file)
    server = waitress.create_server(harness.app, host="127.0.0.1", port=port, threads=4)
    threading.Thread(target=server.run, daemon=True).start()
    yield harness, base
    server.close()
    harness.runtime.close()


def chat(page: Any) -> list[tuple[str, str]]:
    """The conversation on the page: (who, text) per bubble."""
    return [
        (item.get_attribute("class") or "", item.inner_text())
        for item in page.locator("#chat li").all()
        if item.get_attribute("class") != "error"
    ]


def say(page: Any, text: str) -> None:
    """Type a message and press Enter; wait for the bot's answer to it."""
    answers = page.locator("#chat li.bot").count()
    page.locator("#text").fill(text)
    page.locator("#text").press("Enter")
    page.locator("#chat li.bot").nth(answers).wait_for(timeout=10_000)


def test_enter_sends_and_shift_enter_starts_a_new_line(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, base = live
    page = browser.new_page()
    page.goto(f"{base}/sandbox")
    page.locator("#text").click()
    page.keyboard.type("hi")
    page.keyboard.press("Enter")
    page.locator("#chat li.bot", has_text="anonymous").wait_for(timeout=10_000)
    assert page.locator("#text").input_value() == ""

    page.keyboard.type("A grey van behind the pharmacy")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("every night at ten")
    assert page.locator("#text").input_value() == "A grey van behind the pharmacy\nevery night at ten"
    assert page.locator("#chat li.me").count() == 1  # nothing sent yet
    page.keyboard.press("Enter")
    page.locator("#chat li.bot").nth(1).wait_for(timeout=10_000)
    assert page.locator("#chat li.me").last.inner_text() == "A grey van behind the pharmacy\nevery night at ten"


def test_the_conversation_survives_a_reload_for_this_browser_only_until_forget(  # noqa: F811
    live: tuple[Harness, str],  # noqa: F811
    browser,  # noqa: F811
) -> None:  # type: ignore[no-untyped-def]
    harness, base = live
    page = browser.new_page()
    page.goto(f"{base}/sandbox")
    say(page, "hi")
    say(page, "Someone sells stolen bikes from a garage on Elm Street")
    say(page, "skip")
    say(page, "skip")
    reference = REFERENCE.search(page.locator("#chat li.bot").last.inner_text()).group(0)
    review.reply(harness.runtime.ctx, reference, "Which garage number?")
    harness.dispatch()
    page.locator("#chat li.agency", has_text="Which garage number?").wait_for(timeout=10_000)
    before = chat(page)
    assert before[0] == ("me", "hi") and before[-1] == ("agency", "Example City Police: Which garage number?")

    # Given a reload, the same conversation is there, in order, each message once.
    page.reload()
    page.locator("#chat li.agency").wait_for(timeout=10_000)
    page.wait_for_timeout(3_500)  # one poll of the inbox: it must not add the agency reply again
    assert chat(page) == before

    # Another browser (its own cookie) sees none of it.
    stranger = browser.new_context().new_page()
    stranger.goto(f"{base}/sandbox")
    assert stranger.request.get(f"{base}/sandbox/history").json() == {"messages": []}
    stranger.wait_for_timeout(500)
    assert chat(stranger) == []

    # FORGET erases it: after a reload the page is empty.
    say(page, "FORGET")
    page.reload()
    page.wait_for_timeout(1_000)
    assert chat(page) == []
    assert page.request.get(f"{base}/sandbox/history").json() == {"messages": []}


def test_start_over_leaves_the_next_visitor_nothing(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The sandbox is demonstrated on shared screens: one visitor's words must not greet the next."""
    harness, base = live
    page = browser.new_page()
    page.goto(f"{base}/sandbox")
    say(page, "My ex Carlos Ruiz at 12 Oak St sells pills")
    page.get_by_role("button", name="Start over").click()
    page.wait_for_load_state("load")
    page.wait_for_timeout(1_000)
    assert chat(page) == []
    assert page.request.get(f"{base}/sandbox/history").json() == {"messages": []}
    # and this browser is a new sandbox tipster: a message starts afresh, not inside the old draft
    say(page, "hi")
    assert chat(page)[0] == ("me", "hi") and chat(page)[1][0] == "bot"


def test_a_conversation_left_idle_is_forgotten(monkeypatch: pytest.MonkeyPatch) -> None:
    from adapters import sandbox

    box = sandbox.SandboxChannel()
    clock = [1000.0]
    monkeypatch.setattr(sandbox.time, "monotonic", lambda: clock[0])
    box.note("browser-a", sandbox.ME, "a witness statement")
    clock[0] += sandbox.HISTORY_IDLE_SECONDS - 1
    assert [who for _, who, _ in box.transcript("browser-a")] == ["me"]
    clock[0] += 2
    assert box.transcript("browser-a") == []


@pytest.mark.parametrize(
    ("name", "mime", "data", "refusal"),
    [
        ("report.pdf", "application/pdf", samples.NOT_IMAGES["pdf"], REFUSED_TYPE),
        ("IMG_0001.jpg", "image/jpeg", samples.NOT_IMAGES["pdf"], REFUSED_TYPE),  # a document renamed .jpg
        ("IMG_0002.jpg", "image/jpeg", samples.camera_jpeg(1).data + b"\0" * SMALL_LIMIT, REFUSED_SIZE),
        ("IMG_0003.jpg", "image/jpeg", samples.camera_jpeg(1).data + b"\0" * SMALL_LIMIT * 20, REFUSED_SIZE),
    ],
    ids=["pdf", "pdf-named-jpg", "just-too-large", "far-too-large"],
)
def test_a_refused_file_gets_one_clear_refusal_and_no_thanks(  # noqa: F811
    small_live: tuple[Harness, str],
    browser,  # noqa: F811
    name: str,
    mime: str,
    data: bytes,
    refusal: str,
) -> None:  # type: ignore[no-untyped-def]
    harness, base = small_live
    page = browser.new_page()
    page.goto(f"{base}/sandbox")
    page.set_input_files("#photo", files=[{"name": name, "mimeType": mime, "buffer": data}])
    page.locator("#chat li.bot", has_text=refusal).wait_for(timeout=10_000)
    harness.dispatch()  # nothing is left to fetch, and nothing more is said
    page.wait_for_timeout(3_500)  # one poll of the inbox
    bot = [text for who, text in chat(page) if who in ("bot", "agency")]
    assert len(bot) == 1 and bot[0].startswith(refusal), bot
    assert harness.runtime.channels["sandbox"]._held == {}  # nothing of the file is kept


def test_a_photo_is_still_thanked_and_cleaned(small_live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    harness, base = small_live
    page = browser.new_page()
    page.goto(f"{base}/sandbox")
    page.set_input_files(
        "#photo", files=[{"name": "IMG_0004.jpg", "mimeType": "image/jpeg", "buffer": samples.camera_jpeg(6).data}]
    )
    page.locator("#chat li.bot", has_text=THANKS).wait_for(timeout=10_000)
    harness.dispatch()
    assert [(a.status, a.width, a.height) for a in photos(harness)] == [("stored", 64, 96)]


def test_a_document_by_mms_gets_one_clear_refusal_and_no_thanks(tipline: Harness) -> None:
    tipline.submit_tip()
    sid = new_sid("MM")
    url = tipline.twilio.add_media(sid, samples.NOT_IMAGES["pdf"])
    answer = replies(tipline.sms("", sid=sid, NumMedia="1", MediaUrl0=url, MediaContentType0="application/pdf"))
    tipline.dispatch()
    later = [m["Body"] for m in tipline.twilio.sent]
    assert len(answer) == 1 and answer[0].startswith(REFUSED_TYPE), answer
    assert not [text for text in [*answer, *later] if THANKS in text]
