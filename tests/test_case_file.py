"""The case file: a tip exported as PDF through the console, read back with pypdf; and the print stylesheet.

A detective downloads the case file of a tip written in Spanish, Portuguese and Haitian Creole with
photos, a reply and a note: the PDF holds all of it with local times, embeds each cleaned photo at its
stored size, lists who viewed or changed the tip, is audited, leaves no temporary file, and carries
nothing of the tipster's number, in its text, its metadata or anywhere else the tip line wrote.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import tempfile
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path

import pytest
from pypdf import PdfReader
from sqlalchemy import select

from tests.support import samples
from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.console import Person, person
from tests.support.harness import CARRIER_CITY, CARRIER_ZIP, TIPSTER, Harness, new_sid, photos, replies
from tests.test_console_browser import CHROMIUM, PASSWORD, browser, live, sign_in_first_time  # noqa: F401 (fixtures)
from tipline.core.vocabulary import AttachmentStatus
from tipline.services import review
from tipline.services.accounts import add_user
from tipline.storage.models import AuditEntry

ZONE = "America/Chicago"
SPANISH = "El señor de la camioneta vende drogas detrás de la farmacia, ¿sabe? Mañana también"
PORTUGUESE = "Ele está lá à tarde com o irmão, perto da estação São João"
CREOLE = "Mwen wè l' ankò jodi a, li te nan machin nan devan lekòl la"
NOTE = "Pasar a narcóticos: vigilancia el jueves"
REPLY = "Gracias. ¿A qué hora llega la camioneta?"


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    """The tip line of an agency in Chicago: the case file's times are Central time."""
    return {**env, "TIPLINE_TIMEZONE": ZONE}


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A temporary directory of our own, which the export must leave empty: photos are decrypted
    in memory only. (`tempfile.tempdir` is reset so that Python reads TMPDIR again.) Not for the
    browser test: chromium keeps its profile there."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setattr(tempfile, "tempdir", None)
    yield tmp
    assert list(tmp.iterdir()) == [], "the case file export wrote a temporary file"


@pytest.fixture
def detective(tipline: Harness, private_tmp: Path) -> Person:
    """Dana, signed in; every test that downloads a case file checks it left no temporary file."""
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    assert dana.sign_in().location.endswith("/console/")
    return dana


def mms(tipline: Harness, body: str, files: list[tuple[bytes, str]]) -> list[str]:
    """The tipster sends photos by MMS (stored at the stand-in Twilio); the bot's replies."""
    sid = new_sid("MM")
    media: dict[str, str] = {"NumMedia": str(len(files))}
    for n, (data, content_type) in enumerate(files):
        media[f"MediaUrl{n}"] = tipline.twilio.add_media(sid, data, content_type)
        media[f"MediaContentType{n}"] = content_type
    return replies(tipline.sms(body, sid=sid, **media))


def text_of(pdf: bytes) -> str:
    return "\n".join(page.extract_text() for page in PdfReader(io.BytesIO(pdf)).pages)


def image_sizes(pdf: bytes) -> list[tuple[int, int]]:
    return [image.image.size for page in PdfReader(io.BytesIO(pdf)).pages for image in page.images]


def local(moment: dt.datetime) -> str:
    return moment.replace(tzinfo=dt.UTC).astimezone(zoneinfo.ZoneInfo(ZONE)).strftime("%Y-%m-%d %H:%M %Z")


def worked_tip(tipline: Harness, detective: Person) -> str:
    """A tip in three languages with two photos, a delivered reply, a note and triage; its reference."""
    reference = tipline.submit_tip(SPANISH)
    tipline.say(PORTUGUESE)
    tipline.say(CREOLE)
    mms(tipline, "", [(samples.camera_jpeg(6).data, "image/jpeg"), (samples.png_with_chunks().data, "image/png")])
    tipline.dispatch()
    assert [a.status for a in photos(tipline)] == [AttachmentStatus.STORED, AttachmentStatus.STORED]
    detective.get(f"/console/tips/{reference}")
    assert detective.post(f"/console/tips/{reference}/reply", {"text": REPLY}).status_code == 302
    tipline.dispatch()
    tipline.status_callback(tipline.twilio.sent[-1]["_sid"], "delivered")
    assert detective.post(f"/console/tips/{reference}/note", {"text": NOTE}).status_code == 302
    triage = {"status": "in_review", "category": "drugs", "assignee": ""}
    assert detective.post(f"/console/tips/{reference}/triage", triage).status_code == 302
    assert detective.post(f"/console/tips/{reference}/urgent", {"urgent": "1"}).status_code == 302
    return reference


