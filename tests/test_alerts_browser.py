"""Alerts in a real browser: the tab title counts new tips, desktop notifications are offered on a
click and say nothing but "New tip"/"Urgent tip" and the reference; a person sets their own alerts."""

from __future__ import annotations

from typing import Any

from tests.support.harness import REFERENCE, Harness
from tests.test_console_browser import PASSWORD, browser, live, sign_in_first_time  # noqa: F401
from tipline.services import alerts
from tipline.services.accounts import add_user

# Chromium's own permission prompt cannot be answered headless, so the page gets a stand-in for the
# browser's Notification API that records what the console asks of it (our code is what runs).
NOTIFICATION_STAND_IN = """
const kept = (key, fallback) => JSON.parse(sessionStorage.getItem(key) || fallback);
const keep = (key, value) => sessionStorage.setItem(key, JSON.stringify(value));
window.Notification = function (title, options) {
  keep("test.shown", kept("test.shown", "[]").concat([{title: title, body: options.body}]));
};
window.Notification.permission = kept("test.permission", '"default"');
window.Notification.requestPermission = function () {
  keep("test.asked", kept("test.asked", "0") + 1);
  keep("test.permission", "granted");
  window.Notification.permission = "granted";
  return Promise.resolve("granted");
};
"""  # kept in sessionStorage: the list reloads itself when tips arrive
SHOWN = "() => JSON.parse(sessionStorage.getItem('test.shown') || '[]')"
ASKED = "() => JSON.parse(sessionStorage.getItem('test.asked') || '0')"
TITLE = "Tips · Example City Police"


def submit_tip(harness: Harness, text: str, sender: str) -> str:
    harness.say(text, sender=sender)
    harness.say("skip", sender=sender)
    found = REFERENCE.search(harness.say("skip", sender=sender)[0])
    assert found is not None
    return found.group(0)


def test_the_tab_counts_new_tips_and_notifications_are_offered_on_a_click(
    live: tuple[Harness, str],  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    harness, base = live
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    submit_tip(harness, "An old tip from before the list was opened", "+15555550141")
    page = browser.new_page()
    page.add_init_script(NOTIFICATION_STAND_IN)
    sign_in_first_time(page, base, "dana")
    assert page.title() == TITLE
    offer = page.locator("#notify-offer")
    offer.wait_for(state="visible")
    assert page.evaluate(ASKED) == 0  # never asked on load

    # Given notifications turned on by a click
    offer.click()
    page.wait_for_function("() => document.getElementById('notify-state').textContent.includes('on')")
    assert page.evaluate(ASKED) == 1
    assert offer.is_hidden()

    # When two tips arrive, one urgent, the tab title counts them and each is notified without content
    plain = submit_tip(harness, "Someone sells stolen bikes from a garage on Oak Street", "+15555550142")
    page.wait_for_function(f"() => document.title === '(1) {TITLE}'", timeout=20_000)
    harness.say("a man with a gun is shouting in the street right now", sender="+15555550144")
    page.wait_for_function(f"() => document.title === '(2) {TITLE}'", timeout=20_000)
    page.wait_for_function(f"() => ({SHOWN})().length === 2", timeout=20_000)
    shown = page.evaluate(SHOWN)
    assert shown[0] == {"title": "New tip", "body": plain}
    assert shown[1]["title"] == "Urgent tip" and shown[1]["body"].startswith("T-")
    assert "gun" not in str(shown) and "bikes" not in str(shown)

    # Opening the list anew counts from there
    page.goto(f"{base}/console/")
    page.wait_for_timeout(1500)
    assert page.title() == TITLE
    assert len(page.evaluate(SHOWN)) == 2  # nothing notified twice


def test_a_person_sets_their_own_alerts_in_the_console(
    live: tuple[Harness, str],  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    harness, base = live
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    page = browser.new_page()
    sign_in_first_time(page, base, "dana")
    page.click("text=Your email alerts")
    page.wait_for_url(f"{base}/console/alerts")
    assert page.is_checked("input[name=alerts][value=urgent]")  # the default for detectives
    page.fill("input[name=email]", "dana@police.example")
    page.check("input[name=alerts][value=mine]")
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{base}/console/alerts?notice=*")
    assert page.get_by_text("Your alert settings are saved.").is_visible()
    now = alerts.preferences(harness.runtime.ctx, "dana")
    assert (now.email, now.choice) == ("dana@police.example", "mine")
    # A bad address is refused with a plain message, and nothing changes
    page.fill("input[name=email]", "dana at police")
    page.evaluate("document.querySelector('input[name=email]').type = 'text'")  # past the browser's own check
    page.click("form.stack button[type=submit]")
    assert "does not look like an email address" in page.locator(".error").inner_text()
    assert alerts.preferences(harness.runtime.ctx, "dana").email == "dana@police.example"
