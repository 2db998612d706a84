"""Encrypted records: the one place that knows how tips, threads and contacts are sealed.

Every field is sealed under its row's data key with associated data naming table, column and row
(see crypto.py); intake, review and the outbox call these helpers instead of crypto directly.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from sqlalchemy.orm import Session

from tipline.core import crypto
from tipline.core.crypto import Keyring
from tipline.storage.models import Contact, Message, Tip, to_minute

# Tip references: random, short, and free of look-alike characters (no 0/O, 1/I/L, U/V).
REFERENCE_ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
REFERENCE_LENGTH = 6

TIP_FIELDS = ("what", "where", "when")


def new_reference() -> str:
    """A tip reference such as T-7K3Q9X: random, not derived from anything about the sender."""
    return "T-" + "".join(secrets.choice(REFERENCE_ALPHABET) for _ in range(REFERENCE_LENGTH))


def new_id() -> str:
    return uuid.uuid4().hex


# Tips ---------------------------------------------------------------------------------------------

def new_tip(keyring: Keyring, reference: str, channel: str, contact_id: str | None, now: dt.datetime) -> tuple[Tip, bytes]:
    """A new draft tip with a fresh data key; returns the tip and its (unwrapped) data key."""
    dek = crypto.new_key()
    version, wrapped = keyring.wrap_dek(crypto.PURPOSE_TIPS, dek, reference)
    minute = to_minute(now)
    tip = Tip(
        reference=reference, alias=secrets.token_hex(2).upper(), channel=channel, contact_id=contact_id,
        status="draft", urgent=False,
        kek_version=version, wrapped_dek=wrapped, message_count=0, unread=0,
        created_at=minute, updated_at=minute,
    )
    return tip, dek


def tip_dek(keyring: Keyring, tip: Tip) -> bytes:
    return keyring.unwrap_dek(crypto.PURPOSE_TIPS, tip.kek_version, tip.wrapped_dek, tip.reference)


def set_tip_field(tip: Tip, dek: bytes, name: str, text: str) -> None:
    if name not in TIP_FIELDS:
        raise ValueError(f"unknown tip field {name}")
    setattr(tip, f"{name}_ct", crypto.seal(dek, text.encode(), crypto.aad("tips", name, tip.reference)))


def read_tip_field(tip: Tip, dek: bytes, name: str) -> str | None:
    blob = getattr(tip, f"{name}_ct")
    if blob is None:
        return None
    return crypto.open_sealed(dek, blob, crypto.aad("tips", name, tip.reference)).decode()


def message_row(
    tip: Tip, dek: bytes, kind: str, text: str, now: dt.datetime,
    author_id: int | None = None, delivery: str | None = None,
) -> dict[str, object]:
    """The column values of the next entry of a tip's thread (kinds: tipster, bot, agency, note)."""
    tip.message_count += 1
    seq = tip.message_count
    body = crypto.seal(dek, text.encode(), crypto.aad("messages", "body", f"{tip.reference}#{seq}"))
    return {
        "tip_id": tip.id, "seq": seq, "kind": kind, "body_ct": body, "author_id": author_id,
        "delivery": delivery, "created_at": to_minute(now),
    }


def append_message(
    session: Session, tip: Tip, dek: bytes, kind: str, text: str, now: dt.datetime,
    author_id: int | None = None, delivery: str | None = None,
) -> Message:
    """Add an entry to a tip's thread as an ORM object (flush to learn its id)."""
    message = Message(**message_row(tip, dek, kind, text, now, author_id, delivery))
    session.add(message)
    return message


def read_message(tip: Tip, dek: bytes, message: Message) -> str:
    return crypto.open_sealed(
        dek, message.body_ct, crypto.aad("messages", "body", f"{tip.reference}#{message.seq}")
    ).decode()


def alias(tip: Tip) -> str:
    """The name a detective sees for a tip's sender, e.g. "Tipster 4F2A".

    Random per tip, so two tips of one sender do not share an alias and the alias says nothing
    about the sender (and it survives key rotation).
    """
    return f"Tipster {tip.alias}"


# Contacts -----------------------------------------------------------------------------------------

def new_contact(keyring: Keyring, channel: str, pseudonym: tuple[int, str], now: dt.datetime) -> tuple[Contact, bytes]:
    contact_id = new_id()
    dek = crypto.new_key()
    version, wrapped = keyring.wrap_dek(crypto.PURPOSE_CONTACTS, dek, contact_id)
    contact = Contact(
        id=contact_id, channel=channel, pseudonym=pseudonym[1], pseudonym_version=pseudonym[0],
        kek_version=version, wrapped_dek=wrapped, opted_out=False, last_activity_at=to_minute(now),
    )
    return contact, dek


def contact_dek(keyring: Keyring, contact: Contact) -> bytes:
    return keyring.unwrap_dek(crypto.PURPOSE_CONTACTS, contact.kek_version, contact.wrapped_dek, contact.id)


def store_address(contact: Contact, dek: bytes, address: str) -> None:
    contact.address_ct = crypto.seal(dek, address.encode(), crypto.aad("contacts", "address", contact.id))
    contact.erased_reason = None


def read_address(contact: Contact, dek: bytes) -> str | None:
    if contact.address_ct is None:
        return None
    return crypto.open_sealed(dek, contact.address_ct, crypto.aad("contacts", "address", contact.id)).decode()


def erase_address(contact: Contact, reason: str) -> None:
    contact.address_ct = None
    contact.erased_reason = reason
