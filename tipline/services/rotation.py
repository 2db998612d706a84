"""Key rotation: online, resumable after a crash at any instant, and provable.

A rotation of a purpose first makes a new key version primary (new data uses it at once; every
process follows within a second, see keys.KeyStore), then moves existing rows to it in small
batches, each batch one transaction whose UPDATEs are compare-and-swap on the row's old version
and old ciphertext, so a concurrent writer is never overwritten and a crash loses at most the
batch in flight, which the next run redoes. Progress lives in the data (rows not yet on the
target version) and in `key_rotations`; running the same rotation again resumes it.

What "moving a row" means per purpose:
- tips, contacts: re-wrap the row's data key (content untouched), or with `reencrypt` give the row
  a fresh data key and re-encrypt every field it protects (for a suspected compromise);
- pseudonym: recompute each sender's pseudonym from their encrypted return address; senders whose
  address was erased cannot be recomputed and lose their link, by design;
- accounts: re-seal console users' TOTP secrets;
- audit: nothing; older audit entries stay verifiable under the version that chained them;
- search: re-index each tip's words under the new version, then drop its rows under the old one;
  searches look under every live version meanwhile (search.py), so they keep finding every tip.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from sqlalchemy import and_, func, select, text, update
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.core import crypto
from tipline.core.vocabulary import KeyPurpose, RotationStatus
from tipline.services import attachments, audit, processes, search
from tipline.services.context import ServiceContext
from tipline.storage import faults, records
from tipline.storage.db import checkpoint, make_engine, make_sessionmaker, read_only
from tipline.storage.keystore import (
    KeyStoreError,
    key_status,
    load_master_key,
    master_key_path,
    row_counts,
    write_secret_file,
)
from tipline.storage.models import Attachment, Contact, KeyRotation, KeyVersion, Message, OutboxItem, Tip, User, utcnow

log = logging.getLogger(__name__)

BATCH = 2000
# A re-wrap holds SQLite's write lock only for its UPDATE and commit (see step): twice the rows
# then hold it no longer than a batch of BATCH did with its reads and cryptography inside, and
# halve the commits (each an fsync). PostgreSQL locks rows, not the database: BATCH.
REWRAP_BATCH = {"sqlite": 4000}
REENCRYPT_BATCH = 100
_PG_KEYS_LOCK = 7_311_772
ROTATABLE = (
    KeyPurpose.TIPS,
    KeyPurpose.CONTACTS,
    KeyPurpose.PSEUDONYM,
    KeyPurpose.ACCOUNTS,
    KeyPurpose.AUDIT,
    KeyPurpose.SEARCH,
)


class RotationError(Exception):
    """A key operation was refused; the message says why."""


def _lock(session: Session) -> None:
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": _PG_KEYS_LOCK})


def _pending(purpose: str, version: int):  # type: ignore[no-untyped-def]
    """The rows of `purpose` not yet on `version`."""
    if purpose == KeyPurpose.TIPS:
        return Tip, Tip.kek_version != version
    if purpose == KeyPurpose.CONTACTS:
        return Contact, Contact.kek_version != version
    if purpose == KeyPurpose.PSEUDONYM:
        return Contact, and_(Contact.pseudonym.is_not(None), Contact.pseudonym_version != version)
    if purpose == KeyPurpose.ACCOUNTS:
        return User, and_(User.totp_secret_ct.is_not(None), User.totp_kek_version != version)
    if purpose == KeyPurpose.SEARCH:
        return Tip, search.stale(version)
    return None, None


def remaining(session: Session, purpose: str, version: int) -> int:
    model, condition = _pending(purpose, version)
    if model is None:
        return 0
    return session.scalar(select(func.count()).select_from(model).where(condition)) or 0


def add_version(session: Session, master: bytes, purpose: str) -> int:
    """Create the next version of a purpose's key and make it primary (caller commits)."""
    _lock(session)
    current = session.scalar(select(func.max(KeyVersion.version)).where(KeyVersion.purpose == purpose)) or 0
    version = current + 1
    session.execute(update(KeyVersion).where(KeyVersion.purpose == purpose).values(is_primary=False))
    session.add(
        KeyVersion(
            purpose=purpose,
            version=version,
            wrapped_key=crypto.wrap_kek(master, purpose, version, crypto.new_key()),
            is_primary=True,
            created_at=utcnow(),
        )
    )
    return version


