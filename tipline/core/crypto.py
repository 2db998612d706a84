"""Encryption at rest: master key -> versioned key-encryption keys (KEKs) -> per-row data keys.

The hierarchy (PRODUCT §4):
- the master key (32 bytes) lives outside the database and only wraps KEKs;
- KEKs exist per purpose (`tips`, `contacts`, `pseudonym`) and version; one version per purpose is
  primary and used for new data, the others still open old data until rotation re-wraps it;
- every tip and every contact has its own random data key (DEK), stored wrapped by a KEK together
  with that KEK's version, so rotating a KEK re-wraps 32-byte keys and never touches content;
- every encrypted field is AES-256-GCM under the row's DEK with a fresh 96-bit nonce and associated
  data naming table, column and row, so a ciphertext moved to another row or column fails to open.

Blobs start with a format byte so the algorithm can change later without guessing. No timestamp is
kept inside or beside a ciphertext (Fernet tokens carry one in clear, which dates a tipster's
activity). This module is pure: no database, no framework.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tipline.core.vocabulary import KeyPurpose

FORMAT_AES256GCM = 1
NONCE_BYTES = 12
KEY_BYTES = 32

PURPOSES = tuple(KeyPurpose)  # every purpose has its own key versions (see vocabulary.KeyPurpose)


class IntegrityError(Exception):
    """A ciphertext failed authentication: altered, truncated, or not from this row, field or key.

    Never carries the plaintext or the key; only where the failure happened.
    """


class MissingKeyError(Exception):
    """A row refers to a key version this keyring does not hold."""


def new_key() -> bytes:
    return os.urandom(KEY_BYTES)


def aad(table: str, column: str, row: str) -> bytes:
    """Associated data binding a ciphertext to one field of one row."""
    return f"tipline/v1|{table}.{column}|{row}".encode()


def seal(key: bytes | AESGCM, plaintext: bytes, associated: bytes) -> bytes:
    """Encrypt with AES-256-GCM under a fresh random nonce; returns format byte + nonce + ciphertext."""
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    nonce = os.urandom(NONCE_BYTES)
    return bytes([FORMAT_AES256GCM]) + nonce + cipher.encrypt(nonce, plaintext, associated)


def open_sealed(key: bytes | AESGCM, blob: bytes, associated: bytes) -> bytes:
    """Decrypt a blob made by `seal`; raise IntegrityError if it does not authenticate."""
    if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != FORMAT_AES256GCM:
        raise IntegrityError(f"malformed ciphertext for {associated.decode(errors='replace')}")
    cipher = key if isinstance(key, AESGCM) else AESGCM(key)
    try:
        return cipher.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], associated)
    except InvalidTag:
        raise IntegrityError(f"ciphertext does not authenticate for {associated.decode(errors='replace')}") from None


def kek_aad(purpose: str, version: int) -> bytes:
    return f"tipline/kek/v1|{purpose}|{version}".encode()


def dek_aad(purpose: str, owner: str, version: int) -> bytes:
    return f"tipline/dek/v1|{purpose}|{owner}|kek={version}".encode()


@dataclass
class Keyring:
    """The unwrapped KEKs of every version, and which version of each purpose is primary."""

    keks: dict[tuple[str, int], bytes]
    primary: dict[str, int]
    # Fetches a version this keyring has not seen yet (another process rotated): (purpose, version) -> key.
    loader: Callable[[str, int], bytes | None] | None = field(default=None, repr=False)
    _ciphers: dict[tuple[str, int], AESGCM] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:  # never print key material, not even by accident in a traceback
        versions = sorted(self.keks)
        return f"Keyring(versions={versions}, primary={self.primary})"

    def _key(self, purpose: str, version: int) -> bytes:
        key = self.keks.get((purpose, version))
        if key is None and self.loader is not None:
            key = self.loader(purpose, version)
            if key is not None:
                self.keks[(purpose, version)] = key
        if key is None:
            raise MissingKeyError(f"no {purpose} key of version {version}")
        return key

    def _cipher(self, purpose: str, version: int) -> AESGCM:
        cipher = self._ciphers.get((purpose, version))
        if cipher is None:
            cipher = self._ciphers[(purpose, version)] = AESGCM(self._key(purpose, version))
        return cipher

    def primary_version(self, purpose: str) -> int:
        try:
            return self.primary[purpose]
        except KeyError:
            raise MissingKeyError(f"no primary {purpose} key; run `tipline init`") from None

    def wrap_dek(self, purpose: str, dek: bytes, owner: str) -> tuple[int, bytes]:
        """Wrap a data key under the primary KEK of `purpose`, bound to its owner row."""
        version = self.primary_version(purpose)
        return version, seal(self._cipher(purpose, version), dek, dek_aad(purpose, owner, version))

    def unwrap_dek(self, purpose: str, version: int, wrapped: bytes, owner: str) -> bytes:
        return open_sealed(self._cipher(purpose, version), wrapped, dek_aad(purpose, owner, version))

    def rewrap_deks(self, purpose: str, version: int, wrapped: Iterable[tuple[object, int, bytes]]) -> list[bytes]:
        """Unwrap data keys and wrap them again under `version`; the keys themselves never change.

        `wrapped` holds (owner, old version, wrapped key) per row. This is a rotation's hot loop, so
        it does by hand what `unwrap_dek` and `wrap_dek` do per key (same format and associated data,
        see `dek_aad`), with the ciphers looked up once and the nonces drawn in one call.
        """
        rows = list(wrapped)
        new = self._cipher(purpose, version)
        ciphers: dict[int, AESGCM] = {}
        nonces = os.urandom(NONCE_BYTES * len(rows))
        prefix = bytes([FORMAT_AES256GCM])
        out = []
        for n, (owner, old_version, blob) in enumerate(rows):
            old = ciphers.get(old_version)
            if old is None:
                old = ciphers[old_version] = self._cipher(purpose, old_version)
            associated = f"tipline/dek/v1|{purpose}|{owner}|kek={old_version}".encode()
            if len(blob) < 1 + NONCE_BYTES + 16 or blob[0] != FORMAT_AES256GCM:
                raise IntegrityError(f"malformed ciphertext for {associated.decode()}")
            try:
                dek = old.decrypt(blob[1 : 1 + NONCE_BYTES], blob[1 + NONCE_BYTES :], associated)
            except InvalidTag:
                raise IntegrityError(f"ciphertext does not authenticate for {associated.decode()}") from None
            nonce = nonces[n * NONCE_BYTES : (n + 1) * NONCE_BYTES]
            associated = f"tipline/dek/v1|{purpose}|{owner}|kek={version}".encode()
            out.append(prefix + nonce + new.encrypt(nonce, dek, associated))
        return out

    def keyed_hash(self, label: str, value: str, version: int | None = None) -> tuple[int, str]:
        """HMAC-SHA256 under the pseudonym key: (version, hex digest).

        Used for sender pseudonyms and for remembering provider delivery ids. Never an unkeyed
        hash: the space of phone numbers is small enough to enumerate.
        """
        if version is None:
            version = self.primary_version(KeyPurpose.PSEUDONYM)
        key = self._key(KeyPurpose.PSEUDONYM, version)
        digest = hmac.new(key, f"{label}\x00{value}".encode(), hashlib.sha256).hexdigest()
        return version, digest

    def seal_with(self, purpose: str, plaintext: bytes, associated: bytes) -> tuple[int, bytes]:
        """Seal a small secret directly under the primary KEK of `purpose` (e.g. TOTP secrets)."""
        version = self.primary_version(purpose)
        return version, seal(self._cipher(purpose, version), plaintext, associated)

    def open_with(self, purpose: str, version: int, blob: bytes, associated: bytes) -> bytes:
        return open_sealed(self._cipher(purpose, version), blob, associated)

    def mac(self, purpose: str, message: bytes, version: int | None = None) -> tuple[int, str]:
        """HMAC-SHA256 under the key of `purpose` (e.g. the audit chain)."""
        if version is None:
            version = self.primary_version(purpose)
        return version, hmac.new(self._key(purpose, version), message, hashlib.sha256).hexdigest()

    def pseudonym(self, channel: str, address: str, version: int | None = None) -> tuple[int, str]:
        """The keyed pseudonym of a sender: HMAC-SHA256(pepper, "channel:address")."""
        return self.keyed_hash("sender", f"{channel}:{address}", version)

    def pseudonym_versions(self) -> list[int]:
        """Every pseudonym key version, primary first (a sender may be known under an older one)."""
        primary = self.primary_version(KeyPurpose.PSEUDONYM)
        others = sorted((v for (p, v) in self.keks if p == KeyPurpose.PSEUDONYM and v != primary), reverse=True)
        return [primary, *others]


def wrap_kek(master: bytes, purpose: str, version: int, kek: bytes) -> bytes:
    return seal(master, kek, kek_aad(purpose, version))


def unwrap_kek(master: bytes, purpose: str, version: int, wrapped: bytes) -> bytes:
    return open_sealed(master, wrapped, kek_aad(purpose, version))
