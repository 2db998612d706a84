"""Encrypted records: the one place that knows how tips, threads and contacts are sealed.

Every field is sealed under its row's data key with associated data naming table, column and row
(see crypto.py); intake, review and the outbox call these helpers instead of crypto directly.
"""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Any, TypeVar, cast

from sqlalchemy import ClauseElement, ColumnElement, Table, bindparam, delete, func, or_, select, update
from sqlalchemy.orm import Session, class_mapper, make_transient_to_detached
from sqlalchemy.orm.attributes import instance_state
from sqlalchemy.orm.base import NO_VALUE
from sqlalchemy.orm.util import identity_key

from tipline.core import crypto
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import DeliveryStatus, ErasedReason, KeyPurpose, OutboxKind, OutboxStatus, TipStatus
from tipline.storage.models import (
    Base,
    Contact,
    Conversation,
    DataUpgrade,
    Message,
    OutboxItem,
    Tip,
    table_of,
    to_minute,
)

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
    keyring: Keyring,
    reference: str,
    channel: str,
    contact_id: str | None,
    now: dt.datetime,
    language: str | None = None,
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
        active_at=minute,
        language=language,
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
    body = MESSAGE_BODY.seal(dek, message_row_id(tip.reference, seq, kind, author_id), text.encode())
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


def message_row_id(reference: str, seq: int, kind: str, author_id: int | None) -> str:
    """What a thread entry's body is bound to: its place in the thread, who wrote it and which kind it is.

    A tipster's message re-typed in the database as a detective's note (or given another author)
    then fails to open instead of being shown as something it is not.
    """
    return f"{reference}#{seq}|{kind}|{author_id if author_id is not None else '-'}"


def read_message(tip: Tip, dek: bytes, message: Message) -> str:
    """A thread entry's text. Raises crypto.IntegrityError if the row was altered."""
    row = message_row_id(tip.reference, message.seq, message.kind, message.author_id)
    return MESSAGE_BODY.open(dek, row, message.body_ct).decode()


def reseal_message(tip: Tip, old_key: bytes, new_key: bytes, message: Message) -> None:
    """Re-encrypt a thread entry under a tip's new data key (key rotation with --reencrypt)."""
    body = read_message(tip, old_key, message)
    row = message_row_id(tip.reference, message.seq, message.kind, message.author_id)
    message.body_ct = MESSAGE_BODY.seal(new_key, row, body.encode())


MESSAGE_BINDING_UPGRADE = "0.2-message-kind-and-author"


def upgrade_message_seals(session: Session, keyring: Keyring, now: dt.datetime) -> tuple[int, int]:
    """Bind thread entries sealed before kind and author were part of their associated data.

    Until version 0.2 a body was bound to "<reference>#<seq>" only. The first `tipline init` of
    0.2 re-seals such entries, and records that it did: it never runs again, so an old ciphertext
    copied back into a row later (from a backup, say) is never accepted under the old binding.
    Returns (re-sealed, unreadable): an entry that opens under neither binding was altered and is
    left as it is (reading it fails closed).
    """
    if session.get(DataUpgrade, MESSAGE_BINDING_UPGRADE) is not None:
        return 0, 0
    upgraded = unreadable = 0
    for tip in session.scalars(select(Tip)):
        key = tip_dek(keyring, tip)
        for message in session.scalars(select(Message).where(Message.tip_id == tip.id)):
            try:
                read_message(tip, key, message)
                continue
            except crypto.IntegrityError:
                pass
            try:
                legacy = MESSAGE_BODY.open(key, f"{tip.reference}#{message.seq}", message.body_ct)
            except crypto.IntegrityError:
                unreadable += 1
                continue
            row = message_row_id(tip.reference, message.seq, message.kind, message.author_id)
            message.body_ct = MESSAGE_BODY.seal(key, row, legacy)
            upgraded += 1
    session.add(DataUpgrade(name=MESSAGE_BINDING_UPGRADE, done_at=to_minute(now)))
    return upgraded, unreadable


def alias(tip: Tip) -> str:
    """The name a detective sees for a tip's sender, e.g. "Tipster 4F2A".

    Random per tip, so two tips of one sender do not share an alias and the alias says nothing
    about the sender (and it survives key rotation).
    """
    return f"Tipster {tip.alias}"


