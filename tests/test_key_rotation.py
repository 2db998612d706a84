"""Key rotation: online under traffic, resumable after kill -9, provable, and retire-able."""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, insert, select

from tests.support.anonymity import scan_database
from tests.support.console import person
from tests.support.harness import Harness, new_sid
from tests.support.processes import TIPLINE, environment, process_tree, run, spawn, workdir
from tipline.config import load_settings
from tipline.core import crypto
from tipline.core.channels import InboundMessage
from tipline.core.vocabulary import KeyPurpose, MessageKind, RotationStatus, TipStatus
from tipline.runtime import Runtime, build_runtime
from tipline.services import review, rotation
from tipline.storage import records
from tipline.storage.db import read_only
from tipline.storage.keystore import KeyStoreError, load_keyring, load_master_key
from tipline.storage.models import AuditEntry, Contact, KeyRotation, KeyVersion, Message, Tip, utcnow

PURPOSES = (KeyPurpose.TIPS, KeyPurpose.CONTACTS, KeyPurpose.PSEUDONYM)


def start(tipline: Harness, purpose: KeyPurpose, reencrypt: bool = False, actor: str | None = None) -> int:
    """Begin (or resume) a rotation of `purpose` with the tip line's master key; returns its id."""
    return rotation.start(tipline.runtime.ctx, tipline.master_key(), purpose, reencrypt, actor)


def finish(tipline: Harness, rotation_id: int) -> bool:
    """Run the rotation to its end in this process."""
    return rotation.run(tipline.runtime.ctx, rotation_id)


def versions(tipline: Harness, purpose: KeyPurpose) -> list[tuple[int, bool, bool]]:
    with tipline.runtime.factory() as session:
        return [
            (k.version, k.is_primary, k.retired_at is not None)
            for k in session.scalars(
                select(KeyVersion).where(KeyVersion.purpose == purpose).order_by(KeyVersion.version)
            )
        ]


def all_readable(tipline: Harness) -> dict[str, str]:
    """Every tip's description and thread decrypted (raises on any integrity failure)."""
    out = {}
    keyring = tipline.runtime.keys.keyring
    with tipline.runtime.factory() as session:
        for tip in session.scalars(select(Tip)):
            key = records.tip_dek(keyring, tip)
            out[tip.reference] = records.read_tip_field(tip, key, "what")
            for message in session.scalars(select(Message).where(Message.tip_id == tip.id)):
                records.read_message(tip, key, message)
    return out


def test_rotation_while_tips_keep_arriving(tipline: Harness) -> None:
    by_sender = {n: tipline.submit_tip(f"tip {n} about a stolen car", f"+1555555{n:04d}") for n in range(30)}
    before = set(by_sender.values())
    stop = threading.Event()
    arrived: list[str] = []

    def traffic() -> None:
        n = 100
        while not stop.is_set():
            arrived.append(tipline.submit_tip(f"tip {n} during rotation", f"+1555555{n:04d}"))
            n += 1

    thread = threading.Thread(target=traffic)
    thread.start()
    try:
        for purpose in PURPOSES:
            rotation_id = start(tipline, purpose, actor="test")
            assert finish(tipline, rotation_id)
            time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert arrived, "no tip arrived during the rotation"
    texts = all_readable(tipline)
    assert before | set(arrived) == set(texts)  # nothing lost, everything readable
    status = {(r["purpose"], r["version"]): r["rows"] for r in rotation.status_rows(tipline.runtime.ctx)}
    assert status[(KeyPurpose.TIPS, 1)] == 0
    assert status[(KeyPurpose.TIPS, 2)] == len(texts)
    assert status[(KeyPurpose.CONTACTS, 1)] == 0
    assert status[(KeyPurpose.PSEUDONYM, 1)] == 0
    # Senders are still recognised under the new pepper: a follow-up joins their tip
    reference = by_sender[0]
    sender = "+15555550000"
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert detail.what == "tip 0 about a stolen car"
    assert tipline.say("one more detail", sender=sender) == [f"Added to tip {reference}. Thank you."]


