"""The admin pages as an administrator uses them: actions ask first and say what happened, the audit
log pages and filters, a retired key says so, and every admin page fits a phone.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pyotp
import pytest

from tests.support.axe import PHONE, scroll_width
from tests.support.console import Person, person
from tests.support.harness import Harness
from tests.test_console_browser import PASSWORD, browser, live  # noqa: F401 (fixtures)
from tipline.services import audit, rotation
from tipline.services.accounts import add_user


@pytest.fixture
def admin(tipline: Harness) -> Person:
    alex = person(tipline.app, tipline.runtime.ctx, "alex", roles=("admin",))
    assert alex.sign_in().location.endswith("/console/admin/users")
    return alex


def rotations(tipline: Harness) -> int:
    return len(rotation.recent(tipline.runtime.ctx))


def test_an_account_action_asks_first_then_says_what_happened(tipline: Harness, admin: Person) -> None:
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    dana.sign_in()
    users = admin.get("/console/admin/users").get_data(as_text=True)
    assert 'href="/console/admin/users/dana/disable"' in users  # a link to a question, not a form that acts

    # Asking changes nothing.
    question = admin.get("/console/admin/users/dana/disable").get_data(as_text=True)
    assert "Disable dana&#39;s account?" in question
    assert 'action="/console/admin/users/dana/disable"' in question
    assert dana.get("/console/").status_code == 200

    # Confirming acts, and the accounts page says what happened.
    done = admin.post("/console/admin/users/dana/disable")
    assert done.status_code == 302
    said = admin.get(done.location).get_data(as_text=True)
    assert "dana&#39;s account is disabled; their sessions ended." in said
    assert dana.get("/console/").status_code == 302

    for action, words in [("enable", "is enabled"), ("unlock", "is unlocked")]:
        admin.get(f"/console/admin/users/dana/{action}")
        said = admin.get(admin.post(f"/console/admin/users/dana/{action}").location).get_data(as_text=True)
        assert f"dana&#39;s account {words}" in said


def test_the_notice_is_never_text_from_the_url(tipline: Harness, admin: Person) -> None:
    queries = (
        "done=disable&user=nobody",
        "done=wire-money&user=alex",
        "done=<b>x</b>&user=alex",
        "done=disable&user=alex",
    )
    for query in queries:  # the last: alex exists, but nothing disabled the account
        page = admin.get(f"/console/admin/users?{query}").get_data(as_text=True)
        assert 'id="action-done"' not in page, query
    lure = "Your session expired: re-enter your password at https://evil.example"
    for path in ("/console/admin/keys?notice=", "/console/admin/keys?error=", "/console/admin/users?error="):
        assert "evil.example" not in admin.get(path + lure).get_data(as_text=True), path
    # while what the console itself said after an action is shown
    rotated = admin.post("/console/admin/keys/rotate", {"purpose": "nonsense"})
    assert "evil.example" not in rotated.location and "error_tag=" in rotated.location
    assert 'role="alert"' in admin.get(rotated.location).get_data(as_text=True)
    assert admin.get("/console/admin/users/nobody/disable").status_code == 404
    assert admin.get("/console/admin/users/alex/delete").status_code == 404


def test_a_key_rotation_asks_first(tipline: Harness, admin: Person) -> None:
    keys = admin.get("/console/admin/keys").get_data(as_text=True)
    assert 'method="get" action="/console/admin/keys/rotate"' in keys
    question = admin.get("/console/admin/keys/rotate?purpose=tips&reencrypt=1").get_data(as_text=True)
    assert "Rotate the tips key?" in question and "re-encrypt every row" in question
    assert 'name="reencrypt" value="1"' in question
    assert rotations(tipline) == 0  # asking started nothing
    assert admin.get("/console/admin/keys/rotate?purpose=nonsense").status_code == 302
    admin.post("/console/admin/keys/rotate", {"purpose": "tips"})
    assert rotations(tipline) == 1


def test_a_retired_key_shows_retired(tipline: Harness, admin: Person) -> None:
    ctx = tipline.runtime.ctx
    rotation.start(ctx, rotation.master_key(ctx), "tips", actor="alex")
    while tipline.runtime.rotate_some():
        pass
    rotation.retire(ctx, "tips", 1, actor="alex")
    page = admin.get("/console/admin/keys").get_data(as_text=True)
    row = page.split('data-key="tips-1"', 1)[1].split("</tr>", 1)[0]
    assert '<td data-label="State" class="key-state">retired</td>' in row
    row = page.split('data-key="tips-2"', 1)[1].split("</tr>", 1)[0]
    assert '<td data-label="State" class="key-state">primary</td>' in row


def entries_on(page: str) -> list[int]:
    return [int(chunk.split('"', 1)[0]) for chunk in page.split('data-entry="')[1:]]


def test_the_audit_log_pages_and_filters(tipline: Harness, admin: Person) -> None:
    ctx = tipline.runtime.ctx
    for n in range(85):
        audit.log_event(ctx, "tip.view", actor="dana" if n % 2 else "sam", object_type="tip", object_id=f"T-{n:06d}")
    total = audit.verify(ctx).entries + 1  # and the verification this page records

    first = admin.get("/console/admin/audit").get_data(as_text=True)
    assert 'data-intact="1"' in first  # the chain is still verified
    shown = entries_on(first)
    assert len(shown) == 50 and shown == sorted(shown, reverse=True)
    assert f"{total} entries, page 1 of 2" in first
    (next_page,) = re.findall(r'rel="next" href="([^"]+)"', first)
    assert next_page == f"/console/admin/audit?page=2&amp;upto={shown[0]}"
    # Entries logged meanwhile (this visit's own verification, other consoles) shift no page
    audit.log_event(ctx, "tips.list", actor="sam")
    second = entries_on(admin.get(next_page.replace("&amp;", "&")).get_data(as_text=True))
    assert len(second) == total - 50 and max(second) < min(shown)
    assert sorted(shown + second) == list(range(1, total + 1))

    by_dana = admin.get("/console/admin/audit?action=tip.view&actor=dana").get_data(as_text=True)
    assert "42 entries." in by_dana
    assert "page 1 of" not in by_dana
    assert 'href="/console/admin/audit?action=tip.view&amp;actor=dana&amp;page=2"' not in by_dana

    today = dt.datetime.now(dt.UTC).date()
    todays = admin.get(f"/console/admin/audit?since={today}&until={today}").get_data(as_text=True)
    assert f"{audit.verify(ctx).entries} entries" in todays
    yesterday = today - dt.timedelta(days=1)
    assert "0 entries" in admin.get(f"/console/admin/audit?until={yesterday}").get_data(as_text=True)
    assert "No entry matches" in admin.get(f"/console/admin/audit?until={yesterday}").get_data(as_text=True)
    # Malformed filters are ignored, never an error.
    assert admin.get("/console/admin/audit?since=yesterday&page=-3&actor=" + "x" * 500).status_code == 200
    assert admin.get("/console/admin/audit?until=9999-12-31&since=0001-01-01").status_code == 200


def test_admin_actions_ask_and_answer_without_javascript_on_a_phone(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    harness, base = live
    add_user(harness.runtime.ctx, "alex", ["admin"], PASSWORD)
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    for n in range(85):
        audit.log_event(harness.runtime.ctx, "tip.view", actor="dana", object_type="tip", object_id=f"T-{n:06d}")
    page: Any = browser.new_context(java_script_enabled=False, viewport=PHONE).new_page()
    page.goto(f"{base}/console/login")
    page.fill("input[name=username]", "alex")
    page.fill("input[name=password]", PASSWORD)
    page.check("input[name=ack]")
    page.click("button[type=submit]")
    page.wait_for_url(f"{base}/console/enrol")
    page.fill("input[name=code]", pyotp.TOTP(page.get_attribute("[data-totp-secret]", "data-totp-secret")).now())
    page.click("form.stack button[type=submit]")
    page.wait_for_url(f"{base}/console/admin/users")

    page.goto(f"{base}/console/admin/users")
    assert scroll_width(page) <= PHONE["width"]
    page.locator("tr[data-username=dana] a", has_text="Disable").click()
    page.wait_for_url(f"{base}/console/admin/users/dana/disable")
    assert page.locator("h1").inner_text() == "Disable dana's account?"
    assert scroll_width(page) <= PHONE["width"]
    page.click("button.confirm-action")
    page.wait_for_url(f"{base}/console/admin/users?**")
    assert page.locator("#action-done").inner_text() == "dana's account is disabled; their sessions ended."
    assert "disabled" in page.locator("tr[data-username=dana]").inner_text()

    page.goto(f"{base}/console/admin/keys")
    page.click("form[action$='/admin/keys/rotate'] button")
    page.locator("a", has_text="Cancel").click()  # changed my mind: nothing happens
    page.wait_for_url(f"{base}/console/admin/keys")
    page.click("form[action$='/admin/keys/rotate'] button")
    page.click("button.confirm-action")
    assert "Rotation of tips started" in page.locator(".notice").inner_text()

    for path in ("admin/users", "admin/keys", "admin/audit", "admin/audit?page=2", "admin/activity"):
        page.goto(f"{base}/console/{path}")
        assert scroll_width(page) <= PHONE["width"], path
    page.goto(f"{base}/console/admin/audit")
    page.locator("a[rel=next]").click()
    assert "page 2 of 2" in page.locator("#audit-count").inner_text()