def visible_to_detectives() -> ColumnElement[bool]:
    """Which tips detectives see: every submitted tip, and a draft once it is urgent.

    A draft is still the tipster's (they may add to it, or DISCARD it), so it stays out of sight,
    unless the conversation flagged danger now: then waiting for the draft to be submitted (up to
    the idle timeout) could cost a life, and it is shown at once, marked as still being written.
    """
    return or_(Tip.status != TipStatus.DRAFT, Tip.urgent.is_(True))


def show(tip: Tip) -> None:
    """Number a tip as it becomes visible to detectives or urgent (`Tip.shown_seq`): the next in line,
    so that the console's tab title counts it even when it is older than tips already listed."""
    tip.shown_seq = select(func.coalesce(func.max(Tip.shown_seq), 0) + 1).scalar_subquery()


# How rows are locked to be changed (`with_for_update=ROW_LOCK`, `key_share=True` in a Core
# statement): FOR NO KEY UPDATE on PostgreSQL.
# It serialises writers of the row as FOR UPDATE does, but leaves alone the KEY SHARE lock that
# another transaction's foreign-key check takes (a detective's reply inserting into the outbox,
# which refers to the sender): with FOR UPDATE, a message holding its sender and waiting for the
# tip, and a reply holding the tip and inserting that row, waited for each other (a deadlock).
# A statement that deletes the row, or changes a unique column (FORGET and retention clear the
# sender's pseudonym), takes the stronger lock it needs by itself, and waits for those checks.
# So whoever seals a row under a sender's data key (an outbox row) locks the sender first: STOP,
# FORGET and retention replace that key and re-seal what is queued under it, and a row inserted
# beside them, unseen, would stay sealed under a key that no longer exists.
ROW_LOCK = {"key_share": True}


def visible_tip(session: Session, reference: str, *, lock: bool = False) -> Tip | None:
    """The tip detectives know by `reference` (see `visible_to_detectives`), or None.

    With `lock`, the row is locked (ROW_LOCK) until the caller's transaction ends.
    """
    query = select(Tip).where(Tip.reference == reference, visible_to_detectives())
    if lock:  # the row as it is once locked, even if the session read it before
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
    return session.scalars(query).first()


def submitted_tip(session: Session, reference: str, *, lock: bool = False) -> Tip | None:
    """The tip detectives know by `reference`; drafts are still the tipster's and are never found.

    With `lock`, the row is locked (ROW_LOCK) until the caller's transaction ends.
    """
    query = select(Tip).where(Tip.reference == reference, Tip.status != TipStatus.DRAFT)
    if lock:  # the row as it is once locked, even if the session read it before
        query = query.with_for_update(key_share=True).execution_options(populate_existing=True)
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


# Erasure: crypto-shredding ------------------------------------------------------------------------
# Clearing a column is not enough: the old ciphertext may survive in a WAL frame, a free page or a
# backup, and the contact's data key, still in its row, would open it. So an erasure also replaces
# the data key: what must survive is re-sealed under a fresh one and the old wrapped key is
# overwritten, after which nothing the tip line keeps opens any copy of the old ciphertext.


def _fresh_contact_key(keyring: Keyring, contact: Contact) -> bytes:
    key = crypto.new_key()
    contact.kek_version, contact.wrapped_dek = keyring.wrap_dek(KeyPurpose.CONTACTS, key, contact.id)
    return key


def _carry_over(session: Session, contact: Contact, old_key: bytes, new_key: bytes, owner: Contact) -> None:
    """Re-seal the contact's outbox payloads under `new_key` and hand every row to `owner`.

    Payloads still kept are those of rows yet to be performed (deletions of provider copies; sends
    were cancelled by the erasure); settled rows' were cleared, and on FORGET those rows go.
    """
    forgetting = owner is not contact
    for item in session.scalars(select(OutboxItem).where(OutboxItem.contact_id == contact.id)):
        if item.payload_ct:
            plain = OUTBOX_PAYLOAD.open(old_key, item.id, item.payload_ct)
            item.payload_ct = OUTBOX_PAYLOAD.seal(new_key, item.id, plain)
        elif not forgetting:
            continue  # settled, nothing sealed: it stays as it is
        elif not _awaits_final_report(item):
            session.delete(item)  # settled: nothing of it needs to pass to the stand-in
            continue
        if forgetting:
            item.contact_id = owner.id
            item.message_id = None  # no thread entry of any tip stays linked to the forgotten sender