def test_reencrypt_gives_fresh_data_keys_and_keeps_content(tipline: Harness) -> None:
    reference = tipline.submit_tip("A tip that must survive re-encryption", "+15555550101")
    tipline.say("and a follow-up", sender="+15555550101")
    review.reply(tipline.runtime.ctx, reference, "Queued reply")
    with tipline.runtime.factory() as session:
        old_tip = session.scalars(select(Tip)).one()
        old_dek = records.tip_dek(tipline.runtime.keys.keyring, old_tip)
        old_what = old_tip.what_ct
    for purpose in (KeyPurpose.TIPS, KeyPurpose.CONTACTS):
        rotation_id = start(tipline, purpose, reencrypt=True)
        assert finish(tipline, rotation_id)
    with tipline.runtime.factory() as session:
        tip = session.scalars(select(Tip)).one()
        assert tip.what_ct != old_what
        assert records.tip_dek(tipline.runtime.keys.keyring, tip) != old_dek
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert detail.what == "A tip that must survive re-encryption"
    assert detail.thread[-1].text == "Queued reply"
    tipline.dispatch()  # the outbox payload was re-sealed under the contact's new data key
    assert tipline.twilio.sent[-1]["Body"] == "Example City Police: Queued reply"
    with pytest.raises(crypto.IntegrityError):
        crypto.open_sealed(old_dek, tip.what_ct, crypto.aad("tips", "what", reference))


def test_a_message_arriving_while_its_tip_is_reencrypted_stays_readable(tipline: Harness) -> None:
    """The rotation holds the tip's new key uncommitted; intake must wait and seal under it."""
    reference = tipline.submit_tip("A tip being re-encrypted as it arrives", "+15555550133")
    start(tipline, KeyPurpose.TIPS, reencrypt=True)
    keyring = tipline.runtime.keys.keyring
    locked, release = threading.Event(), threading.Event()

    def reencrypt_slowly() -> None:
        with tipline.runtime.factory.begin() as session:
            tip = session.scalars(select(Tip).where(Tip.reference == reference).with_for_update()).one()
            rotation._reencrypt_tip(session, keyring, tip)
            session.flush()
            locked.set()
            release.wait(10)

    worker = threading.Thread(target=reencrypt_slowly)
    worker.start()
    assert locked.wait(10)
    answer: list[list[str]] = []
    sender = threading.Thread(
        target=lambda: answer.append(tipline.say("a detail sent meanwhile", sender="+15555550133"))
    )
    sender.start()
    time.sleep(0.5)  # the message is now waiting for the rotation's transaction (or would read the old key)
    release.set()
    worker.join(10)
    sender.join(10)
    assert answer == [[f"Added to tip {reference}. Thank you."]]
    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert [e.text for e in detail.thread if e.kind == MessageKind.TIPSTER][-1] == "a detail sent meanwhile"


