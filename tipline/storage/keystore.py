"""The key store: the master key on disk or in the environment, KEKs wrapped in the database.

Start-up fails closed: a database whose keys the master key cannot open refuses to serve, and a
missing key is never silently replaced by a new one (that would make every tip unreadable).
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.config import Settings
from tipline.core import crypto
from tipline.core.vocabulary import KeyPurpose
from tipline.storage.db import read_only
from tipline.storage.models import Contact, KeyVersion, Tip

log = logging.getLogger(__name__)

MASTER_KEY_FILE = "master.key"


class KeyStoreError(Exception):
    """The keys cannot be loaded; the message says what to do."""


def master_key_path(settings: Settings) -> Path:
    return settings.data_dir / MASTER_KEY_FILE


def write_secret_file(path: Path, content: bytes) -> None:
    """Create a 0600 file atomically (temp file, fsync, rename); never overwrite an existing one."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, content)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.link(tmp, path)  # fails if the file appeared meanwhile: never replace a key
    os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def master_key_source(settings: Settings) -> str:
    """Where the master key comes from, for operators: the variable, or the file's path."""
    return "from TIPLINE_MASTER_KEY" if settings.master_key is not None else str(master_key_path(settings))


def load_master_key(settings: Settings, create: bool = False) -> bytes:
    """The master key; `create` only for a database that has no keys yet (`tipline init`).

    Without `create` the database's keys exist and are wrapped under some master key: a new one
    would open none of them, so a missing key is an error that points at the offline backup.
    """
    if settings.master_key is not None:
        return settings.master_key
    path = master_key_path(settings)
    if not path.exists():
        if not create:
            raise KeyStoreError(
                f"the master key is missing (no TIPLINE_MASTER_KEY, no {path}) and the database's keys are wrapped "
                "under it: restore master.key (or TIPLINE_MASTER_KEY) from the OFFLINE backup; "
                "`tipline init` will not make a new one, which would open nothing"
            )
        write_secret_file(path, base64.b64encode(crypto.new_key()) + b"\n")
    try:
        key = base64.b64decode(path.read_bytes().strip(), validate=True)
    except ValueError:
        raise KeyStoreError(f"{path} is not a base64 master key") from None
    if len(key) != crypto.KEY_BYTES:
        raise KeyStoreError(f"{path} must hold a base64 32-byte key")
    return key


def ensure_keys(session: Session, master: bytes) -> list[str]:
    """Create version 1 of every purpose that has no key yet; returns the purposes created."""
    existing = set(session.scalars(select(KeyVersion.purpose)).all())
    if existing:
        # Prove the master key opens what is there before adding; a purpose new in this release
        # (e.g. `search` in 0.3) has no key yet, which is what this call is about to fix.
        load_keyring(session, master, require_all=False)
    created = []
    for purpose in crypto.PURPOSES:
        if purpose not in existing:
            kek = crypto.new_key()
            session.add(
                KeyVersion(
                    purpose=purpose, version=1, wrapped_key=crypto.wrap_kek(master, purpose, 1, kek), is_primary=True
                )
            )
            created.append(purpose.value)
    return created


def load_keyring(session: Session, master: bytes, require_all: bool = True) -> crypto.Keyring:
    keks: dict[tuple[str, int], bytes] = {}
    primary: dict[str, int] = {}
    for row in session.scalars(select(KeyVersion).where(KeyVersion.retired_at.is_(None))):
        try:
            keks[(row.purpose, row.version)] = crypto.unwrap_kek(master, row.purpose, row.version, row.wrapped_key)
        except crypto.IntegrityError:
            raise KeyStoreError(
                f"the master key does not open the {row.purpose} key v{row.version}: it is not the key this "
                "database's keys are wrapped under, so nothing would open; put back the right master.key "
                "(or TIPLINE_MASTER_KEY) from the OFFLINE backup"
            ) from None
        if row.is_primary:
            primary[row.purpose] = row.version
    missing = [p for p in crypto.PURPOSES if p not in primary]
    if missing and require_all:
        raise KeyStoreError(f"no primary key for {', '.join(missing)}: run `tipline init`")
    return crypto.Keyring(keks=keks, primary=primary)


