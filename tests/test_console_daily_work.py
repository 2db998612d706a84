"""Daily work on the tip list and tip page (issue 13 part 5): "Assign to me" and "Mine", the list by
latest activity, absolute local times beside relative ones, a language badge, live-added thread
entries that look like the others, and pages that fit a phone."""

from __future__ import annotations

import datetime as dt
import re
import shutil

import pytest
from sqlalchemy import select, update

from tests.support.console import Person, person
from tests.support.harness import Harness
from tests.test_console_browser import PASSWORD, browser, live, sign_in_first_time  # noqa: F401
from tipline.services import accounts
from tipline.storage.models import AuditEntry, Tip, utcnow

ZONE = "America/Chicago"
LOCAL_TIME = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d C[SD]T")
needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None and shutil.which("chromium-browser") is None, reason="chromium is not installed"
)


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TIPLINE_TIMEZONE": ZONE}


def signed_in(tipline: Harness, username: str) -> Person:
    someone = person(tipline.app, tipline.runtime.ctx, username)
    assert someone.sign_in().location.endswith("/console/")
    return someone


def at(tipline: Harness, minutes_ago: int) -> None:
    moment = utcnow() - dt.timedelta(minutes=minutes_ago)
    tipline.runtime.intake.clock = lambda: moment


def rows(someone: Person, query: str = "") -> list[str]:
    page = someone.get(f"/console/{query}").get_data(as_text=True)
    body = page.split("<tbody>")[1].split("</tbody>")[0]
    return [chunk.split('"')[0] for chunk in body.split('data-reference="')[1:]]


def test_assign_to_me_is_audited_and_mine_lists_my_tips_only(tipline: Harness) -> None:
    dana, sam = signed_in(tipline, "dana"), signed_in(tipline, "sam")
    first = tipline.submit_tip("Someone keeps breaking into cars on Pine St", sender="+15550001111")
    second = tipline.submit_tip("Loud music every night at 12 Oak St", sender="+15550002222")

    page = dana.get(f"/console/tips/{first}").get_data(as_text=True)
    assert 'id="assign-to-me"' in page
    done = dana.post(f"/console/tips/{first}/assign-to-me")
    after = dana.get(done.location).get_data(as_text=True)
    assert "Assigned to you." in after and "assigned to dana" in after
    assert 'id="assign-to-me"' not in after  # already mine
    sam.get(f"/console/tips/{second}")
    sam.post(f"/console/tips/{second}/assign-to-me")

    assert rows(dana, "?mine=1") == [first]
    assert rows(sam, "?mine=1") == [second]
    assert set(rows(dana)) == {first, second}
    assert "My tips" in dana.pages[-2]
    with tipline.runtime.factory() as session:
        triaged = session.scalars(select(AuditEntry).where(AuditEntry.action == "tip.triage")).all()
        assert [(e.actor, e.object_id) for e in triaged] == [("dana", first), ("sam", second)]
        assert all('"assignee"' in (e.detail or "") for e in triaged)


def test_the_list_sorts_by_latest_activity_of_tipster_replies_and_notes(tipline: Harness) -> None:
    dana = signed_in(tipline, "dana")
    at(tipline, 30)
    oldest = tipline.submit_tip("Someone keeps breaking into cars on Pine St", sender="+15550001111")
    at(tipline, 20)
    middle = tipline.submit_tip("Loud music every night at 12 Oak St", sender="+15550002222")
    at(tipline, 10)
    newest = tipline.submit_tip("A grey van parks behind the school at night", sender="+15550003333")
    assert rows(dana) == [newest, middle, oldest]

    # A detective's note is activity
    dana.get(f"/console/tips/{oldest}")
    dana.post(f"/console/tips/{oldest}/note", {"text": "Checked the cameras"})
    assert rows(dana) == [oldest, newest, middle]

    # A tipster's follow-up is activity; a keyword that adds nothing to the tip is not
    at(tipline, -1)  # a minute after the note
    tipline.say("He came back tonight, same van", sender="+15550002222")
    assert rows(dana) == [middle, oldest, newest]
    at(tipline, -2)
    tipline.say("STATUS", sender="+15550003333")
    assert rows(dana) == [middle, oldest, newest]


def test_times_are_absolute_and_local_beside_relative_ones_and_the_zone_is_stated(tipline: Harness) -> None:
    dana = signed_in(tipline, "dana")
    reference = tipline.submit_tip("Someone keeps breaking into cars on Pine St")
    listing = dana.get("/console/").get_data(as_text=True)
    assert f"Times in {ZONE}" in listing
    assert LOCAL_TIME.search(listing.split("<tbody>")[1])
    page = dana.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert page.count(f"Times in {ZONE}") == 1
    thread = page.split('id="thread"')[1].split("</ol>")[0]
    entries = thread.count('class="when"')
    assert entries >= 3 and len(LOCAL_TIME.findall(thread)) == entries


