"""Encrypted records: the one place that knows how tips, threads and contacts are sealed.

Every field is sealed under its row's data key with associated data naming table, column and row
(see crypto.py); intake, review and the outbox call these helpers instead of crypto directly.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid

from sqlalchemy import select
from sqlalchemy.orm import Session

from tipline.core import crypto
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import ErasedReason, KeyPurpose, TipStatus
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


def new_tip(
    keyring: Keyring, reference: str, channel: str, contact_id: str | None, now: dt.datetime
) -> tuple[Tip, bytes]:
    """A new draft tip with a fresh data key; returns the tip and its (unwrapped) data key."""
    dek = crypto.new_key()
    version, wrapped = keyring.wrap_dek(KeyPurpose.TIPS, dek, reference)
    minute = to_minute(now)
    tip = Tip(
        reference=reference,
        alias=secrets.token_hex(2).upper(),
        channel=channel,
        contact_id=contact_id,
        status=TipStatus.DRAFT,
        urgent=False,
        kek_version=version,
        wrapped_dek=wrapped,
        message_count=0,
        unread=0,
        created_at=minute,
        updated_at=minute,
    )
    return tip, dek


def tip_dek(keyring: Keyring, tip: Tip) -> bytes:
    return keyring.unwrap_dek(KeyPurpose.TIPS, tip.kek_version, tip.wrapped_dek, tip.reference)


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
    tip: Tip,
    dek: bytes,
    kind: str,
    text: str,
    now: dt.datetime,
    author_id: int | None = None,
    delivery: str | None = None,
) -> dict[str, object]:
    """The column values of the next entry of a tip's thread (kinds: tipster, bot, agency, note)."""
    tip.message_count += 1
    seq = tip.message_count
    body = MESSAGE_BODY.seal(dek, f"{tip.reference}#{seq}", text.encode())
    return {
        "tip_id": tip.id,
        "seq": seq,
        "kind": kind,
        "body_ct": body,
        "author_id": author_id,
        "delivery": delivery,
        "created_at": to_minute(now),
    }


def append_message(
    session: Session,
    tip: Tip,
    dek: bytes,
    kind: str,
    text: str,
    now: dt.datetime,
    author_id: int | None = None,
    delivery: str | None = None,
) -> Message:
    """Add an entry to a tip's thread as an ORM object (flush to learn its id)."""
    message = Message(**message_row(tip, dek, kind, text, now, author_id, delivery))
    session.add(message)
    return message


def read_message(tip: Tip, dek: bytes, message: Message) -> str:
    return MESSAGE_BODY.open(dek, f"{tip.reference}#{message.seq}", message.body_ct).decode()


def alias(tip: Tip) -> str:
    """The name a detective sees for a tip's sender, e.g. "Tipster 4F2A".

    Random per tip, so two tips of one sender do not share an alias and the alias says nothing
    about the sender (and it survives key rotation).
    """
    return f"Tipster {tip.alias}"


def submitted_tip(session: Session, reference: str, *, lock: bool = False) -> Tip | None:
    """The tip detectives know by `reference`; drafts are still the tipster's and are never found.

    With `lock`, the row is locked (FOR UPDATE) until the caller's transaction ends.
    """
    query = select(Tip).where(Tip.reference == reference, Tip.status != TipStatus.DRAFT)
    if lock:
        query = query.with_for_update()
    return session.scalars(query).first()


# Contacts -----------------------------------------------------------------------------------------


def new_contact(keyring: Keyring, channel: str, pseudonym: tuple[int, str], now: dt.datetime) -> tuple[Contact, bytes]:
    contact_id = new_id()
    dek = crypto.new_key()
    version, wrapped = keyring.wrap_dek(KeyPurpose.CONTACTS, dek, contact_id)
    contact = Contact(
        id=contact_id,
        channel=channel,
        pseudonym=pseudonym[1],
        pseudonym_version=pseudonym[0],
        kek_version=version,
        wrapped_dek=wrapped,
        opted_out=False,
        last_activity_at=to_minute(now),
    )
    return contact, dek


def contact_dek(keyring: Keyring, contact: Contact) -> bytes:
    return keyring.unwrap_dek(KeyPurpose.CONTACTS, contact.kek_version, contact.wrapped_dek, contact.id)


def store_address(contact: Contact, dek: bytes, address: str) -> None:
    contact.address_ct = crypto.seal(dek, address.encode(), crypto.aad("contacts", "address", contact.id))
    contact.erased_reason = None


def read_address(contact: Contact, dek: bytes) -> str | None:
    if contact.address_ct is None:
        return None
    return crypto.open_sealed(dek, contact.address_ct, crypto.aad("contacts", "address", contact.id)).decode()


def erase_address(contact: Contact, reason: ErasedReason) -> None:
    contact.address_ct = None
    contact.erased_reason = reason


# Other sealed fields ------------------------------------------------------------------------------


class SealedField:
    """One encrypted column: its associated data names table, column and row, so that a ciphertext
    copied into another row or column fails to open (crypto.IntegrityError) instead of decrypting."""

    def __init__(self, table: str, column: str):
        self.table = table
        self.column = column

    def aad(self, row: str) -> bytes:
        return crypto.aad(self.table, self.column, row)

    def seal(self, key: bytes, row: str, plaintext: bytes) -> bytes:
        return crypto.seal(key, plaintext, self.aad(row))

    def open(self, key: bytes, row: str, blob: bytes) -> bytes:
        return crypto.open_sealed(key, blob, self.aad(row))


MESSAGE_BODY = SealedField("messages", "body")  # row: "<tip reference>#<seq>"
OUTBOX_PAYLOAD = SealedField("outbox", "payload")  # under the contact's data key
ATTACHMENT_SOURCE = SealedField("attachments", "source")  # the provider's reference, until fetched
ATTACHMENT_DATA = SealedField("attachments", "data")  # the cleaned image, under the tip's data key
USER_TOTP = SealedField("users", "totp")  # under the `accounts` key
SESSION_PENDING_TOTP = SealedField("console_sessions", "pending_totp")  # during enrolment
