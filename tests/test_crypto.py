"""Encryption at rest: known answers, tampering, row binding, and failing closed on wrong keys."""

from __future__ import annotations

import base64
import os
import stat

import pytest
from sqlalchemy import select, update

from tests.support.harness import Harness
from tipline.config import load_settings
from tipline.core import crypto
from tipline.core.vocabulary import KeyPurpose
from tipline.runtime import build_runtime
from tipline.services import review
from tipline.storage.keystore import KeyStoreError
from tipline.storage.models import KeyVersion, Message, Tip


def test_aes_256_gcm_known_answer() -> None:
    # McGrew & Viega, "The Galois/Counter Mode of Operation", test case 14: K=0^256, IV=0^96, P=0^128.
    ciphertext = bytes.fromhex("cea7403d4d606b6e074ec5d3baf39d18")
    tag = bytes.fromhex("d0d1c8a799996bf0265b98b5d48ab919")
    blob = bytes([crypto.FORMAT_AES256GCM]) + bytes(12) + ciphertext + tag
    assert crypto.open_sealed(bytes(32), blob, b"") == bytes(16)


def test_sealing_uses_a_fresh_nonce_every_time() -> None:
    key = crypto.new_key()
    a, b = crypto.seal(key, b"same", b"ad"), crypto.seal(key, b"same", b"ad")
    assert a[1:13] != b[1:13]  # the nonce
    assert a != b


@pytest.mark.parametrize("tamper", ["flip a byte", "truncate", "other row", "other column", "other key", "format"])
def test_tampering_is_an_integrity_error_never_wrong_plaintext(tamper: str) -> None:
    key = crypto.new_key()
    blob = crypto.seal(key, b"tip text", crypto.aad("tips", "what", "T-AAAAAA"))
    cases = {
        "flip a byte": (key, blob[:-1] + bytes([blob[-1] ^ 1]), crypto.aad("tips", "what", "T-AAAAAA")),
        "truncate": (key, blob[:20], crypto.aad("tips", "what", "T-AAAAAA")),
        "other row": (key, blob, crypto.aad("tips", "what", "T-BBBBBB")),
        "other column": (key, blob, crypto.aad("tips", "where", "T-AAAAAA")),
        "other key": (crypto.new_key(), blob, crypto.aad("tips", "what", "T-AAAAAA")),
        "format": (key, b"\x02" + blob[1:], crypto.aad("tips", "what", "T-AAAAAA")),
    }
    with pytest.raises(crypto.IntegrityError):
        crypto.open_sealed(*cases[tamper])


def test_a_wrapped_data_key_cannot_be_moved_to_another_owner() -> None:
    keyring = crypto.Keyring({("tips", 1): crypto.new_key()}, {"tips": 1})
    version, wrapped = keyring.wrap_dek("tips", crypto.new_key(), "T-AAAAAA")
    with pytest.raises(crypto.IntegrityError):
        keyring.unwrap_dek("tips", version, wrapped, "T-BBBBBB")


def test_the_keyring_never_prints_key_material() -> None:
    key = crypto.new_key()
    keyring = crypto.Keyring({("tips", 1): key}, {"tips": 1})
    assert key.hex() not in repr(keyring)
    assert str(key) not in repr(keyring)


def test_pseudonyms_are_keyed_not_plain_hashes() -> None:
    import hashlib

    one = crypto.Keyring({("pseudonym", 1): crypto.new_key()}, {"pseudonym": 1})
    two = crypto.Keyring({("pseudonym", 1): crypto.new_key()}, {"pseudonym": 1})
    p1, p2 = one.pseudonym("sms", "+15555550142")[1], two.pseudonym("sms", "+15555550142")[1]
    assert p1 != p2  # without the pepper a pseudonym cannot be recomputed from a guessed number
    assert p1 != hashlib.sha256(b"sms:+15555550142").hexdigest()
    assert one.pseudonym("sms", "+15555550142") == one.pseudonym("sms", "+15555550142")
    assert one.pseudonym("sms", "+15555550142") != one.pseudonym("telegram", "+15555550142")


def test_a_ciphertext_copied_into_another_tip_fails_to_open(tipline: Harness) -> None:
    a = tipline.submit_tip("First tip about a burglary", "+15555550131")
    b = tipline.submit_tip("Second tip about vandalism", "+15555550132")
    with tipline.runtime.factory.begin() as session:
        what_a = session.scalars(select(Tip.what_ct).where(Tip.reference == a)).one()
        session.execute(update(Tip).where(Tip.reference == b).values(what_ct=what_a))
    with pytest.raises(crypto.IntegrityError):
        review.read_tip(tipline.runtime.ctx, b)


def test_a_swapped_data_key_fails_to_open(tipline: Harness) -> None:
    a = tipline.submit_tip("First tip about a burglary", "+15555550131")
    b = tipline.submit_tip("Second tip about vandalism", "+15555550132")
    with tipline.runtime.factory.begin() as session:
        dek_a = session.scalars(select(Tip.wrapped_dek).where(Tip.reference == a)).one()
        session.execute(update(Tip).where(Tip.reference == b).values(wrapped_dek=dek_a))
    with pytest.raises(crypto.IntegrityError):
        review.read_tip(tipline.runtime.ctx, b)


def test_thread_messages_are_bound_to_their_position(tipline: Harness) -> None:
    reference = tipline.submit_tip("A tip with a thread", "+15555550133")
    with tipline.runtime.factory.begin() as session:
        first, second = session.scalars(select(Message).order_by(Message.seq).limit(2)).all()
        first.body_ct, second.body_ct = second.body_ct, first.body_ct
    with pytest.raises(crypto.IntegrityError):
        review.read_tip(tipline.runtime.ctx, reference)


def test_the_wrong_master_key_refuses_to_start(tipline: Harness, env: dict[str, str]) -> None:
    wrong = load_settings({**env, "TIPLINE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()})
    with pytest.raises(KeyStoreError, match="master key does not open"):
        build_runtime(wrong)


def test_key_files_are_private_and_keys_are_wrapped_in_the_database(tipline: Harness) -> None:
    master = tipline.data_dir / "master.key"
    assert stat.S_IMODE(master.stat().st_mode) == 0o600
    raw_master = base64.b64decode(master.read_bytes().strip())
    assert len(raw_master) == 32
    keyring = tipline.runtime.keys.keyring
    with tipline.runtime.factory() as session:
        rows = session.scalars(select(KeyVersion)).all()
    assert {r.purpose for r in rows} == set(KeyPurpose)
    for row in rows:
        assert keyring.keks[(row.purpose, row.version)] not in row.wrapped_key
        assert len(keyring.keks[(row.purpose, row.version)]) == 32