def test_a_detective_downloads_the_whole_case_file_as_pdf(tipline: Harness, detective: Person, tmp_path: Path) -> None:
    reference = worked_tip(tipline, detective)
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert f"/console/tips/{reference}/case-file.pdf" in page  # the link beside the title

    response = detective.get(f"/console/tips/{reference}/case-file.pdf")

    assert response.status_code == 200
    assert response.content_type == "application/pdf"
    assert response.headers["Content-Disposition"] == f'attachment; filename="{reference}-case-file.pdf"'
    assert response.headers["Cache-Control"] == "no-store"
    pdf = response.get_data()
    text = text_of(pdf)
    flat = " ".join(text.split())
    # The facts, with the status and category as triaged
    assert f"Case file {reference}" in flat
    assert "In review" in flat and "drugs" in flat
    # The whole thread, accents intact, with who wrote what and the reply's delivery
    for words in (SPANISH, PORTUGUESE, CREOLE, REPLY, NOTE):
        assert words in flat, words
    assert "Reply by dana, delivered" in flat
    assert "Internal note by dana" in flat
    assert "Bot (automatic answer)" in flat
    # Absolute times in the agency's zone, which the document names
    detail = review.read_tip(tipline.runtime.ctx, reference, mark_read=False)
    assert detail.summary.submitted_at is not None
    assert local(detail.summary.submitted_at) in flat
    assert local(detail.thread[-1].at) in flat
    assert f"All times are in {ZONE} (CST)" in flat
    # Who viewed or changed it, this export included
    for action in ("viewed the tip (tip.view)", "replied to the tipster (tip.reply)", "added a note (tip.note)"):
        assert f"dana {action}" in flat, action
    assert "dana changed (tip.triage): category from none to drugs; status from new to in_review" in flat
    assert "dana changed urgency (tip.urgent): marked urgent" in flat
    assert flat.endswith("dana exported the case file (tip.export)")
    # Each cleaned photo, embedded at the size it was stored
    stored = [(a.width, a.height) for a in photos(tipline)]
    assert stored[0] == (64, 96)
    assert sorted(image_sizes(pdf)) == sorted(stored)

    # Audited: one entry naming the entries and photos exported
    with tipline.runtime.factory() as session:
        exports = session.scalars(select(AuditEntry).where(AuditEntry.action == "tip.export")).all()
    assert [(e.actor, e.object_id) for e in exports] == [("dana", reference)]
    assert json.loads(exports[0].detail)["entries"] == [detail.thread[0].seq, detail.thread[-1].seq]
    assert json.loads(exports[0].detail)["photos"] == 2

    # The metadata says nothing of the tipster, and no time finer than the minute
    info = PdfReader(io.BytesIO(pdf)).metadata
    assert info is not None
    assert info.title == f"Case file {reference}"
    assert info.author == "Example City Police"
    assert info.producer == "tipline" and info.creator == "tipline"
    assert info.get("/CreationDate", "").endswith("00+00'00'")
    assert info.get("/ModDate") == info.get("/CreationDate")

    # Nothing of the tipster's number or carrier details: in the PDF, its text, its metadata,
    # the database, the data directory, the logs
    needles = [*phone_formats(TIPSTER), CARRIER_CITY, CARRIER_ZIP]
    (tmp_path / "case-file.pdf").write_bytes(pdf)
    (tmp_path / "case-file.txt").write_text(text + json.dumps(dict(info)), encoding="utf-8")
    extra = [tmp_path / "case-file.pdf", tmp_path / "case-file.txt", tipline.log_file]
    assert scan_files(tipline.data_dir, needles, extra_files=extra) == []
    assert scan_database(tipline.runtime.engine, needles) == []


