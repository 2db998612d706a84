"""Twilio's delivery reports: every status it sends is kept, beside the dispatcher's own lifecycle.

Before, a report overwrote the outbox row's lifecycle status with Twilio's word, and
`partially_delivered` (19 characters) did not fit the 12-character column on PostgreSQL.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support.harness import Harness
from tipline.core.vocabulary import DeliveryStatus, OutboxKind, OutboxStatus, ReplyDelivery
from tipline.services import review
from tipline.storage.models import OutboxItem


def sent_reply(tipline: Harness) -> tuple[str, str]:
    """A detective's reply, sent by the dispatcher; returns the tip's reference and Twilio's sid."""
    reference = tipline.submit_tip()
    review.reply(tipline.runtime.ctx, reference, "Which car was it?")
    tipline.dispatch()
    return reference, tipline.twilio.sent[-1]["_sid"]


def reply_row(tipline: Harness) -> OutboxItem:
    with tipline.runtime.factory() as session:
        return session.scalars(
            select(OutboxItem).where(OutboxItem.kind == OutboxKind.SEND, OutboxItem.message_id.is_not(None))
        ).one()


@pytest.mark.parametrize("status", list(DeliveryStatus), ids=str)
def test_every_twilio_status_is_stored_and_shown(tipline: Harness, status: DeliveryStatus) -> None:
    reference, sid = sent_reply(tipline)

    response = tipline.status_callback(sid, status.value)

    assert response.status_code == 200
    row = reply_row(tipline)
    assert row.provider_status == status.value
    assert row.status == OutboxStatus.SENT  # the dispatcher's lifecycle is its own
    assert row.payload_ct == b""  # the text went: it lives on in the thread only
    thread = review.read_tip(tipline.runtime.ctx, reference).thread
    assert thread[-1].delivery == status.shown


def test_a_late_report_does_not_undo_a_final_one(tipline: Harness) -> None:
    reference, sid = sent_reply(tipline)

    tipline.status_callback(sid, "delivered")
    tipline.status_callback(sid, "sent")  # Twilio does not promise the order of its callbacks

    assert reply_row(tipline).provider_status == DeliveryStatus.DELIVERED
    assert review.read_tip(tipline.runtime.ctx, reference).thread[-1].delivery == ReplyDelivery.DELIVERED


def test_an_unknown_status_is_refused_as_malformed(tipline: Harness) -> None:
    _, sid = sent_reply(tipline)

    response = tipline.status_callback(sid, "teleported")

    assert response.status_code == 400
    assert reply_row(tipline).provider_status is None