def test_an_erasure_between_reading_and_writing_a_batch_is_not_undone(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two tipsters, and another process that has not yet seen the new contacts key
    tipline.submit_tip("a tip from a tipster who stays", "+15555550131")
    tipline.submit_tip("a tip from a tipster who opts out", "+15555550132")
    other = build_runtime(tipline.runtime.settings)
    other.keys._check_interval = 3600.0
    keyring = tipline.runtime.keys.keyring
    pseudonym = keyring.pseudonym("sms", "+15555550132")[1]
    with tipline.runtime.factory() as session:
        contact = session.scalars(select(Contact).where(Contact.pseudonym == pseudonym)).one()
        shredded = records.contact_dek(keyring, contact)
    # When the tipster texts STOP through that process after the rotation read its batch and
    # re-wrapped the old data key, before it writes it (the cryptography runs outside the write lock)
    read_batch = rotation._rewrap_batch
    erased: list[bool] = []

    def read_then_erase(*args: Any) -> rotation.Rewrapped:
        batch = read_batch(*args)
        if batch.updates and not erased:
            other.intake.receive(InboundMessage("sms", "+15555550132", new_sid(), "STOP"))
            erased.append(True)
        return batch

    monkeypatch.setattr(rotation, "_rewrap_batch", read_then_erase)
    try:
        rotation_id = start(tipline, KeyPurpose.CONTACTS)
        assert finish(tipline, rotation_id)
    finally:
        other.close()
    # Then the erasure's fresh data key survives, re-wrapped by a later pass: the shredded one is not back
    assert erased
    with tipline.runtime.factory() as session:
        contact = session.get_one(Contact, contact.id)
        assert contact.kek_version == 2
        assert records.contact_dek(keyring, contact) != shredded
        assert records.read_address(contact, records.contact_dek(keyring, contact)) is None
        record = session.get_one(KeyRotation, rotation_id)
        assert (record.status, record.rows_done) == (RotationStatus.DONE, 2)
    assert "Added to tip" in tipline.say("still here", sender="+15555550131")[0]


def test_pepper_rotation_unlinks_senders_whose_address_was_erased(tipline: Harness) -> None:
    tipline.submit_tip("first tipster keeps their link", "+15555550111")
    gone = tipline.submit_tip("second tipster opts out", "+15555550122")
    tipline.say("STOP", sender="+15555550122")
    rotation_id = start(tipline, KeyPurpose.PSEUDONYM)
    finish(tipline, rotation_id)
    with tipline.runtime.factory() as session:
        record = session.get(KeyRotation, rotation_id)
        assert (record.rows_done, record.unlinked) == (2, 1)
        assert session.scalar(select(func.count()).select_from(Contact).where(Contact.pseudonym.is_(None))) == 1
    assert "Added to tip" in tipline.say("still here", sender="+15555550111")[0]
    assert "anonymous" in tipline.say("hello", sender="+15555550122")[0]  # a new conversation
    assert review.read_tip(tipline.runtime.ctx, gone).what == "second tipster opts out"


def test_a_rerun_resumes_instead_of_minting_another_version(tipline: Harness) -> None:
    tipline.submit_tip("a stolen bike is kept in the garage on Oak St", "+15555550131")
    first = start(tipline, KeyPurpose.TIPS)
    again = start(tipline, KeyPurpose.TIPS)
    assert first == again
    assert [v for v, _, _ in versions(tipline, KeyPurpose.TIPS)] == [1, 2]
    finish(tipline, again)
    third = start(tipline, KeyPurpose.TIPS)
    assert third != first
    assert [v for v, _, _ in versions(tipline, KeyPurpose.TIPS)] == [1, 2, 3]


def test_retire_refuses_while_rows_remain_then_destroys_the_key(tipline: Harness) -> None:
    tipline.submit_tip("a tip protected by v1", "+15555550141")
    with tipline.runtime.factory() as session:
        wrapped_v1 = session.scalars(
            select(KeyVersion.wrapped_key).where(KeyVersion.purpose == KeyPurpose.TIPS, KeyVersion.version == 1)
        ).one()
    raw_v1 = tipline.runtime.keys.keyring.keks[(KeyPurpose.TIPS, 1)]
    rotation_id = start(tipline, KeyPurpose.TIPS)
    with pytest.raises(rotation.RotationError, match="1 rows still need tips v1"):
        rotation.retire(tipline.runtime.ctx, KeyPurpose.TIPS, 1)
    with pytest.raises(rotation.RotationError, match="primary"):
        rotation.retire(tipline.runtime.ctx, KeyPurpose.TIPS, 2)
    finish(tipline, rotation_id)
    rotation.retire(tipline.runtime.ctx, KeyPurpose.TIPS, 1, actor="test")
    assert versions(tipline, KeyPurpose.TIPS) == [(1, False, True), (2, True, False)]
    hex_needles = [wrapped_v1.hex(), raw_v1.hex()]
    assert scan_database(tipline.runtime.engine, hex_needles) == []
    files = [p for p in tipline.data_dir.rglob("*") if p.is_file()]
    leftovers = [p for p in files if wrapped_v1 in p.read_bytes() or raw_v1 in p.read_bytes()]
    assert leftovers == []  # neither the database, its WAL, nor the key files hold the old key
    assert all_readable(tipline)


def test_the_old_master_key_opens_nothing_after_rotate_master(tipline: Harness) -> None:
    reference = tipline.submit_tip("a tip across a master key change", "+15555550151")
    old = tipline.master_key()
    new = crypto.new_key()
    assert rotation.rotate_master(tipline.runtime.ctx, old, new) == len(crypto.PURPOSES)  # one key per purpose
    assert base64.b64decode((tipline.data_dir / "master.key").read_bytes().strip()) == new
    with tipline.runtime.factory() as session, pytest.raises(KeyStoreError, match="does not open"):
        load_keyring(session, old)
    fresh = build_runtime(tipline.runtime.settings)
    try:
        assert review.read_tip(fresh.ctx, reference).what == "a tip across a master key change"
    finally:
        fresh.close()


def test_an_interrupted_master_rotation_recovers_either_way(tipline: Harness) -> None:
    settings = tipline.runtime.settings
    path = tipline.data_dir / "master.key"
    old = tipline.master_key()
    # Crashed after writing master.key.next, before the database committed: the old key stays.
    (path.with_name("master.key.next")).write_bytes(base64.b64encode(crypto.new_key()) + b"\n")
    assert "never committed" in rotation.recover_master(settings, tipline.runtime.factory)
    assert load_master_key(settings) == old
    # Crashed after the commit, before the rename: the new key takes over.
    new = crypto.new_key()
    with tipline.runtime.factory.begin() as session:
        for row in session.scalars(select(KeyVersion).where(KeyVersion.retired_at.is_(None))):
            row.wrapped_key = crypto.wrap_kek(
                new, row.purpose, row.version, crypto.unwrap_kek(old, row.purpose, row.version, row.wrapped_key)
            )
    path.with_name("master.key.next").write_bytes(base64.b64encode(new) + b"\n")
    assert "finished" in rotation.recover_master(settings, tipline.runtime.factory)
    assert load_master_key(settings) == new


def test_keys_status_json_is_the_auditors_proof(cli_env: dict[str, str]) -> None:
    assert run(cli_env, "init").returncode == 0
    rotated = run(cli_env, "keys", "rotate", "--purpose", "tips")
    assert rotated.returncode == 0, rotated.stderr
    status = json.loads(run(cli_env, "keys", "status", "--json").stdout)
    tips = [r for r in status if r["purpose"] == "tips"]
    assert [(r["version"], r["primary"], r["rows"]) for r in tips] == [(1, False, 0), (2, True, 0)]
    assert all({"purpose", "version", "primary", "created_at", "rows"} <= set(r) for r in status)
    assert run(cli_env, "keys", "retire", "--purpose", "tips", "--version", "1").returncode == 0
    assert run(cli_env, "keys", "rotate", "--purpose", "audit").returncode == 0
    refused = run(cli_env, "keys", "retire", "--purpose", "audit", "--version", "1")
    assert refused.returncode == 2
    assert "rows still need audit v1" in refused.stderr  # old entries stay verifiable
    new_master = base64.b64encode(os.urandom(32)).decode()
    rotated_master = run(cli_env, "keys", "rotate-master", stdin=new_master + "\n")
    assert rotated_master.returncode == 0, rotated_master.stderr
    assert "re-wrapped" in rotated_master.stdout
    assert run(cli_env, "keys", "status").returncode == 0  # the new master key file opens everything


def fill(runtime: Runtime, count: int, messages: int = 0) -> None:
    """Tips in bulk (fast path): real wrapped data keys and sealed fields, optional thread messages."""
    keyring = runtime.keys.keyring
    now = utcnow()
    tips, bodies = [], []
    for n in range(count):
        reference = f"T-K{n:06d}"
        dek = crypto.new_key()
        version, wrapped = keyring.wrap_dek(KeyPurpose.TIPS, dek, reference)
        tips.append(
            {
                "reference": reference,
                "alias": "ABCD",
                "channel": "sms",
                "status": TipStatus.NEW,
                "urgent": False,
                "kek_version": version,
                "wrapped_dek": wrapped,
                "message_count": messages,
                "unread": 0,
                "what_ct": crypto.seal(dek, f"tip {n}".encode(), crypto.aad("tips", "what", reference)),
                "created_at": now,
                "updated_at": now,
                "submitted_at": now,
            }
        )
        bodies.append(
            [
                records.MESSAGE_BODY.seal(
                    dek,
                    records.message_row_id(reference, m + 1, MessageKind.TIPSTER, None),
                    f"message {m} of tip {n}".encode(),
                )
                for m in range(messages)
            ]
        )
    with runtime.factory.begin() as session:
        for i in range(0, count, 5000):
            session.execute(insert(Tip), tips[i : i + 5000])
        if messages:
            ids = dict(session.execute(select(Tip.reference, Tip.id)).all())
            rows = [
                {
                    "tip_id": ids[t["reference"]],
                    "seq": m + 1,
                    "kind": MessageKind.TIPSTER,
                    "body_ct": body,
                    "created_at": now,
                }
                for t, tip_bodies in zip(tips, bodies, strict=True)
                for m, body in enumerate(tip_bodies)
            ]
            for i in range(0, len(rows), 5000):
                session.execute(insert(Message), rows[i : i + 5000])


@pytest.mark.parametrize("reencrypt,count,messages", [(False, 60_000, 0), (True, 1_500, 2)])
def test_a_rotation_killed_at_random_points_resumes_and_completes(
    cli_env: dict[str, str],
    reencrypt: bool,
    count: int,
    messages: int,
) -> None:
    assert run(cli_env, "init").returncode == 0
    settings = load_settings(cli_env)
    runtime = build_runtime(settings)
    fill(runtime, count, messages)
    command = ["keys", "rotate", "--purpose", "tips", *(["--reencrypt"] if reencrypt else [])]
    rng = random.Random(20261127 + reencrypt)
    kills = 0
    progress: list[int] = []
    try:
        while kills < 10:
            process = spawn(cli_env, *command)
            # Kill after a random further 4-7% of the rows, read from the committed progress record.
            target = (progress[-1] if progress else 0) + rng.randint(count // 25, count // 15)
            deadline = time.monotonic() + 60
            done = 0
            while time.monotonic() < deadline and process.poll() is None:
                with read_only(runtime.factory) as session:  # a reader never waits for the rotation's writes
                    done = session.scalar(select(func.max(KeyRotation.rows_done))) or 0
                if done >= target:
                    break
                time.sleep(0.001)
            if process.poll() is not None:
                break  # it finished before we could kill it: the dataset was too small for this machine
            process.send_signal(signal.SIGKILL)  # no clean-up, no signal handler: power-cut semantics for the process
            process.wait()
            kills += 1
            progress.append(done)
        finished = run(cli_env, *command, timeout=300)
        assert finished.returncode == 0, finished.stderr
    finally:
        runtime.close()
    assert kills == 10, f"only {kills} kills landed mid-rotation"
    assert any(0 < p < count for p in progress)  # kills landed in the middle, not only before or after
    runtime = build_runtime(settings)
    try:
        keyring = runtime.keys.keyring
        with runtime.factory() as session:
            tip_versions = [
                v for (v,) in session.execute(select(KeyVersion.version).where(KeyVersion.purpose == KeyPurpose.TIPS))
            ]
            assert sorted(tip_versions) == [1, 2]  # ten resumes, one new version
            assert session.scalar(select(func.count()).select_from(Tip).where(Tip.kek_version != 2)) == 0
            for tip in session.scalars(select(Tip)):
                key = records.tip_dek(keyring, tip)  # a double-wrapped key would fail here
                assert records.read_tip_field(tip, key, "what") == f"tip {int(tip.reference[3:])}"
            for message in session.scalars(select(Message).limit(500)):
                tip = session.get(Tip, message.tip_id)
                assert records.read_message(tip, records.tip_dek(keyring, tip), message).startswith("message ")
            record = session.scalars(select(KeyRotation)).one()
            assert record.status == RotationStatus.DONE
            assert record.reencrypt is reencrypt
        rotation.retire(runtime.ctx, KeyPurpose.TIPS, 1)  # nothing needs v1 any more
    finally:
        runtime.close()


def read_ahead_helper(rotating: subprocess.Popen[bytes], seconds: float = 60) -> int:
    """The helper process `keys rotate` forks to read ahead (rotation._ReadAhead), once it exists."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and rotating.poll() is None:
        children = process_tree(rotating.pid)[1:]
        if children:
            assert len(children) == 1, children
            return children[0]
        time.sleep(0.001)
    raise AssertionError(f"keys rotate (exit {rotating.poll()}) started no read-ahead helper")


def ended(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # a zombie has ended; its new parent has not reaped it yet


def rotated_every_tip(runtime: Runtime, version: int) -> None:
    keyring = runtime.keys.refresh()
    with runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Tip).where(Tip.kek_version != version)) == 0
        for tip in session.scalars(select(Tip).order_by(func.random()).limit(300)):
            assert records.read_tip_field(tip, records.tip_dek(keyring, tip), "what") == f"tip {int(tip.reference[3:])}"
        assert (
            session.scalars(select(KeyRotation).order_by(KeyRotation.id.desc())).first().status == RotationStatus.DONE
        )


def test_a_large_rotation_reads_ahead_in_a_helper_that_ends_with_it_and_is_not_needed_to_finish(
    cli_env: dict[str, str],
) -> None:
    # Given tips enough for `keys rotate` to read and re-wrap ahead in a helper process
    assert run(cli_env, "init").returncode == 0
    runtime = build_runtime(load_settings(cli_env))
    command = ("keys", "rotate", "--purpose", "tips")
    try:
        fill(runtime, 2 * rotation.READ_AHEAD_ROWS)
        # When the helper is killed in the middle of a rotation
        with (workdir(cli_env) / "rotate.log").open("w") as out:
            rotating = spawn(cli_env, *command, output=out)
            os.kill(read_ahead_helper(rotating), signal.SIGKILL)
            # Then the rotation finishes without it, and says so
            assert rotating.wait(timeout=120) == 0
        said = (workdir(cli_env) / "rotate.log").read_text()
        assert re.search(
            r"WARNING .*: rotation read-ahead stopped \((EOFError|ConnectionResetError)\); reading in", said
        )
        rotated_every_tip(runtime, 2)

        # When the rotating process is killed (the next rotation, v3)
        rotating = spawn(cli_env, *command)
        helper = read_ahead_helper(rotating)
        rotating.kill()
        rotating.wait()
        # Then its helper ends too, at once: nothing is left reading keys
        deadline = time.monotonic() + 10
        while not ended(helper) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ended(helper), "the read-ahead helper outlived the rotation"
        # And the same command resumes and completes it
        finished = run(cli_env, *command, timeout=300)
        assert finished.returncode == 0, finished.stderr
        rotated_every_tip(runtime, 3)
    finally:
        runtime.close()


def test_a_rotation_taken_over_by_a_reencryption_says_so_and_fails(cli_env: dict[str, str]) -> None:
    """`keys rotate` must not say "v2 is primary; N rows moved" when another administrator's
    `--reencrypt` took its place before it finished: v3 is primary, and the re-encryption moves the rows."""
    assert run(cli_env, "init").returncode == 0
    settings = load_settings(cli_env)
    runtime = build_runtime(settings)
    try:
        fill(runtime, 50)
        # Given `keys rotate` that has moved every tip to v2 and waits out the keys' propagation
        rotating = subprocess.Popen(
            [*TIPLINE, "keys", "rotate", "--purpose", "tips"],
            env=environment(cli_env),
            cwd=workdir(cli_env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and on_version(runtime, 2) < 50:
            time.sleep(0.02)
        assert on_version(runtime, 2) == 50
        # When another administrator starts a re-encryption meanwhile
        taken_over = rotation.start(runtime.ctx, load_master_key(settings), KeyPurpose.TIPS, reencrypt=True)
        # Then the first command fails, naming what took over, and does not claim v2
        out, err = rotating.communicate(timeout=60)
        assert rotating.returncode == 2, (out, err)
        assert "taken over by a re-encrypting rotation" in err
        assert "--reencrypt" in err
        assert "is primary" not in out
        assert rotation.run(runtime.ctx, taken_over)  # and the re-encryption it names moves every tip
        rotated_every_tip(runtime, 3)
    finally:
        runtime.close()


def on_version(runtime: Runtime, version: int) -> int:
    with runtime.factory() as session:
        return session.scalar(select(func.count()).select_from(Tip).where(Tip.kek_version == version)) or 0


def test_a_large_rotation_stops_at_a_key_copied_from_another_row_as_a_small_one_does(
    tipline: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    # Given tips enough for a helper to read ahead, and someone with write access to the database
    # who copied the first tip's wrapped key into the 10,001st tip
    fill(tipline.runtime, rotation.READ_AHEAD_ROWS + 2000)
    with tipline.runtime.factory.begin() as session:
        first = session.scalars(select(Tip).where(Tip.reference == "T-K000000")).one()
        victim = session.scalars(select(Tip).where(Tip.reference == "T-K010000")).one()
        victim.wrapped_dek = first.wrapped_dek
        victim_id = victim.id
    # When the tips key is rotated
    rotation_id = start(tipline, KeyPurpose.TIPS)
    with (
        caplog.at_level(logging.WARNING, logger="tipline.services.rotation"),
        pytest.raises(crypto.IntegrityError, match=r"does not authenticate for tipline/dek/v1\|tips\|T-K010000\|"),
    ):
        finish(tipline, rotation_id)
    # Then it fails closed on that row, as it would have without the helper, which said why it stopped
    assert "rotation read-ahead stopped (IntegrityError: " in caplog.text
    with tipline.runtime.factory() as session:
        moved = session.scalars(select(Tip.id).where(Tip.kek_version == 2)).all()
        batch = rotation.REWRAP_BATCH.get(session.get_bind().dialect.name, rotation.BATCH)
    assert moved and len(moved) % batch == 0 and max(moved) < victim_id  # whole batches, all before the victim
    # And every row it moved opens under the new version
    keyring = tipline.runtime.keys.keyring
    with tipline.runtime.factory() as session:
        for tip in session.scalars(select(Tip).where(Tip.id.in_(moved[:: len(moved) // 50]))):
            assert records.read_tip_field(tip, records.tip_dek(keyring, tip), "what") == f"tip {int(tip.reference[3:])}"


def test_an_admin_starts_a_rotation_that_the_dispatcher_finishes(tipline: Harness) -> None:
    tipline.submit_tip("a stolen bike is kept in the garage on Oak St", "+15555550161")
    alex = person(tipline.app, tipline.runtime.ctx, "alex", roles=("admin",))
    alex.sign_in()
    alex.get("/console/admin/keys")
    response = alex.post("/console/admin/keys/rotate", {"purpose": "tips"})
    assert "Rotation of tips started" in alex.get(response.location).get_data(as_text=True)
    while tipline.runtime.rotate_some():
        pass
    page = alex.get("/console/admin/keys").get_data(as_text=True)
    assert '<td class="state">done</td>' in page
    assert "1 / 1" in page
    with tipline.runtime.factory() as session:
        actions = [(e.actor, e.action) for e in session.scalars(select(AuditEntry))]
    assert ("alex", "keys.rotate") in actions
    assert ("alex", "keys.rotate_done") in actions


def test_another_process_follows_a_rotation_it_did_not_make(tipline: Harness) -> None:
    # Given a second process (its own key store) serving the same database, between two looks at the primaries
    other = build_runtime(tipline.runtime.settings)
    try:
        other.keys._check_interval = 3600.0
        # When this process rotates the tips key and re-wraps a tip under the new version
        reference = tipline.submit_tip("a tip re-wrapped by another process", "+15555550171")
        rotation_id = start(tipline, KeyPurpose.TIPS)
        finish(tipline, rotation_id)
        # Then the other process still opens it: the unseen version is loaded on demand
        assert review.read_tip(other.ctx, reference).what == "a tip re-wrapped by another process"
        assert other.keys.keyring.primary_version(KeyPurpose.TIPS) == 1  # not looked yet
        # And at its next look it writes under the new primary
        assert other.keys.refresh().primary_version(KeyPurpose.TIPS) == 2
    finally:
        other.close()


def test_a_redelivery_after_a_pepper_rotation_is_still_recognised(tipline: Harness) -> None:
    sid = new_sid()
    assert tipline.say("hi")
    tipline.sms("A tip delivered twice across a rotation", sid=sid)
    rotation_id = start(tipline, KeyPurpose.PSEUDONYM)
    finish(tipline, rotation_id)
    again = tipline.sms("A tip delivered twice across a rotation", sid=sid)
    assert "<Message" not in again.get_data(as_text=True)
    with tipline.runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(Message).where(Message.kind == MessageKind.TIPSTER)) == 1