def test_only_signed_in_detectives_export_and_only_tips_that_exist(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(SPANISH)
    alex = person(tipline.app, tipline.runtime.ctx, "alex", roles=("admin",))
    assert alex.sign_in().location.endswith("/console/admin/users")

    assert alex.get(f"/console/tips/{reference}/case-file.pdf").status_code == 403
    assert detective.get("/console/tips/T-ZZZZZZ/case-file.pdf").status_code == 404
    signed_out = tipline.app.test_client().get(f"/console/tips/{reference}/case-file.pdf")
    assert signed_out.status_code == 302

    with tipline.runtime.factory() as session:
        assert session.scalars(select(AuditEntry).where(AuditEntry.action == "tip.export")).all() == []


def test_long_words_wrap_and_missing_glyphs_are_written_as_code_points(tipline: Harness, detective: Person) -> None:
    link = "https://example.org/" + "abcdefghij" * 40  # 420 characters without a space
    reference = tipline.submit_tip("Look at this " + link)
    tipline.say("Он там сейчас 🔪 with a knife")

    pdf = detective.get(f"/console/tips/{reference}/case-file.pdf").get_data()

    text = text_of(pdf)
    # Broken across lines rather than run off the page: the word is whole once line breaks are removed
    assert link not in text
    assert link in text.replace("\n", "")
    # Cyrillic and the emoji are not in the font: written as code points, and the document says why
    assert "[U+041E][U+043D]" in text and "[U+1F52A]" in text
    assert "code point" in text


def test_a_long_thread_with_photos_exports_in_reasonable_time(
    tipline: Harness, detective: Person, capsys: pytest.CaptureFixture[str]
) -> None:
    reference = tipline.submit_tip(SPANISH)
    pictures = [(samples.jpeg_bytes((320 + 40 * n, 240)), "image/jpeg") for n in range(5)]
    mms(tipline, "", pictures)
    tipline.dispatch()
    ctx = tipline.runtime.ctx
    for n in range(60):
        tipline.say(f"Detalle número {n}: {CREOLE}")
    while len(review.read_tip(ctx, reference, mark_read=False).thread) < 300:
        review.add_note(ctx, reference, f"Nota {time.monotonic_ns()}: {PORTUGUESE} " * 3, actor="dana")

    started = time.perf_counter()
    response = detective.get(f"/console/tips/{reference}/case-file.pdf")
    seconds = time.perf_counter() - started

    assert response.status_code == 200
    pdf = response.get_data()
    reader = PdfReader(io.BytesIO(pdf))
    assert len(image_sizes(pdf)) == 5
    entries = len(review.read_tip(ctx, reference, mark_read=False).thread)
    with capsys.disabled():
        size = f"{len(reader.pages)} pages, {len(pdf) // 1024} KiB"
        print(f"\ncase file: {entries} entries, 5 photos -> {size} in {seconds:.2f} s")


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_a_printed_tip_page_has_the_thread_and_no_console_around_it(live: tuple[Harness, str], browser) -> None:  # type: ignore[no-untyped-def]  # noqa: F811
    harness, base = live
    add_user(harness.runtime.ctx, "dana", ["detective"], PASSWORD)
    reference = harness.submit_tip(SPANISH)
    page = browser.new_page()
    sign_in_first_time(page, base, "dana")
    page.goto(f"{base}/console/tips/{reference}")
    page.fill("form[action$='/note'] textarea", NOTE)
    page.click("form[action$='/note'] button")
    assert page.locator(".notice").is_visible()  # "Note added.", on screen
    assert page.locator("header.bar nav").is_visible() and page.locator("form").first.is_visible()

    page.emulate_media(media="print")

    # No navigation, forms, buttons, live notices or the export link on paper
    for selector in ("header.bar", "nav", ".skip", ".notice", ".case-file", "button"):
        assert all(not element.is_visible() for element in page.locator(selector).all()), selector
    assert all(not form.is_visible() for form in page.locator("form").all())
    # The thread is there, in black on white, and links print without their address after them
    thread = page.locator("#thread")
    assert SPANISH in thread.inner_text() and NOTE in thread.inner_text()
    colours = page.evaluate(
        """() => [...document.querySelectorAll('.entry, .entry .text, main')].map(e => {
             const s = getComputedStyle(e); return [s.color, s.backgroundColor]; })"""
    )
    assert {colour for colour, _ in colours} == {"rgb(0, 0, 0)"}
    assert {background for _, background in colours} <= {"rgb(255, 255, 255)", "rgba(0, 0, 0, 0)"}
    after = page.evaluate("() => getComputedStyle(document.querySelector('main a[href]'), '::after').content")
    assert after in ("none", "normal")