def start(ctx: ServiceContext, master: bytes, purpose: str, reencrypt: bool = False, actor: str | None = None) -> int:
    """Begin a rotation of `purpose`, or return the unfinished one it would repeat. Returns its id."""
    if purpose not in ROTATABLE:
        raise RotationError(f"unknown key purpose {purpose}")
    if reencrypt and purpose not in (KeyPurpose.TIPS, KeyPurpose.CONTACTS):
        raise RotationError("--reencrypt applies to tips and contacts (other purposes hold no data keys)")
    keyring = ctx.keyring
    with ctx.factory.begin() as session:
        _lock(session)
        running = session.scalars(
            select(KeyRotation).where(KeyRotation.purpose == purpose, KeyRotation.status == RotationStatus.RUNNING)
        ).first()
        if running is not None and (running.reencrypt or not reencrypt):
            return running.id  # resume: never mint another version over an unfinished rotation
        if running is not None:
            running.status = RotationStatus.SUPERSEDED  # a re-encryption covers every row the re-wrap had left
        version = add_version(session, master, purpose)
        rotation = KeyRotation(
            purpose=purpose,
            to_version=version,
            reencrypt=reencrypt,
            status=RotationStatus.RUNNING,
            requested_by=actor,
            rows_total=remaining(session, purpose, version),
            rows_done=0,
            unlinked=0,
            started_at=utcnow(),
        )
        session.add(rotation)
        session.flush()
        audit.record(
            session,
            keyring,
            "keys.rotate",
            actor=actor,
            object_type="key",
            object_id=purpose,
            detail={"to_version": version, "reencrypt": reencrypt, "rows": rotation.rows_total},
        )
        rotation_id = rotation.id
    ctx.keys.reload()
    return rotation_id


# How long after a new version becomes primary a process may still write under the old one: every
# KeyStore re-reads the primaries at least once a second (keystore.KeyStore.check_interval), plus a
# transaction begun just before that look. Tests shorten it through a fixture.
PROPAGATION = dt.timedelta(seconds=5)


@dataclass
class Step:
    moved: int
    cursor: object
    finished: bool


def step(ctx: ServiceContext, rotation_id: int, cursor: object = None) -> Step:
    """Move one batch of rows to the rotation's version; `cursor` is the last row id handled."""
    return _write(ctx, rotation_id, cursor, _read(ctx, rotation_id, cursor))


def _read(ctx: ServiceContext, rotation_id: int, cursor: object) -> Rewrapped | None:
    """A re-wrap's next batch, read and re-wrapped outside the write transaction (None: not a re-wrap).

    Intake then waits only for the UPDATE and the commit; compare-and-swap skips any row that
    changed meanwhile, which the next pass picks up.
    """
    with read_only(ctx.factory) as session:
        rotation = session.get(KeyRotation, rotation_id)
        if rotation is None or rotation.status != RotationStatus.RUNNING or rotation.reencrypt:
            return None
        if rotation.purpose not in (KeyPurpose.TIPS, KeyPurpose.CONTACTS):
            return None
        return _rewrap_batch(session, ctx.keyring, rotation.purpose, rotation.to_version, cursor)


