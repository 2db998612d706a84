"""The console in a real browser: Playwright driving Debian's chromium against a live server."""

from __future__ import annotations

import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pyotp
import pytest

from tests.support import samples
from tests.support.harness import REFERENCE, Harness, make_harness, new_sid, photos
from tipline.services.accounts import add_user

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install -e '.[test]')"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed: `apt-get install chromium` (.ci/run installs it)"
)
PASSWORD = "a long and private passphrase"
XSS = "<img src=x onerror=alert(1)><script>alert(2)</script>"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def live(env: dict[str, str], twilio_server, log_file: Path) -> Iterator[tuple[Harness, str]]:  # type: ignore[no-untyped-def]
    import waitress

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    harness = make_harness({**env, "TIPLINE_PUBLIC_URL": base}, twilio_server, log_file)
    server = waitress.create_server(harness.app, host="127.0.0.1", port=port, threads=4)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    yield harness, base
    server.close()
    harness.runtime.close()


@pytest.fixture
def browser() -> Iterator[object]:
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield chromium
        chromium.close()


def sign_in_first_time(page, base: str, username: str) -> str:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/console/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.check("input[name=ack]")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/enrol")
    secret = page.get_attribute("[data-totp-secret]", "data-totp-secret")
    assert page.locator(".qr svg").count() == 1
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{base}/console/")
    return secret


def submit_tip(harness: Harness, text: str) -> str:
    harness.say(text)
    harness.say("skip")
    return REFERENCE.search(harness.say("skip")[0]).group(0)


def test_a_detective_works_a_tip_in_the_browser(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]
    harness, base = live
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    reference = submit_tip(harness, "Two men unload boxes from a grey van behind the pharmacy every night")
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))

    sign_in_first_time(page, base, "dana")
    row = page.locator(f"tr[data-reference='{reference}']")
    assert row.count() == 1
    assert "Tipster " in row.inner_text()
    row.locator("a").click()
    page.wait_for_url(f"{base}/console/tips/{reference}")
    assert "grey van behind the pharmacy" in page.locator("dl.fields").inner_text()

    # The reply box counts as the SMS will: one accented letter makes it UCS-2
    counter = page.locator("#reply-counter")
    page.fill("form[action$='/reply'] textarea", "Is the van there now?")
    assert counter.inner_text() == "21 characters · 1 SMS segment · GSM-7"
    page.fill("form[action$='/reply'] textarea", "¿Está la camioneta ahí ahora?")
    assert "UCS-2" in counter.inner_text()

    # Reply: queued, then sent through the stand-in Twilio, then delivered
    page.fill("form[action$='/reply'] textarea", "Thank you. Is the van there now?")
    page.click("form[action$='/reply'] button")
    assert "Reply queued." in page.locator(".notice").inner_text()
    harness.dispatch()
    assert harness.twilio.sent[-1]["Body"] == "Example City Police: Thank you. Is the van there now?"
    harness.status_callback(harness.twilio.sent[-1]["_sid"], "delivered")
    page.locator(".entry.agency .delivery").filter(has_text="delivered").wait_for(timeout=10_000)  # live, no reload

    # The tipster answers: it appears without a reload
    harness.say("Yes, parked by the back door right now")
    page.locator(".entry.tipster", has_text="parked by the back door").wait_for(timeout=10_000)

    # An internal note, and triage
    page.fill("form[action$='/note'] textarea", "Pass to narcotics")
    page.click("form[action$='/note'] button")
    assert "Internal note by dana" in page.locator(".entry.note").last.inner_text()
    page.select_option("select[name=status]", "in_review")
    page.select_option("select[name=category]", "drugs")
    page.click("form[action$='/triage'] button")
    assert "In review" in page.locator(".meta").inner_text()

    # Sign out: the console is closed again
    page.click(".signout button")
    page.wait_for_url(f"{base}/console/login")
    page.goto(f"{base}/console/")
    assert page.url == f"{base}/console/login"
    assert dialogs == []


def test_tipster_markup_renders_as_text_and_runs_nothing(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]
    harness, base = live
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    reference = submit_tip(harness, XSS)
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    sign_in_first_time(page, base, "dana")
    page.goto(f"{base}/console/tips/{reference}")
    assert page.locator("dl.fields dd").first.inner_text() == XSS
    assert page.locator("dl.fields img, .thread img, .thread script, dl.fields script").count() == 0
    harness.say(XSS)  # also through the live-update path
    page.locator(".entry.tipster.fresh").wait_for(timeout=10_000)
    assert page.locator(".entry.tipster.fresh .text").inner_text() == XSS
    page.wait_for_timeout(500)
    assert dialogs == []


def test_a_photo_appears_cleaned_once_fetched_without_a_reload(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]
    harness, base = live
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    reference = submit_tip(harness, "A man keeps breaking into cars on Birch Street")
    sid = new_sid("MM")
    url = harness.twilio.add_media(sid, samples.camera_jpeg(6).data)
    harness.sms("", sid=sid, NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
    page = browser.new_page()
    sign_in_first_time(page, base, "dana")
    page.goto(f"{base}/console/tips/{reference}")
    assert "being fetched and cleaned" in page.locator(".entry.media").inner_text()

    harness.dispatch()  # the worker fetches and cleans it; the open page notices by itself
    image = page.locator(".entry.media figure.photo img")
    image.wait_for(timeout=15_000)
    page.wait_for_function("() => document.querySelector('.entry.media img').naturalWidth > 0")
    assert page.evaluate(
        "() => [document.querySelector('.entry.media img').naturalWidth, "
        "document.querySelector('.entry.media img').naturalHeight]"
    ) == [64, 96]
    assert "hidden details were removed" in page.locator(".entry.media figcaption").inner_text()
    with page.expect_download() as download:
        page.click(".entry.media figcaption a[download]")
    assert download.value.suggested_filename.startswith(f"{reference}-photo-")


def test_the_sandbox_page_sends_a_photo(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]
    harness, base = live
    page = browser.new_page()
    page.goto(f"{base}/sandbox")
    page.set_input_files(
        "#photo",
        files=[{"name": "IMG_20261120_221405.jpg", "mimeType": "image/jpeg", "buffer": samples.camera_jpeg(6).data}],
    )
    page.locator("#chat li.bot", has_text="we got your photo").wait_for(timeout=10_000)
    assert page.locator("#chat li.me").inner_text().startswith("[photo: ")
    harness.dispatch()
    assert [(a.status, a.width, a.height) for a in photos(harness)] == [("stored", 64, 96)]
