"""The case file: one tip as a PDF a detective can file, print or hand to a prosecutor.

What goes in is read by `review.read_for_export`, which audits the export ("tip.export") in the
same transaction; the PDF is made from that in memory (photos too: never a temporary file) by
`casefile_pdf`. Times are absolute, in the agency's time zone (TIPLINE_TIMEZONE), which the
document names. Nothing about the tipster beyond the console's alias and channel goes in.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from dataclasses import dataclass

from tipline.services import casefile_pdf, review
from tipline.services.context import ServiceContext


@dataclass(frozen=True)
class CaseFile:
    filename: str  # named after the reference only
    data: bytes  # the PDF


def export(ctx: ServiceContext, reference: str, *, actor: str) -> CaseFile:
    """The tip's case file as a PDF; raises review.TipNotFound. Audited before any byte is made."""
    content = review.read_for_export(ctx, reference, actor=actor)
    zone = zoneinfo.ZoneInfo(ctx.settings.timezone)
    # To the minute, like every time the document shows: the PDF's metadata says no more than that.
    exported_at = ctx.now().replace(second=0, microsecond=0, tzinfo=dt.UTC)
    data = casefile_pdf.render(
        content,
        casefile_pdf.Frame(
            agency=ctx.settings.agency_name,
            zone=zone,
            zone_name=ctx.settings.timezone,
            exported_by=actor,
            exported_at=exported_at,
        ),
    )
    return CaseFile(f"{content.detail.summary.reference}-case-file.pdf", data)
