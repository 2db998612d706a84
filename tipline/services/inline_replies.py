"""The bot's inline replies (given in the webhook's own answer, Twilio's TwiML): their copies at the
provider are deleted like every other message.

A reply sent through the outbox has a row that remembers its provider id, and `outbox.record_status`
finds it by keyed hash when the provider reports. A reply given inline has no row: the provider makes
the message from the webhook's answer, and we learn its id only from that reply's own status
callback (Twilio posts it to the `<Message action>` URL). Once that report is final (delivered,
undelivered, failed...), the provider's copy is queued for deletion as an outbox DELETE row of the
recipient, due after `provider_delete_delay_seconds`, and retried like any deletion.

**How the callback finds the recipient**: by the keyed pseudonym of the address the reply went to
(Twilio's `To`, covered by the callback's signature), exactly as intake finds a sender. Chosen over
an identifier in the action URL (a random one-time token, or a keyed hash of the inbound MessageSid,
mapped to the contact in a table) because:

- the URL carries nothing: one constant address for every reply, nothing to guess, replay or
  link in Twilio's request logs;
- nothing is written when answering: the webhook's transaction stays as it was, and no row waits
  for a callback that may never come;
- it survives erasure: the reply that confirms FORGET reports after its sender is gone (the contact
  row, and any token mapped to it, with it), as does a reply to a sender erased since. Their
  pseudonym no longer exists, so the deletion is queued under a blank stand-in contact (no
  pseudonym, no address, no tip), as FORGET does for deletions it hands over; maintenance removes
  it once its rows are done. The reply is deleted either way.

The address is only hashed here, never stored or logged. Each final report is remembered by keyed
hash of the reply's id (as inbound deliveries are), in the transaction that queues its deletion,
so a repeated callback queues nothing twice, concurrent copies included.
"""

from __future__ import annotations

import datetime as dt
import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.core.channels import Channel, StatusReport
from tipline.core.crypto import Keyring
from tipline.services import outbox
from tipline.services.context import ServiceContext
from tipline.services.intake import Duplicate, remember_once
from tipline.storage import records
from tipline.storage.db import checkpoint
from tipline.storage.models import Contact, to_minute

log = logging.getLogger(__name__)

REPORT_MEMORY = dt.timedelta(days=7)  # a provider repeats a callback within minutes


def record_status(
    ctx: ServiceContext,
    channel: Channel,
    report: StatusReport,
    address: str,
    *,
    delete_delay: dt.timedelta | None,
) -> bool:
    """Record the provider's report on an inline reply to `address`; True if its deletion was queued.

    Only a final report acts: the provider's copy is queued for deletion (unless `delete_delay` is
    None: deletion is off), and an error meaning the tipster can never be written to again erases
    their address, as for any reply. Earlier reports (queued, sent) change nothing.
    """
    if not report.status.final:
        return False
    try:
        return _record(ctx, channel, report, address, delete_delay)
    except Duplicate:
        log.debug("%s reply report already recorded", channel.name)
        return False


def _record(
    ctx: ServiceContext, channel: Channel, report: StatusReport, address: str, delete_delay: dt.timedelta | None
) -> bool:
    keyring = ctx.keyring
    now = ctx.now()
    delete = delete_delay is not None and channel.deletes_provider_copies
    with ctx.factory.begin() as session:
        _remember(session, keyring, channel.name, report.provider_message_id, now)
        contact = _find(session, keyring, channel.name, address)
        gone = report.recipient_gone is not None and contact is not None and not contact.opted_out
        if not delete and not gone:
            return False
        if contact is None:
            contact, key = outbox.stand_in(session, keyring, channel.name, now)
        else:
            key = records.contact_dek(keyring, contact)
        if delete:
            assert delete_delay is not None
            outbox.enqueue_delete(session, contact, key, report.provider_message_id, now + delete_delay)
        if gone:
            assert report.recipient_gone is not None
            outbox.mark_recipient_gone(session, keyring, contact, report.recipient_gone)
    if gone:
        checkpoint(ctx.factory)  # the erased address and its old key leave the WAL
    return delete


def _remember(session: Session, keyring: Keyring, channel: str, provider_message_id: str, now: dt.datetime) -> None:
    """Raise Duplicate if this reply's final report was recorded before (under any pepper version).

    Forgotten a week later, to the minute: a time to the second would time the reply."""
    remember_once(session, keyring, f"{channel}:reply:{provider_message_id}", to_minute(now) + REPORT_MEMORY)


def _find(session: Session, keyring: Keyring, channel: str, address: str) -> Contact | None:
    """The recipient by keyed pseudonym, locked (an erasure of theirs happens wholly before or after)."""
    pseudonyms = [keyring.pseudonym(channel, address, v)[1] for v in keyring.pseudonym_versions()]
    query = select(Contact).where(Contact.pseudonym.in_(pseudonyms)).with_for_update(key_share=True)
    return session.scalars(query).first()
