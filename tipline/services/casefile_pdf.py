"""Lay a case file out as PDF with ReportLab (BSD, pure Python), entirely in memory.

The text font is Bitstream Vera, the TrueType font ReportLab ships: it covers Latin-1 and more, so
Spanish, Portuguese and Haitian Creole accents render, unlike the 14 built-in PDF fonts whose
encoding cannot be relied on for them. A character the font lacks (emoji, Cyrillic, Arabic, Chinese,
...) would print as an empty box and be lost as evidence, so it is written as its code point instead,
e.g. "[U+1F52A]", and the document says so; the console shows the original.
"""

from __future__ import annotations

import datetime as dt
import io
import zoneinfo
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import cm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    CondPageBreak,
    Flowable,
    Image,
    KeepTogether,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

from tipline.core.times import local_time
from tipline.core.vocabulary import AttachmentStatus, MessageKind, ReplyDelivery
from tipline.services.audit import AuditLine
from tipline.services.review import STATUS_LABELS, CaseContent, ThreadEntry, who_wrote

FONT, BOLD = "TiplineVera", "TiplineVera-Bold"
PHOTO_BOX = (12 * cm, 9 * cm)  # the largest a photo is drawn; the embedded image keeps its own pixels
MARGIN = 2 * cm
TEXT_WIDTH = A4[0] - 2 * MARGIN - 10  # a thread entry's text (indented 10 points)
KEEP_WHOLE = 8 * 13  # points (8 lines): a thread entry's text up to this tall is never split across pages
ORPHAN_ROOM = 3 * cm  # a long entry with less room than this left on a page starts on the next
PHOTO_ZOOM = 3.0  # small photos are drawn larger, up to this many points per pixel
WHITESPACE = {"\n", "\t", " "}
# The audit log's actions in words; the code follows in brackets, for an auditor comparing with the log.
ACTIONS = {
    "tip.view": "viewed the tip",
    "tip.photo_view": "viewed a photo",
    "tip.photo_download": "downloaded a photo",
    "tip.reply": "replied to the tipster",
    "tip.note": "added a note",
    "tip.triage": "changed",
    "tip.urgent": "changed urgency",
    "tip.mute_sender": "muted the sender",
    "tip.unmute_sender": "unmuted the sender",
    "tip.export": "exported the case file",
}


@dataclass(frozen=True)
class Frame:
    """What surrounds the tip in the document: who exported it, when, and in which time zone."""

    agency: str
    zone: zoneinfo.ZoneInfo
    zone_name: str  # the IANA name (TIPLINE_TIMEZONE), stated in the document
    exported_by: str
    exported_at: dt.datetime  # aware, to the minute

    def local(self, moment: dt.datetime | None) -> str:
        """A stored UTC time as the console shows it absolute: "2026-12-03 07:45 CST"."""
        return local_time(moment, self.zone)


@cache
def _glyphs() -> frozenset[int]:
    """Register the fonts once; the code points the text font can draw."""
    regular = TTFont(FONT, "Vera.ttf")
    pdfmetrics.registerFont(regular)
    pdfmetrics.registerFont(TTFont(BOLD, "VeraBd.ttf"))
    return frozenset(regular.face.charToGlyph)


def _drawable(text: str) -> tuple[str, bool]:
    """The text with each character the font lacks written as its code point; whether any was."""
    glyphs = _glyphs()
    out = [ch if ord(ch) in glyphs or ch in WHITESPACE else f"[U+{ord(ch):04X}]" for ch in text]
    return "".join(out), any(len(piece) > 1 for piece in out)


class _Styles:
    def __init__(self) -> None:
        _glyphs()
        # splitLongWords (ReportLab's default, stated here on purpose): a word longer than the line,
        # such as a pasted link, is broken rather than run off the page.
        base = ParagraphStyle("body", fontName=FONT, fontSize=10, leading=13, splitLongWords=1)
        self.body = base
        self.title = ParagraphStyle("title", base, fontName=BOLD, fontSize=18, leading=22, spaceAfter=6)
        self.heading = ParagraphStyle(
            "heading", base, fontName=BOLD, fontSize=13, leading=16, spaceBefore=12, keepWithNext=1
        )
        self.small = ParagraphStyle("small", base, fontSize=8.5, leading=11, textColor=colors.HexColor("#333333"))
        self.who = ParagraphStyle("who", base, fontName=BOLD, fontSize=9, leading=12, spaceBefore=6)
        self.text = ParagraphStyle("text", base, leftIndent=10)


