"""SMS segments: the GSM-7/UCS-2 rules, every bot text within two segments, replies in plain GSM-7."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import Harness
from tipline.core import segments
from tipline.core.catalog import CATALOGS, LANGUAGES, MAX_SEGMENTS, UNNAMED_AGENCY, worst_case
from tipline.services import review

ROOT = Path(__file__).resolve().parent.parent
# The longest settings an agency may reasonably have (catalog_defaults in tipline/config.py).
LONG_SETTINGS = {
    "agency": "Metropolitan Police Department of Example",  # 41 characters
    "non_emergency": "(555) 010-0199 ext. 1234",
    "victim_services": "the National Center for Victims of Crime, 1-855-484-2846",
}
DEFAULT_SETTINGS = {**LONG_SETTINGS, "agency": UNNAMED_AGENCY}

# (text, encoding, units, segments)
EXAMPLES = [
    ("", segments.GSM7, 0, 0),
    ("a" * 160, segments.GSM7, 160, 1),
    ("a" * 161, segments.GSM7, 161, 2),
    ("a" * 306, segments.GSM7, 306, 2),
    ("a" * 307, segments.GSM7, 307, 3),
    ("€" * 80, segments.GSM7, 160, 1),  # the extension table counts 2
    ("{}[]~^|\\", segments.GSM7, 16, 1),
    ("é ñ ü ¿ ¡ Ç Ø à", segments.GSM7, 15, 1),  # these accents are in the GSM alphabet
    ("a" * 159 + "á", segments.UCS2, 160, 3),  # ... these are not: one makes it UCS-2
    ("á" * 70, segments.UCS2, 70, 1),
    ("á" * 71, segments.UCS2, 71, 2),
    ("á" * 134, segments.UCS2, 134, 2),
    ("á" * 135, segments.UCS2, 135, 3),
    ("😀" * 35, segments.UCS2, 70, 1),  # an emoji is two UTF-16 code units
    ("😀" * 36, segments.UCS2, 72, 2),
    ("It’s here", segments.UCS2, 9, 1),  # a curly apostrophe is not GSM-7
    # A character is never split between parts: 152 + an escape pair does not fit in 153.
    ("a" * 152 + "€" * 77, segments.GSM7, 306, 3),
    ("a" * 66 + "😀" * 34, segments.UCS2, 134, 3),
]


@pytest.mark.parametrize("text,encoding,units,count", EXAMPLES)
def test_segments_follow_the_gsm7_and_ucs2_rules(text: str, encoding: str, units: int, count: int) -> None:
    assert segments.count(text) == segments.Count(encoding, len(text), units, count)


def test_the_console_script_counts_exactly_like_the_python() -> None:
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        pytest.skip("node is not installed (the browser test checks the counter in chromium)")
    script = (ROOT / "tipline" / "web" / "static" / "segments.js").read_text(encoding="utf-8")
    texts = [text for text, *_ in EXAMPLES] + ["“Quoted” – dash… and\u00a0space"]
    program = (
        "globalThis.document = {getElementById: () => null};\n"
        + script.replace("})(window);", "})(globalThis);")
        + "\nconst texts = JSON.parse(require('fs').readFileSync(0, 'utf8'));\n"
        "console.log(JSON.stringify(texts.map(t => [tiplineSegments.count(t), tiplineSegments.toGsm(t)])));\n"
    )
    out = subprocess.run([node, "-e", program], input=json.dumps(texts), capture_output=True, text=True, check=True)
    for text, (js, js_gsm) in zip(texts, json.loads(out.stdout), strict=True):
        python = segments.count(text)
        assert (js["encoding"], js["characters"], js["units"], js["segments"]) == (
            python.encoding,
            python.characters,
            python.units,
            python.segments,
        ), text
        assert js_gsm == segments.to_gsm(text)


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("settings", [LONG_SETTINGS, DEFAULT_SETTINGS], ids=["long names", "no agency name"])
def test_every_text_fits_in_two_segments_in_every_language(language: str, settings: dict[str, str]) -> None:
    too_long = {}
    for key in CATALOGS[language]:
        count = segments.count(worst_case(key, language, settings))
        if count.segments > MAX_SEGMENTS:
            too_long[key] = count
    assert too_long == {}


def test_the_worst_case_fills_every_placeholder() -> None:
    help_text = worst_case("help", "es", LONG_SETTINGS)
    assert LONG_SETTINGS["agency"] in help_text
    assert LONG_SETTINGS["victim_services"] in help_text
    assert "{" not in help_text
    assert "T-7K3Q9X" in worst_case("submitted", "pt", LONG_SETTINGS)


def test_typographic_characters_become_plain_gsm7() -> None:
    pasted = "“Are you safe?” – we’re here…\u00a0Call us\u2009back."
    plain = segments.to_gsm(pasted)
    assert plain == '"Are you safe?" - we\'re here... Call us back.'
    assert segments.encoding(plain) == segments.GSM7
    assert segments.to_gsm("¿Está bien? 😀") == "¿Está bien? 😀"  # meaning is kept: accents and emoji stay


def test_a_detectives_curly_quotes_reach_the_tipster_as_plain_gsm7(tipline: Harness) -> None:
    reference = tipline.submit_tip("A man sells stolen bikes from a blue garage on Birch Rd")
    review.reply(tipline.runtime.ctx, reference, "Thank you — is it the “blue” garage… the one by the school?")
    tipline.dispatch()
    body = tipline.twilio.sent[-1]["Body"]
    assert body == 'Example City Police: Thank you - is it the "blue" garage... the one by the school?'
    assert segments.count(body) == segments.Count(segments.GSM7, len(body), len(body), 1)


def test_the_reply_box_carries_the_counter(tipline: Harness) -> None:
    from tests.support.console import person

    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    dana.sign_in()
    reference = tipline.submit_tip("A man sells stolen bikes from a blue garage on Birch Rd")
    page = dana.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert 'id="reply-counter"' in page
    assert 'data-prefix="Example City Police: "' in page
    assert 'data-sms="1"' in page
    assert "/static/segments.js" in page
