"""Run axe-core in a Playwright page, offline, and report its violations readably.

axe-core (Deque, MPL-2.0) comes as `axe.min.js` inside the `axe-playwright-python` test dependency
(MIT), so the tests need no network and no npm. Only the file is used: the rules, tags and report
below are ours. The script is evaluated through the DevTools protocol (`page.evaluate`), which the
pages' Content-Security-Policy (`script-src 'self'`, no inline script) does not govern, whereas a
`<script>` tag added to the page would be refused by it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

# WCAG 2.0, 2.1 and 2.2 at levels A and AA, and Deque's best practices (landmarks, headings, ...).
TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


@cache
def axe_source() -> str:
    return resources.files("axe_playwright_python").joinpath("axe.min.js").read_text(encoding="utf-8")


def violations(page: Any) -> list[dict[str, Any]]:
    """axe's violations on the page as it is now (an empty list when it passes)."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(axe_source())
    result = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        TAGS,
    )
    return list(result["violations"])


def report(found: list[dict[str, Any]]) -> str:
    """One paragraph per rule: what is wrong, and the elements (selector and why) that break it."""
    lines = []
    for violation in found:
        lines.append(f"{violation['id']} ({violation['impact']}): {violation['help']} <{violation['helpUrl']}>")
        for node in violation["nodes"]:
            target = " ".join(str(part) for part in node["target"])
            lines.append(f"    {target}: {node['failureSummary'].replace(chr(10), ' ')}")
    return "\n".join(lines)


def assert_accessible(page: Any, where: str) -> None:
    """Fail with a readable list of every axe violation on the page."""
    found = violations(page)
    assert not found, f"axe-core found {len(found)} violation(s) on {where}:\n{report(found)}"


def scroll_width(page: Any) -> int:
    """How wide the page's content is: more than the viewport means a sideways scroll on a phone."""
    return int(page.evaluate("() => document.documentElement.scrollWidth"))