class _Writer:
    """Turns text into paragraphs, noting whether any character had to be written as a code point."""

    def __init__(self) -> None:
        self.styles = _Styles()
        self.substituted = False

    def para(self, text: str, style: ParagraphStyle | None = None) -> Paragraph:
        drawable, substituted = _drawable(text)
        self.substituted = self.substituted or substituted
        markup = escape(drawable).replace("\n", "<br/>")
        return Paragraph(markup, style or self.styles.body)


def _who(entry: ThreadEntry, alias: str) -> str:
    """Who wrote an entry as the console says it, and on paper what the console shows beside it."""
    who = who_wrote(entry, alias)
    if entry.kind == MessageKind.BOT:
        return f"{who} (automatic answer)"
    if entry.kind == MessageKind.AGENCY:
        return f"{who}, {entry.delivery or ReplyDelivery.QUEUED}"
    if entry.kind == MessageKind.NOTE:
        return f"{who} (never sent)"
    return who


def _photo(data: bytes, width: int, height: int) -> Image:
    scale = min(PHOTO_BOX[0] / width, PHOTO_BOX[1] / height, PHOTO_ZOOM)
    # From memory: ReportLab reads the bytes through Pillow and embeds them; no file is written.
    return Image(io.BytesIO(data), width=width * scale, height=height * scale, hAlign="LEFT")


def _media(entry: ThreadEntry, photos: dict[int, bytes], w: _Writer) -> list[Flowable]:
    a = entry.attachment
    if a is None:
        return [w.para("A file whose record is missing.", w.styles.text)]
    data = photos.get(entry.seq)
    if a.status == AttachmentStatus.STORED and data and a.width and a.height:
        caption = f"Photo, {a.width}×{a.height} pixels, cleaned: location, camera and other hidden details removed."
        return [_photo(data, a.width, a.height), w.para(caption, w.styles.small), Spacer(1, 4)]
    if a.status == AttachmentStatus.REFUSED:
        return [w.para(f"A file that was not kept ({a.reason or 'refused'}).", w.styles.text)]
    return [w.para(f"A photo that is not stored ({a.status}).", w.styles.text)]


def _thread(content: CaseContent, frame: Frame, w: _Writer) -> Iterator[Flowable]:
    alias = content.detail.summary.alias
    for entry in content.detail.thread:
        header = w.para(f"{entry.seq}. {frame.local(entry.at)} · {_who(entry, alias)}", w.styles.who)
        if entry.kind == MessageKind.MEDIA:
            yield KeepTogether([header, *_media(entry, content.photos, w)])
            continue
        text = w.para(entry.text, w.styles.text)
        if text.wrap(TEXT_WIDTH, A4[1])[1] <= KEEP_WHOLE:
            yield KeepTogether([header, text])  # a short entry is never split across pages
        else:
            # A long text starts where it falls and runs over to the next page, rather than leaving
            # most of a page blank; only with less than ORPHAN_ROOM left does it start on the next.
            yield CondPageBreak(ORPHAN_ROOM)
            yield header
            yield text


def _notes(content: CaseContent, frame: Frame, w: _Writer) -> Iterator[Flowable]:
    notes = [e for e in content.detail.thread if e.kind == MessageKind.NOTE]
    if not notes:
        yield w.para("No internal notes.")
    for note in notes:
        yield w.para(f"{frame.local(note.at)} · {note.author or 'a detective'}", w.styles.who)
        yield w.para(note.text, w.styles.text)


def _change(line: AuditLine) -> str:
    """A triage entry's changes ("status from new to in_review"); other entries carry nothing to show."""
    parts = []
    for name, value in sorted(line.detail.items()):
        if name == "assignee":
            parts.append("assignee changed")  # the log holds account ids, which mean nothing on paper
        elif isinstance(value, list) and len(value) == 2 and name in ("status", "category"):
            old, new = (str(v).replace("None", "none") for v in value)
            parts.append(f"{name} from {old} to {new}")
        elif isinstance(value, list) and len(value) == 2 and name == "urgent":
            parts.append("marked urgent" if str(value[1]) == "True" else "no longer urgent")
    return "; ".join(parts)


