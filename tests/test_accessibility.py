"""Every console and sandbox page passes axe-core (WCAG 2.2 A/AA and best practices) on a desktop and a phone.

A detective may be on a phone at a scene, and an agency may be bound by accessibility law: a page that
a screen reader cannot navigate, or a button too small for a thumb, is a page someone cannot use.
"""

from __future__ import annotations

from typing import Any

import pyotp

from tests.support import samples
from tests.support.axe import DESKTOP, PHONE, assert_accessible, scroll_width
from tests.support.harness import Harness, new_sid
from tests.test_console_browser import PASSWORD, browser, live, submit_tip  # noqa: F401 (fixtures)
from tipline.services.accounts import add_user


def check_both_widths(page: Any, where: str) -> None:
    """axe at desktop and phone widths, and no sideways scroll on the phone."""
    for size in (DESKTOP, PHONE):
        page.set_viewport_size(size)
        assert_accessible(page, f"{where} at {size['width']} px")
    assert scroll_width(page) <= PHONE["width"], f"{where} scrolls sideways at {PHONE['width']} px"
    page.set_viewport_size(DESKTOP)


def first_sign_in(page: Any, base: str, username: str) -> None:
    """Sign in with a one-time password, checking the sign-in, enrolment and password pages on the way."""
    page.goto(f"{base}/console/login")
    check_both_widths(page, "the sign-in page")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.check("input[name=ack]")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/enrol")
    check_both_widths(page, "the enrolment page")
    secret = page.get_attribute("[data-totp-secret]", "data-totp-secret")
    page.fill("input[name=code]", pyotp.TOTP(secret).now())
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{base}/console/password")
    check_both_widths(page, "the password page")
    page.fill("input[name=new_password]", PASSWORD + " of my own")
    page.fill("input[name=new_password_again]", PASSWORD + " of my own")
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{base}/console/")


def a_worked_tip(harness: Harness) -> str:
    """A tip with a cleaned photo, a detective's reply and an internal note (added through the page later)."""
    reference = submit_tip(harness, "Two men unload boxes from a grey van behind the pharmacy every night")
    sid = new_sid("MM")
    url = harness.twilio.add_media(sid, samples.camera_jpeg(6).data)
    harness.sms("", sid=sid, NumMedia="1", MediaUrl0=url, MediaContentType0="image/jpeg")
    harness.dispatch()
    return reference


def test_every_console_page_passes_axe_on_desktop_and_phone(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    harness, base = live
    add_user(harness.runtime.ctx, "robin", ["detective", "admin"], PASSWORD, must_change=True)
    reference = a_worked_tip(harness)
    submit_tip(harness, "Someone sells stolen bikes from a garage on Elm Street")
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{base}/sandbox")  # a sandbox tip, labelled as such in the list
    first_sign_in(page, base, "robin")
    page.goto(f"{base}/console/tips/{reference}")
    page.fill("form[action$='/reply'] textarea", "Thank you. Is the van there now?")
    page.click("form[action$='/reply'] button")
    page.fill("form[action$='/note'] textarea", "Pass to narcotics")
    page.click("form[action$='/note'] button")
    page.locator(".entry.note").first.wait_for()
    check_both_widths(page, "a tip with a photo, a reply and a note")

    page.goto(f"{base}/console/")
    page.locator(f"tr[data-reference='{reference}']").wait_for()
    check_both_widths(page, "the tip list")
    for path, name in [
        ("admin/users", "the accounts page"),
        ("admin/users/robin/unlock", "a confirmation page"),
        ("admin/keys", "the keys page"),
        ("admin/keys/rotate?purpose=tips", "the rotation's confirmation page"),
        ("admin/audit", "the audit log"),
        ("admin/activity", "the activity page"),
        ("alerts", "the alert settings"),
        ("tips/T-ZZZZZZ", "the error page"),
    ]:
        page.goto(f"{base}/console/{path}")
        check_both_widths(page, name)

    # The skip link is the first thing a keyboard reaches, and it lands on the page's content.
    page.goto(f"{base}/console/admin/users")
    page.keyboard.press("Tab")
    assert page.evaluate("() => document.activeElement.textContent.trim()") == "Skip to content"
    page.keyboard.press("Enter")
    assert page.url.endswith("#content")


def test_the_sandbox_passes_axe_with_a_conversation(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    _, base = live
    page = browser.new_page(viewport=DESKTOP)
    page.goto(f"{base}/sandbox")
    check_both_widths(page, "the empty sandbox")
    page.fill("#text", "hi")
    page.click("#compose button[type=submit]")
    page.locator("#chat li.bot").first.wait_for()
    check_both_widths(page, "the sandbox with a conversation")