def test_a_language_badge_shows_the_language_the_tipster_writes_in(tipline: Harness) -> None:
    dana = signed_in(tipline, "dana")
    tipline.say("ES", sender="+15550001111")
    spanish = tipline.submit_tip("Venden drogas detrás de la escuela cada noche", sender="+15550001111")
    english = tipline.submit_tip("Someone keeps breaking into cars on Pine St", sender="+15550002222")
    with tipline.runtime.factory.begin() as session:  # a tip from before this version: no language known
        session.execute(update(Tip).where(Tip.reference == english).values(language=None))
    assert 'class="badge language"' in dana.get(f"/console/tips/{spanish}").get_data(as_text=True)
    assert ">Spanish<" in dana.pages[-1]
    assert 'class="badge language"' not in dana.get(f"/console/tips/{english}").get_data(as_text=True)
    listing = rows(dana)
    assert listing and 'title="Writes in Spanish">ES<' in dana.pages[-1]

    # The tipster switches language while following up: the badge follows
    tipline.say("EN", sender="+15550001111")
    with tipline.runtime.factory() as session:
        assert session.scalar(select(Tip.language).where(Tip.reference == spanish)) == "en"


@needs_chromium
def test_a_live_added_entry_looks_like_the_others(live, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    harness, base = live
    accounts.add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    reference = harness.submit_tip("Two men unload boxes from a grey van behind the pharmacy")
    tabs = browser.new_context()
    page = tabs.new_page()
    sign_in_first_time(page, base, "dana")
    page.goto(f"{base}/console/tips/{reference}")
    drawn = page.locator(".entry.tipster").first
    harness.say("They are back, the van is there now")
    fresh = page.locator(".entry.tipster.fresh")
    fresh.wait_for(timeout=10_000)
    assert fresh.locator(".who").inner_text() == drawn.locator(".who").inner_text()
    assert fresh.locator(".who").inner_text().startswith("Tipster ")
    assert re.fullmatch(r"(just now|1 min ago) " + LOCAL_TIME.pattern, fresh.locator(".when").inner_text())
    assert fresh.locator(".when .abs").count() == 1

    # A reply sent from another session appears live with its author, as on the page
    second = tabs.new_page()  # the same detective in another tab
    second.goto(f"{base}/console/tips/{reference}")
    second.fill("form[action$='/reply'] textarea", "Thank you. Which door?")
    second.click("form[action$='/reply'] button")
    reply = page.locator(".entry.agency.fresh")
    reply.wait_for(timeout=10_000)
    assert reply.locator(".who").inner_text() == "Reply by dana"
    assert LOCAL_TIME.search(reply.locator(".when").inner_text())


@needs_chromium
def test_the_list_and_a_tip_fit_a_phone_screen(live, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    harness, base = live
    accounts.add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    long_word = "Supercalifragilistic" * 8
    reference = harness.submit_tip(f"{long_word} behind https://example.invalid/{'a' * 120} at the garage")
    harness.say("Bleeding right now " + long_word, sender="+15550009999")  # an urgent draft too
    page = browser.new_page(viewport={"width": 390, "height": 844})
    sign_in_first_time(page, base, "dana")
    for path in ("/console/", f"/console/tips/{reference}", "/console/?mine=1"):
        page.goto(f"{base}{path}")
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, (path, width)


@needs_chromium
def test_an_urgent_message_reaches_an_open_list_at_once_and_is_worked_from_the_browser(live, browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    """The finding that opened issue 13, in the browser: an urgent first message was invisible for
    31 minutes. A detective with the list open sees it arrive on top, opens it while the tipster is
    still writing, answers, and downloads the case file."""
    harness, base = live
    accounts.add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    older = harness.submit_tip("Two men unload boxes from a grey van behind the pharmacy")
    page = browser.new_context(accept_downloads=True).new_page()
    sign_in_first_time(page, base, "dana")
    page.goto(f"{base}/console/")
    assert page.locator("tbody tr").first.get_attribute("data-reference") == older

    witness = "+15555550188"
    harness.say("Someone is bleeding in the parking lot of the Shell station on 5th right now", sender=witness)
    first = page.locator("tbody tr").first
    first.locator(".badge.urgent").wait_for(timeout=15_000)  # the list reloads itself when tips arrive
    reference = first.get_attribute("data-reference")
    assert reference != older

    first.locator("a").first.click()
    assert page.locator("#draft-note").is_visible()  # still being written, shown because urgent
    page.fill("form[action$='/reply'] textarea", "Help is on the way. Are you safe?")
    page.click("form[action$='/reply'] button")
    page.locator(".entry.agency").last.wait_for(timeout=10_000)
    harness.dispatch()
    assert harness.twilio.sent[-1]["Body"].endswith("Help is on the way. Are you safe?")

    harness.say("yes, I am inside the station shop", sender=witness)  # the thread grows live
    page.locator(".entry.tipster.fresh", has_text="inside the station shop").wait_for(timeout=15_000)

    with page.expect_download() as download:
        page.get_by_text("Download the case file (PDF)").click()
    assert download.value.suggested_filename == f"{reference}-case-file.pdf"