class KeyStore:
    """The process's keyring. It follows key changes made by other processes:

    - a version it has not seen is loaded when first needed, and which versions are primary (and
      which are retired) is re-read every `check_interval` seconds, so new data moves to a new
      primary within that time and a retired key leaves the process's memory;
    - after `tipline keys rotate-master` the keys in the database are wrapped by a new master key:
      when they stop opening, the master key is read again from its source (`master_source`, the
      key file), so a running process follows a rotation made with a key file.
    """

    def __init__(
        self,
        factory: sessionmaker[Session],
        master: bytes,
        check_interval: float = 1.0,
        master_source: Callable[[], bytes] | None = None,
    ):
        self._factory = factory
        self._master = master
        self._master_source = master_source
        self._lock = threading.RLock()
        self._check_interval = check_interval
        self._checked = time.monotonic()
        self._fingerprint, self._keyring = self._load()

    def _load(self) -> tuple[tuple[tuple[object, ...], ...], crypto.Keyring]:
        with read_only(self._factory) as session:
            fingerprint = _fingerprint(session)
            try:
                keyring = load_keyring(session, self._master)
            except KeyStoreError:
                if not self._follow_master():
                    raise
                keyring = load_keyring(session, self._master)
        keyring.loader = self._load_version
        return fingerprint, keyring

    def _follow_master(self) -> bool:
        """Read the master key again; True if it changed (another process rotated it)."""
        if self._master_source is None:
            return False
        try:
            current = self._master_source()
        except KeyStoreError:
            return False
        if current == self._master:
            return False
        log.warning("the master key changed (tipline keys rotate-master): following it")
        self._master = current
        return True

    def _load_version(self, purpose: str, version: int) -> bytes | None:
        with read_only(self._factory) as session:
            row = session.scalars(
                select(KeyVersion).where(KeyVersion.purpose == purpose, KeyVersion.version == version)
            ).first()
            if row is None or row.retired_at is not None:
                return None
            try:
                return crypto.unwrap_kek(self._master, row.purpose, row.version, row.wrapped_key)
            except crypto.IntegrityError:
                with self._lock:
                    if not self._follow_master():
                        raise
                return crypto.unwrap_kek(self._master, row.purpose, row.version, row.wrapped_key)

    @property
    def keyring(self) -> crypto.Keyring:
        if time.monotonic() - self._checked > self._check_interval:
            self.refresh()
        return self._keyring

    def refresh(self) -> crypto.Keyring:
        """Reload if the set of versions or the primaries changed since the last look."""
        with self._lock:
            self._checked = time.monotonic()
            with read_only(self._factory) as session:
                fingerprint = _fingerprint(session)
            if fingerprint != self._fingerprint:
                self._fingerprint, self._keyring = self._load()
            return self._keyring

    def reload(self) -> crypto.Keyring:
        with self._lock:
            self._fingerprint, self._keyring = self._load()
            self._checked = time.monotonic()
            return self._keyring


def _fingerprint(session: Session) -> tuple[tuple[object, ...], ...]:
    """What changes when a key is added, made primary or retired."""
    query = select(KeyVersion.id, KeyVersion.is_primary, KeyVersion.retired_at.is_(None)).order_by(KeyVersion.id)
    return tuple(tuple(r) for r in session.execute(query).all())


def row_counts(session: Session) -> dict[tuple[str, int], int]:
    """How many rows need each (purpose, version): what keeps a key version alive."""
    from tipline.storage.models import AuditEntry, SearchTerm, User

    counts: dict[tuple[str, int], int] = {}
    for purpose, column, where in (
        (KeyPurpose.TIPS, Tip.kek_version, None),
        (KeyPurpose.CONTACTS, Contact.kek_version, None),
        (KeyPurpose.PSEUDONYM, Contact.pseudonym_version, Contact.pseudonym.is_not(None)),
        (KeyPurpose.ACCOUNTS, User.totp_kek_version, User.totp_secret_ct.is_not(None)),
        (KeyPurpose.AUDIT, AuditEntry.key_version, None),
        (KeyPurpose.SEARCH, SearchTerm.key_version, None),
    ):
        query = select(column, func.count()).group_by(column)
        if where is not None:
            query = query.where(where)
        for version, count in session.execute(query):
            if version is not None:
                counts[(purpose.value, version)] = count
    return counts


def key_status(factory: sessionmaker[Session]) -> list[dict[str, object]]:
    """Rows per key purpose and version: the proof an auditor asks for."""
    with read_only(factory) as session:
        counts = row_counts(session)
        rows = session.scalars(select(KeyVersion).order_by(KeyVersion.purpose, KeyVersion.version)).all()
        return [
            {
                "purpose": row.purpose,
                "version": row.version,
                "primary": row.is_primary,
                "created_at": row.created_at,
                "retired": row.retired_at is not None,
                "rows": counts.get((row.purpose, row.version), 0),
            }
            for row in rows
        ]


SECRET_KEY_FILE = "secret.key"  # signs console cookies (Flask SECRET_KEY) when TIPLINE_SECRET_KEY is unset


def secret_key(settings: Settings, create: bool = False) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SECRET_KEY_FILE
    if not path.exists():
        if not create:
            raise KeyStoreError(f"no secret key: set TIPLINE_SECRET_KEY or run `tipline init` to create {path}")
        write_secret_file(path, base64.b64encode(crypto.new_key()) + b"\n")
    return path.read_text().strip()