def _awaits_final_report(item: OutboxItem) -> bool:
    """A message sent whose provider has not said yet that it was delivered or failed: that final
    report queues the deletion of the provider's copy (outbox.record_status), so the row must
    still be found by it, even once its sender is forgotten. Rows whose report came go: kept
    under the one stand-in, the replies of a sender's tips would tie those tips together."""
    final = item.provider_status is not None and DeliveryStatus(item.provider_status).final
    return (
        item.kind == OutboxKind.SEND
        and item.status == OutboxStatus.SENT
        and item.provider_ref is not None
        and not final
    )


def shred_contact_key(session: Session, keyring: Keyring, contact: Contact, old_key: bytes) -> bytes:
    """Give the contact a fresh data key, re-sealing what must survive; returns the new key.

    Call after erasing the address (STOP, retention, a provider saying the address is gone).
    """
    new_key = _fresh_contact_key(keyring, contact)
    _carry_over(session, contact, old_key, new_key, contact)
    return new_key


def forget_contact(session: Session, keyring: Keyring, contact: Contact, old_key: bytes) -> tuple[Contact, bytes]:
    """FORGET: the contact row goes, and with it its id, data key and every link to tips.

    Outbox rows still to be performed (deletions of provider copies) pass, re-sealed under a fresh
    key, to a blank contact with a new id that knows nothing of the sender and refers to no tip
    (maintenance removes it once its rows are gone), and so do messages sent whose provider's final
    report is still to come (it queues the deletion of their copy), linked to no thread entry.
    Returns that contact and its key. The caller has erased the address and cleared the pseudonym
    already.
    """
    heir = Contact(
        id=new_id(),
        channel=contact.channel,
        pseudonym=None,
        pseudonym_version=contact.pseudonym_version,
        opted_out=True,
        erased_reason=ErasedReason.FORGET,
        last_activity_at=to_minute(contact.last_activity_at),
    )
    new_key = _fresh_contact_key(keyring, heir)
    session.add(heir)
    session.flush()  # the rows handed over refer to it
    _carry_over(session, contact, old_key, new_key, heir)
    session.execute(update(Tip).where(Tip.contact_id == contact.id).values(contact_id=None))
    session.execute(delete(Conversation).where(Conversation.contact_id == contact.id))
    session.flush()
    session.delete(contact)
    session.flush()
    return heir, new_key


# Rows written with Core ---------------------------------------------------------------------------
# Intake's hot path keeps contacts, conversations and tips as ORM objects (the rare paths, an
# erasure or a discarded draft, hand them to the unit of work) but writes them itself: an INSERT
# or an UPDATE of the changed columns, each statement built once, instead of a flush.


class _Plan:
    """One model's Core statements and the Python defaults of its columns."""

    def __init__(self, model: type[Base]):
        table: Table = table_of(model)
        self.table = table
        self.insert = table.insert()
        (self.key,) = (column.key for column in table.primary_key.columns)
        # An autoincremented id is the database's: the INSERT reports it.
        self.generated = self.key if table.autoincrement_column is not None else None
        self.update = table.update().where(table.c[self.key] == bindparam("row_key"))
        self.columns = [column.key for column in table.columns if column.key != self.generated]
        # What a column left unset holds. One whose default is computed by a function is left out
        # of the INSERT instead, for Core to compute (and the object to read back if asked).
        self.defaults = {
            column.key: getattr(column.default, "arg", None)
            for column in table.columns
            if column.key != self.generated and (column.default is None or column.default.is_scalar)
        }


_PLANS = {model: _Plan(model) for model in (Contact, Conversation, Tip)}
R = TypeVar("R", Contact, Conversation, Tip)
_MANAGERS: dict[type[Base], Any] = {model: class_mapper(model).class_manager for model in _PLANS}


def _mapped_by_column_key(model: type[Base]) -> bool:
    """Whether every column of `model` is mapped as an attribute of its own name, as `attach_loaded`
    (which sets a row's values by column key) needs."""
    attributes = {prop.key: prop.columns[0].key for prop in class_mapper(model).column_attrs}
    return attributes == {column.key: column.key for column in table_of(model).columns}


if not all(_mapped_by_column_key(model) for model in _PLANS):
    raise RuntimeError("a hot-path model maps a column under another name: attach_loaded cannot load it")


def insert_row(session: Session, row: Contact | Conversation | Tip) -> None:
    """INSERT a new object's row, then attach the object to `session` as a stored row: what changes
    next is written by `write_changes` (or, on the rare paths, by the session's flush)."""
    plan = _PLANS[type(row)]
    values = row.__dict__
    for key, default in plan.defaults.items():
        if key not in values:
            setattr(row, key, default)
    params = {key: values[key] for key in plan.columns if key in values}
    result = session.connection().execute(plan.insert, params)
    if plan.generated is not None:
        generated = result.inserted_primary_key
        assert generated is not None
        setattr(row, plan.generated, generated[0])
    make_transient_to_detached(row)
    session.add(row)


