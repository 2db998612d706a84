"""Search in a real browser: a detective types words into "Search" and sees the matching rows,
each with its one-line excerpt (Playwright driving chromium against a live server)."""

from __future__ import annotations

from tests.support.harness import Harness
from tests.test_console_browser import PASSWORD, browser, live, sign_in_first_time  # noqa: F401 (fixtures)
from tipline.services.accounts import add_user


def test_a_detective_searches_by_words_and_by_reference(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    harness, base = live
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    cafe = harness.submit_tip("José sells pills from the back of the Café Luna on Pine St", sender="+16035550101")
    van = harness.submit_tip("A white van with no plates parks behind the school at night", sender="+16035550102")
    page = browser.new_page()
    sign_in_first_time(page, base, "dana")

    # Given the list, when dana searches two words typed without accents and in capitals ...
    page.get_by_label("Search").fill("JOSE cafe")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(f"{base}/console/?*")
    # ... then only that tip is listed, with the start of what the tipster said under its reference.
    rows = page.locator("tr[data-reference]")
    assert rows.count() == 1
    assert rows.first.get_attribute("data-reference") == cafe
    assert rows.first.locator(".excerpt").inner_text().startswith("José sells pills from the back")

    # A reference typed without "T-" and in lower case opens the tip at once. Without its "t", six
    # characters count as a reference only with a digit among them ("bmw" is a word, see
    # core/search.py); a reference drawn without one (about 1 in 7) is typed as "t" and the six.
    body = van.removeprefix("T-").lower()
    page.get_by_label("Search").fill(body if any(c.isdigit() for c in body) else "t" + body)
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(f"{base}/console/tips/{van}")
