"""The last-line log filter: phone numbers masked, addresses and counts kept."""

from __future__ import annotations

import pytest

from tests.support.anonymity import phone_formats
from tipline.logs import redact


@pytest.mark.parametrize("number", phone_formats("+15555550142")[:-1] + ["+44 20 7946 0958", "+34 612 34 56 78"])
def test_phone_numbers_in_any_format_are_masked(number: str) -> None:
    assert redact(f"sending to {number} now") == "sending to [redacted] now"


@pytest.mark.parametrize(
    "kept", ["Serving on http://127.0.0.1:8000", "outbox 59f5c18d done", "12 rows in 3.5 s", "port 54321"]
)
def test_addresses_and_small_numbers_are_kept(kept: str) -> None:
    assert redact(kept) == kept