def _write(ctx: ServiceContext, rotation_id: int, cursor: object, rewrapped: Rewrapped | None) -> Step:
    keyring = ctx.keyring
    with ctx.factory.begin() as session:
        rotation = session.get(KeyRotation, rotation_id)
        if rotation is None or rotation.status != RotationStatus.RUNNING:
            return Step(0, cursor, True)
        purpose, version = rotation.purpose, rotation.to_version
        model, condition = _pending(purpose, version)
        if rewrapped is not None:
            moved, last = _swap(session, rewrapped), rewrapped.last
        elif model is None:
            moved, last = 0, None
        else:
            query = select(model).where(condition)
            if cursor is not None:
                query = query.where(model.id > cursor)
            # Both decrypt every text of a tip: small batches. Writers that seal under a tip's key (the
            # media worker) or index its words (intake, notes) lock the tip first; so do we.
            heavy = rotation.reencrypt or purpose == KeyPurpose.SEARCH
            limit = REENCRYPT_BATCH if heavy else BATCH
            if heavy:
                query = query.with_for_update(of=model)
            rows = session.scalars(query.order_by(model.id).limit(limit)).all()
            moved = _move(session, keyring, rotation, rows)
            last = rows[-1].id if rows else None
        rotation.rows_done += moved
        if last is not None:
            return Step(moved, last, False)
        # A pass reached the end. Rows written meanwhile by a process that had not yet seen the new
        # primary would be behind the cursor: finish only when none is left anywhere, and only once
        # every process has seen the new primary (PROPAGATION after it became primary), so that no
        # row can still be written under an older version after the rotation says it is done.
        if remaining(session, purpose, version) or ctx.now() < rotation.started_at + PROPAGATION:
            return Step(moved, None, False)
        rotation.status = RotationStatus.DONE
        rotation.finished_at = utcnow()
        audit.record(
            session,
            keyring,
            "keys.rotate_done",
            actor=rotation.requested_by,
            object_type="key",
            object_id=purpose,
            detail={"to_version": version, "rows": rotation.rows_done, "unlinked": rotation.unlinked},
        )
        return Step(moved, None, True)