def attach_loaded(session: Session, model: type[R], values: dict[str, Any]) -> R:
    """The object of a row that a Core statement read, attached to `session` as though the ORM had
    loaded it (what changes next is written by `write_changes`), or the session's own object for
    that row if it has one already (as the ORM's identity map would give it)."""
    existing: Any = session.identity_map.get(identity_key(model, values[_PLANS[model].key]))
    if existing is not None:
        return cast(R, existing)
    row: R = _MANAGERS[model].new_instance()  # no __init__, no attribute events: the row as it is stored
    instance_state(row).dict.update(values)
    make_transient_to_detached(row)
    session.add(row)
    return row


def write_changes(session: Session, *rows: Contact | Conversation | Tip | None) -> None:
    """UPDATE the columns of each row changed since it was read (or inserted), and take the rows out
    of the session so that its flush does not write them again. On PostgreSQL the UPDATEs of plain
    values go in one statement (data-modifying CTEs): one round trip instead of one per row."""
    plain: list[tuple[_Plan, dict[str, Any]]] = []
    for row in rows:
        if row is None:
            continue
        state = instance_state(row)
        if state.session is not session or row in session.deleted:
            continue  # not this session's to write (a deleted row is the flush's)
        values, computed = _changes(state)
        plan = _PLANS[type(row)]
        if computed:
            values["row_key"] = state.dict[plan.key]
            session.connection().execute(plan.update.values(computed), values)
            session.expire(row, list(computed))  # the value is the database's: read it again if asked
        elif values:
            values["row_key"] = state.dict[plan.key]
            plain.append((plan, values))
        session.expunge(row)
    connection = session.connection() if plain else None
    if connection is not None and len(plain) > 1 and connection.dialect.name == "postgresql":
        statement, params = _updates_together(plain)
        connection.execute(statement, params)
    elif connection is not None:
        for plan, values in plain:
            connection.execute(plan.update, values)


def _changes(state: Any) -> tuple[dict[str, Any], dict[str, ClauseElement]]:
    """A row's changed columns: plain values, and those set to a SQL expression (`show`), which the
    UPDATE computes."""
    values: dict[str, Any] = {}
    computed: dict[str, ClauseElement] = {}
    for key, before in state.committed_state.items():
        now = state.dict.get(key)
        if isinstance(now, ClauseElement):
            computed[key] = now
        elif before is NO_VALUE or now != before:
            values[key] = now
    return values, computed


_TOGETHER: dict[tuple[tuple[str, frozenset[str]], ...], Any] = {}  # built once per shape: compiled once


def _updates_together(plain: list[tuple[_Plan, dict[str, Any]]]) -> tuple[Any, dict[str, Any]]:
    """One statement for several rows' UPDATEs (PostgreSQL), and its parameters: each UPDATE's
    bound names prefixed by its place, since tables share column names."""
    shape = tuple((plan.table.name, frozenset(values)) for plan, values in plain)
    statement = _TOGETHER.get(shape)
    if statement is None:
        parts = []
        for n, (plan, values) in enumerate(plain):
            table = plan.table
            parts.append(
                table.update()
                .where(table.c[plan.key] == bindparam(f"u{n}_row_key"))
                .values({key: bindparam(f"u{n}_{key}") for key in values if key != "row_key"})
            )
        statement = parts[-1]
        for n, part in enumerate(parts[:-1]):
            statement = statement.add_cte(part.cte(f"u{n}"))
        if len(_TOGETHER) < 256:  # a handful of shapes occur; never grow without bound
            _TOGETHER[shape] = statement
    params = {f"u{n}_{key}": value for n, (_, values) in enumerate(plain) for key, value in values.items()}
    return statement, params


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


MESSAGE_BODY = SealedField("messages", "body")  # row: message_row_id(), kind and author included
OUTBOX_PAYLOAD = SealedField("outbox", "payload")  # under the contact's data key
ATTACHMENT_SOURCE = SealedField("attachments", "source")  # the provider's reference, until fetched
ATTACHMENT_DATA = SealedField("attachments", "data")  # the cleaned image, under the tip's data key
USER_TOTP = SealedField("users", "totp")  # under the `accounts` key
SESSION_PENDING_TOTP = SealedField("console_sessions", "pending_totp")  # during enrolment