def _history(lines: Iterable[AuditLine], frame: Frame, w: _Writer) -> Table:
    rows: list[list[Flowable]] = [[w.para(h, w.styles.who) for h in ("When", "Who", "What")]]
    for line in lines:
        what = f"{ACTIONS.get(line.action, line.action)} ({line.action})"
        what += "" if line.outcome == "ok" else f", {line.outcome}"
        change = _change(line)
        rows.append(
            [
                w.para(frame.local(line.at), w.styles.small),
                w.para(line.actor or "the system", w.styles.small),
                w.para(f"{what}: {change}" if change else what, w.styles.small),
            ]
        )
    table = Table(rows, colWidths=[4.2 * cm, 3.8 * cm, 9 * cm], repeatRows=1, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("VALIGN", (0, 0), (-1, -1), "TOP"),
                ("LINEBELOW", (0, 0), (-1, 0), 0.75, colors.black),
                ("LINEBELOW", (0, 1), (-1, -1), 0.25, colors.HexColor("#999999")),
            ]
        )
    )
    return table


def _facts(content: CaseContent, frame: Frame, w: _Writer) -> Table:
    s = content.detail.summary
    status = STATUS_LABELS.get(s.status, s.status)
    facts = [
        ("Reference", s.reference),
        ("Status", status + (" · URGENT" if s.urgent else "")),
        ("Category", s.category or "none"),
        ("Assigned to", s.assignee or "nobody"),
        ("Tipster", f"{s.alias}, by {s.channel}"),
        ("Received", frame.local(s.submitted_at)),
        ("Last activity", frame.local(s.active_at or s.updated_at)),  # as the console's list orders tips
        ("What", content.detail.what or "—"),
        ("Where", content.detail.where or "not given"),
        ("When", content.detail.when or "not given"),
    ]
    rows = [[w.para(k, w.styles.who), w.para(v)] for k, v in facts]
    table = Table(rows, colWidths=[3.5 * cm, 13.5 * cm], hAlign="LEFT")
    table.setStyle(TableStyle([("VALIGN", (0, 0), (-1, -1), "TOP")]))
    return table


def _story(content: CaseContent, frame: Frame, w: _Writer) -> list[Flowable]:
    reference = content.detail.summary.reference
    story: list[Flowable] = [
        w.para(f"Case file {reference}", w.styles.title),
        w.para(
            f"{frame.agency}. Confidential: an anonymous tip. Exported by {frame.exported_by} on "
            f"{frame.local(frame.exported_at)}. All times are in {frame.zone_name} "
            f"({frame.exported_at.astimezone(frame.zone).strftime('%Z')}).",
            w.styles.small,
        ),
        Spacer(1, 8),
        _facts(content, frame, w),
        w.para("Thread", w.styles.heading),
        *_thread(content, frame, w),
        w.para("Internal notes", w.styles.heading),
        *_notes(content, frame, w),
        w.para("Who viewed or changed this tip", w.styles.heading),
        _history(content.history, frame, w),
    ]
    if w.substituted:
        story.append(Spacer(1, 8))
        story.append(
            w.para(
                "Some characters (such as emoji or scripts this document's font lacks) are written as their "
                "code point, e.g. [U+1F600]; the console shows them as sent.",
                w.styles.small,
            )
        )
    return story


def render(content: CaseContent, frame: Frame) -> bytes:
    """The case file as PDF bytes. Its metadata names the reference and the agency only, and its
    dates are the export's minute (ReportLab's invariant mode, so no clock reading leaks otherwise)."""
    reference = content.detail.summary.reference
    out = io.BytesIO()
    doc = SimpleDocTemplate(
        out,
        pagesize=A4,
        leftMargin=MARGIN,
        rightMargin=MARGIN,
        topMargin=MARGIN,
        bottomMargin=MARGIN,
        title=f"Case file {reference}",
        author=frame.agency,
        subject="Anonymous tip case file",
        creator="tipline",
        producer="tipline",
        invariant=1,
    )
    stamp = frame.exported_at.astimezone(dt.UTC).strftime("D:%Y%m%d%H%M00+00'00'")

    def page(canvas: Canvas, _: SimpleDocTemplate) -> None:
        canvas.setDateFormatter(lambda *_: stamp)
        canvas.setFont(FONT, 8)
        canvas.drawString(2 * cm, 1.2 * cm, f"Case file {reference} · confidential · page {canvas.getPageNumber()}")

    writer = _Writer()
    doc.build(_story(content, frame, writer), onFirstPage=page, onLaterPages=page)
    return out.getvalue()