def run(
    ctx: ServiceContext,
    rotation_id: int,
    progress: Callable[[int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> bool:
    """Run a rotation to the end (True) or until `should_stop` says so (False). The end is also
    reached when the rotation is no longer running: a `--reencrypt` started meanwhile took its place
    (its status says SUPERSEDED; `keys rotate` reports that).

    A re-wrap of READ_AHEAD_ROWS rows or more has a helper process read and re-wrap the next batch
    while this process writes the current one (see `_ReadAhead`); the result is the same as `step`'s.
    """
    cursor: object = None
    ahead = _ReadAhead.start(ctx, rotation_id)
    try:
        while True:
            if should_stop is not None and should_stop():
                return False
            rewrapped = ahead.batch_after(cursor) if ahead is not None else None
            if ahead is not None and rewrapped is None:  # the helper failed: carry on without it
                ahead = None
            if rewrapped is not None and rewrapped.last is not None:
                ahead.ask(rewrapped.last)  # type: ignore[union-attr]  # read while this batch is written
            if rewrapped is None:
                rewrapped = _read(ctx, rotation_id, cursor)
            result = _write(ctx, rotation_id, cursor, rewrapped)
            if progress is not None and result.moved:
                progress(result.moved)
            if result.finished:
                return True
            if not result.moved and result.cursor is None:
                time.sleep(0.2)  # waiting out PROPAGATION: look again shortly, without spinning
            cursor = result.cursor
    finally:
        if ahead is not None:
            ahead.close()


# A re-wrap of this many rows or more reads ahead in a helper process (forking one costs ~10 ms).
READ_AHEAD_ROWS = 20_000
# How long `run` waits for the helper's batch before it gives up on it and reads the batch itself.
READ_AHEAD_TIMEOUT = 60.0


class _ReadAhead:
    """A forked helper process that reads and re-wraps the next batch of a re-wrap while `run`
    writes the current one: on two cores, the cryptography and the reads no longer wait for the
    writes (bench/rotation.py).

    Keys never cross between the processes: the helper inherits the keyring in memory, and only
    wrapped keys and row ids travel over the pipe. It opens its own engine (a forked process must
    not use its parent's connections), reads without the write lock, runs at a lower CPU priority
    than the tip line (nice 10), and ends when the pipe closes, also when `run`'s process is killed.
    Reading early is safe: `_swap` is compare-and-swap, so a row changed after the helper read it
    is left alone and moved by the next pass. A helper that fails, dies or stalls is given up, and
    `run` reads in its own process from the same cursor (where a real error, such as a ciphertext
    that does not authenticate, is raised as it would have been without a helper).
    """

    def __init__(self, ctx: ServiceContext, purpose: str, version: int) -> None:
        self._ctx, self._purpose, self._version = ctx, purpose, version
        context = multiprocessing.get_context("fork")
        self._pipe, theirs = context.Pipe()
        self._process = context.Process(
            target=_read_ahead,
            args=(theirs, self._pipe, ctx.settings.database_url, ctx.keyring, purpose, version),
            name="tipline-rotation-reader",
            daemon=True,
        )
        self._process.start()
        theirs.close()
        self._asked: list[object] = []  # the cursors of batches asked for and not yet received

    @classmethod
    def start(cls, ctx: ServiceContext, rotation_id: int) -> _ReadAhead | None:
        """A helper for this rotation, or None: not a re-wrap, too few rows to be worth a process,
        or a keyring that does not have the rotation's version as primary yet (reading here says why)."""
        with read_only(ctx.factory) as session:
            rotation = session.get(KeyRotation, rotation_id)
            if rotation is None or rotation.status != RotationStatus.RUNNING or rotation.reencrypt:
                return None
            if rotation.purpose not in _REWRAP_SQL:
                return None
            if remaining(session, rotation.purpose, rotation.to_version) < READ_AHEAD_ROWS:
                return None
            purpose, version = rotation.purpose, rotation.to_version
        if ctx.keyring.primary_version(purpose) != version:
            return None
        return cls(ctx, purpose, version)

    def ask(self, cursor: object) -> None:
        """Have the helper read and re-wrap the batch after `cursor` now."""
        try:
            self._pipe.send(cursor)
        except OSError:
            return  # gone: batch_after finds out and reads itself
        self._asked.append(cursor)

    def batch_after(self, cursor: object) -> Rewrapped | None:
        """The re-wrapped batch after `cursor`, or None once the helper has failed: read it yourself."""
        if self._ctx.keyring.primary_version(self._purpose) != self._version:
            return None  # a newer rotation began: _read in this process refuses to go on
        try:
            while self._asked and self._asked[0] != cursor:
                self._receive()  # read ahead of a cursor `_write` did not confirm: not this one
            if not self._asked:
                self.ask(cursor)
            return self._receive()
        except (_HelperFailed, EOFError, OSError) as error:
            why = str(error) if isinstance(error, _HelperFailed) else type(error).__name__
            log.warning("rotation read-ahead stopped (%s); reading in this process", why)
            self.close()
            return None

    def _receive(self) -> Rewrapped:
        if not self._asked:
            raise _HelperFailed("it is gone")
        if not self._pipe.poll(READ_AHEAD_TIMEOUT):
            raise _HelperFailed(f"no answer in {READ_AHEAD_TIMEOUT:.0f} s")
        kind, payload = self._pipe.recv()
        self._asked.pop(0)
        if kind != "batch":
            raise _HelperFailed(str(payload))
        return payload  # type: ignore[no-any-return]

    def close(self) -> None:
        self._pipe.close()  # the helper's next recv ends, and so does it
        self._process.join(timeout=5)
        if self._process.is_alive():
            self._process.kill()
            self._process.join()


class _HelperFailed(Exception):
    """The read-ahead helper did not deliver a batch; the message says why (no key, no data)."""


def _read_ahead(
    pipe: Connection, parents: Connection, url: str, keyring: crypto.Keyring, purpose: str, version: int
) -> None:
    """The helper process of `_ReadAhead`: answer each cursor with the re-wrapped batch after it."""
    parents.close()  # forked with it: while open here, the pipe would never close when the parent's end does
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for `run`, which then closes the pipe
    os.nice(10)
    # The keys as they were at the fork, without the loader that would fetch a newer version
    # through the parent's engine: a version missing here fails the batch, and `run` reads it.
    keyring = dataclasses.replace(keyring, loader=None, _ciphers={})
    engine = make_engine(url)
    factory = make_sessionmaker(engine)
    try:
        while True:
            try:
                cursor = pipe.recv()
            except (EOFError, OSError):
                return
            answer: tuple[str, object]
            try:
                with read_only(factory) as session:
                    answer = ("batch", _rewrap_batch(session, keyring, purpose, version, cursor))
            except Exception as error:  # noqa: BLE001 - the parent reads the batch itself, and raises if it must
                answer = ("failed", f"{type(error).__name__}: {faults.describe(error)}")
            try:
                pipe.send(answer)
            except OSError:
                return
    finally:
        engine.dispose()


def _move(session: Session, keyring: crypto.Keyring, rotation: KeyRotation, rows: Sequence[Any]) -> int:
    version = rotation.to_version
    if rotation.purpose == KeyPurpose.TIPS:
        return sum(_reencrypt_tip(session, keyring, tip) for tip in rows)
    if rotation.purpose == KeyPurpose.CONTACTS:
        return sum(_reencrypt_contact(session, keyring, contact) for contact in rows)
    if rotation.purpose == KeyPurpose.PSEUDONYM:
        moved = 0
        for contact in rows:
            address = records.read_address(contact, records.contact_dek(keyring, contact))
            if address is None:
                contact.pseudonym = None  # erased address: the link cannot be recomputed, by design
                rotation.unlinked += 1
            else:
                contact.pseudonym = keyring.pseudonym(contact.channel, address, version)[1]
            contact.pseudonym_version = version
            moved += 1
        return moved
    if rotation.purpose == KeyPurpose.ACCOUNTS:
        for user in rows:
            associated = records.USER_TOTP.aad(str(user.id))
            secret = keyring.open_with(KeyPurpose.ACCOUNTS, user.totp_kek_version, user.totp_secret_ct, associated)
            user.totp_kek_version, user.totp_secret_ct = keyring.seal_with(KeyPurpose.ACCOUNTS, secret, associated)
        return len(rows)
    if rotation.purpose == KeyPurpose.SEARCH:
        return sum(search.reindex(session, keyring, tip, version) for tip in rows)
    return 0


# The hot loop of a rotation. It talks to the driver directly: SQLAlchemy's per-row parameter
# processing costs more than the cryptography. The statements are fixed text; only values are bound.
_REWRAP_SQL = {
    KeyPurpose.TIPS: ("tips", "reference"),
    KeyPurpose.CONTACTS: ("contacts", "id"),
}


@dataclass
class Rewrapped:
    """A batch of data keys re-wrapped outside the write transaction, ready to compare and swap."""

    table: str
    updates: list[tuple[bytes, int, int, int, bytes]]  # new wrapped key, version; id, old version, old wrapped key
    last: object  # the id of the last row read (None: the pass reached the end)


def _rewrap_batch(session: Session, keyring: crypto.Keyring, purpose: str, version: int, cursor: object) -> Rewrapped:
    """Read up to REWRAP_BATCH data keys after `cursor` and re-wrap them under `version`."""
    if keyring.primary_version(purpose) != version:
        raise RotationError(f"the {purpose} primary moved on during this rotation; run it again")
    table, owner = _REWRAP_SQL[KeyPurpose(purpose)]
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    after = f" AND id > {mark}" if cursor is not None else ""
    batch = REWRAP_BATCH.get(connection.dialect.name, BATCH)
    select_sql = (
        f"SELECT id, {owner}, kek_version, wrapped_dek FROM {table} "
        f"WHERE kek_version != {mark}{after} ORDER BY id LIMIT {batch}"
    )
    driver = connection.connection.cursor()  # the DBAPI's own rows: no result objects per row
    try:
        driver.execute(select_sql, (version, cursor) if cursor is not None else (version,))
        rows = driver.fetchall()  # blobs come back as bytes from both sqlite3 and psycopg
    finally:
        driver.close()
    if not rows:
        return Rewrapped(table, [], None)
    wrapped = keyring.rewrap_deks(purpose, version, [(row_owner, old, blob) for _, row_owner, old, blob in rows])
    updates = [(new, version, row_id, old, blob) for new, (row_id, _, old, blob) in zip(wrapped, rows, strict=True)]
    return Rewrapped(table, updates, rows[-1][0])


def _swap(session: Session, batch: Rewrapped) -> int:
    """Write a re-wrapped batch with compare-and-swap UPDATEs in one executemany; returns rows moved.

    A row whose version or wrapped key changed since it was read is left alone: its data key may
    not be the one that was re-wrapped. It stays pending and the next pass moves it.
    """
    if not batch.updates:
        return 0
    connection = session.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    driver = connection.connection.cursor()
    try:
        driver.executemany(
            f"UPDATE {batch.table} SET wrapped_dek = {mark}, kek_version = {mark} "
            f"WHERE id = {mark} AND kek_version = {mark} AND wrapped_dek = {mark}",
            batch.updates,
        )
        return max(driver.rowcount, 0)
    finally:
        driver.close()


def _reencrypt_tip(session: Session, keyring: crypto.Keyring, tip: Tip) -> int:
    old = records.tip_dek(keyring, tip)
    fields = {name: records.read_tip_field(tip, old, name) for name in records.TIP_FIELDS}
    messages = session.scalars(select(Message).where(Message.tip_id == tip.id)).all()
    new = crypto.new_key()
    tip.kek_version, tip.wrapped_dek = keyring.wrap_dek(KeyPurpose.TIPS, new, tip.reference)
    for name, value in fields.items():
        if value is not None:
            records.set_tip_field(tip, new, name, value)
    for message in messages:
        records.reseal_message(tip, old, new, message)
    for attachment in session.scalars(select(Attachment).where(Attachment.tip_id == tip.id)):
        attachments.reseal(attachment, old, new)
    return 1


def _reencrypt_contact(session: Session, keyring: crypto.Keyring, contact: Contact) -> int:
    old = records.contact_dek(keyring, contact)
    address = records.read_address(contact, old)
    items = session.scalars(
        select(OutboxItem).where(OutboxItem.contact_id == contact.id, OutboxItem.payload_ct != b"")
    ).all()
    payloads = [(i, records.OUTBOX_PAYLOAD.open(old, i.id, i.payload_ct)) for i in items]
    new = crypto.new_key()
    contact.kek_version, contact.wrapped_dek = keyring.wrap_dek(KeyPurpose.CONTACTS, new, contact.id)
    if address is not None:
        reason = contact.erased_reason
        records.store_address(contact, new, address)
        contact.erased_reason = reason
    for item, payload in payloads:
        item.payload_ct = records.OUTBOX_PAYLOAD.seal(new, item.id, payload)
    return 1


def running(ctx: ServiceContext) -> list[KeyRotation]:
    with read_only(ctx.factory) as session:  # polled by the dispatcher: must never take the write lock
        return list(
            session.scalars(
                select(KeyRotation).where(KeyRotation.status == RotationStatus.RUNNING).order_by(KeyRotation.id)
            )
        )


def recent(ctx: ServiceContext, limit: int = 10) -> list[KeyRotation]:
    with read_only(ctx.factory) as session:
        return list(session.scalars(select(KeyRotation).order_by(KeyRotation.id.desc()).limit(limit)))


def retire(ctx: ServiceContext, purpose: str, version: int, actor: str | None = None) -> None:
    """Destroy a key version that nothing needs any more; refuse otherwise."""
    keyring = ctx.keyring
    with ctx.factory.begin() as session:
        _lock(session)
        row = session.scalars(
            select(KeyVersion).where(KeyVersion.purpose == purpose, KeyVersion.version == version)
        ).first()
        if row is None or row.retired_at is not None:
            raise RotationError(f"there is no live {purpose} key v{version}")
        if row.is_primary:
            raise RotationError(f"{purpose} v{version} is the primary key: rotate first")
        still = row_counts(session).get((purpose, version), 0)
        if still:
            raise RotationError(
                f"{still} rows still need {purpose} v{version}: finish `tipline keys rotate --purpose {purpose}` first"
            )
        row.wrapped_key = b""  # the key is gone; the row stays as the record that it existed
        row.retired_at = utcnow()
        audit.record(
            session,
            keyring,
            "keys.retire",
            actor=actor,
            object_type="key",
            object_id=purpose,
            detail={"version": version},
        )
    checkpoint(ctx.factory)  # the destroyed key's bytes leave the WAL
    ctx.keys.reload()


# The master key ------------------------------------------------------------------------------------

NEXT_SUFFIX = ".next"


def rotate_master(ctx: ServiceContext, old: bytes, new: bytes, actor: str | None = None) -> int:
    """Re-wrap every KEK under a new master key in one transaction; returns how many.

    With a master key file, the new key is first written beside it (`master.key.next`, fsynced),
    then the database commits, then the file replaces the old one; `recover_master` finishes the
    last step after a crash, so no instant leaves the keys unopenable.
    """
    if old == new:
        raise RotationError("the new master key is the current one")
    settings = ctx.settings
    stuck = [p.kind for p in processes.running(ctx) if settings.master_key is not None or not p.follows_master_file]
    if stuck:
        raise RotationError(
            f"{len(stuck)} tip line process(es) ({', '.join(sorted(set(stuck)))}) run with the master key in "
            "TIPLINE_MASTER_KEY and cannot follow a new one: stop them, rotate, set the new TIPLINE_MASTER_KEY "
            "everywhere, then start them again"
        )
    path = master_key_path(settings) if settings.master_key is None else None
    if path is not None:
        pending = path.with_name(path.name + NEXT_SUFFIX)
        if pending.exists():
            pending.unlink()
        write_secret_file(pending, base64.b64encode(new) + b"\n")
    keyring = ctx.keyring
    with ctx.factory.begin() as session:
        _lock(session)
        rows = session.scalars(select(KeyVersion).where(KeyVersion.retired_at.is_(None))).all()
        for row in rows:
            kek = crypto.unwrap_kek(old, row.purpose, row.version, row.wrapped_key)
            row.wrapped_key = crypto.wrap_kek(new, row.purpose, row.version, kek)
        audit.record(
            session,
            keyring,
            "keys.rotate_master",
            actor=actor,
            object_type="key",
            object_id="master",
            detail={"keys": len(rows)},
        )
    if path is not None:
        os.replace(path.with_name(path.name + NEXT_SUFFIX), path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    checkpoint(ctx.factory)  # the keys wrapped by the old master leave the WAL
    return len(rows)


def recover_master(settings: Settings, factory: sessionmaker[Session]) -> str | None:
    """After a crash inside rotate_master: keep whichever master key opens the database's keys."""
    if settings.master_key is not None:
        return None
    path = master_key_path(settings)
    pending = path.with_name(path.name + NEXT_SUFFIX)
    if not pending.exists():
        return None
    with factory() as session:
        row = session.scalars(select(KeyVersion).where(KeyVersion.retired_at.is_(None)).limit(1)).first()
    if row is None:
        pending.unlink()
        return None

    def opens(candidate: bytes) -> bool:
        try:
            crypto.unwrap_kek(candidate, row.purpose, row.version, row.wrapped_key)
            return True
        except crypto.IntegrityError:
            return False

    new = base64.b64decode(pending.read_bytes().strip())
    if opens(new):
        os.replace(pending, path)
        return "finished an interrupted master key rotation"
    current = base64.b64decode(path.read_bytes().strip()) if path.exists() else b""
    if current and opens(current):
        pending.unlink()
        return "discarded an interrupted master key rotation that never committed"
    raise KeyStoreError("neither master.key nor master.key.next opens the keys in the database")


def key_versions(ctx: ServiceContext) -> list[dict[str, object]]:
    """Every key version with its state and how many rows it protects (the console's Keys page)."""
    return key_status(ctx.factory)


def master_key(ctx: ServiceContext) -> bytes:
    """The master key, from TIPLINE_MASTER_KEY or the key file (to start a rotation)."""
    return load_master_key(ctx.settings)


def status_rows(ctx: ServiceContext) -> list[dict[str, object]]:
    """`tipline keys status --json`: every version with its rows."""
    out = []
    for row in key_status(ctx.factory):
        created = row["created_at"]
        out.append(
            {
                "purpose": row["purpose"],
                "version": row["version"],
                "primary": row["primary"],
                "created_at": created.replace(tzinfo=dt.UTC).isoformat()
                if isinstance(created, dt.datetime)
                else created,
                "rows": row["rows"],
                "retired": row["retired"],
            }
        )
    return out
