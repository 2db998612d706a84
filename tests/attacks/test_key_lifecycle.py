"""Key changes without surprises, for every running process, and thread entries that cannot be re-typed.

Threats (issue 11, finding 8):
- after `keys rotate-master`, a running process kept the old master key and failed every intake at
  the next key change, until restarted;
- other processes kept retired keys in memory;
- a rotation reported "done" while a process that had not yet seen the new primary was still
  writing rows under the old version (so `keys retire` then refused);
- a tipster's message re-typed in the database as a detective's note (or given another author)
  still opened.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select, update

from tests.support.harness import Harness, new_sid
from tests.support.processes import run
from tipline.core import crypto
from tipline.core.channels import InboundMessage
from tipline.core.vocabulary import KeyPurpose, MessageKind
from tipline.runtime import Runtime, build_runtime
from tipline.services import processes, review, rotation
from tipline.setup import initialise
from tipline.storage import records
from tipline.storage.models import DataUpgrade, Message, Tip


@pytest.fixture
def other(tipline: Harness) -> Iterator[Runtime]:
    """A second process serving the same database, with its own key store."""
    runtime = build_runtime(tipline.runtime.settings)
    try:
        yield runtime
    finally:
        runtime.close()


def text_from(runtime: Runtime, body: str, sender: str) -> None:
    runtime.intake.receive(InboundMessage("sms", sender, new_sid(), body))


def rotate(tipline: Harness, purpose: KeyPurpose = KeyPurpose.TIPS) -> None:
    rotation_id = rotation.start(tipline.runtime.ctx, tipline.master_key(), purpose)
    assert rotation.run(tipline.runtime.ctx, rotation_id)


def test_a_running_process_follows_a_master_key_rotation(tipline: Harness, other: Runtime) -> None:
    # Given another process running with the master key file, and a tip
    reference = tipline.submit_tip("a tip from before the master key changed")
    # When the master key is rotated, and then a key is rotated (its new version wrapped by the new master)
    new_master = crypto.new_key()
    assert rotation.rotate_master(tipline.runtime.ctx, tipline.master_key(), new_master) > 0
    rotate(tipline)
    # Then the other process follows: it opens the re-wrapped tip and takes new tips under the new primary
    assert review.read_tip(other.ctx, reference).what == "a tip from before the master key changed"
    assert other.keys.refresh().primary_version(KeyPurpose.TIPS) == 2
    text_from(other, "a tip taken after both rotations", "+15555550181")
    with tipline.runtime.factory() as session:
        assert session.scalars(select(Tip.kek_version).order_by(Tip.id.desc())).first() == 2


def test_rotate_master_refuses_while_processes_cannot_follow_it(tipline: Harness) -> None:
    # Given a process that runs with its master key in TIPLINE_MASTER_KEY (it cannot re-read its environment)
    settings = dataclasses.replace(tipline.runtime.settings, master_key=tipline.master_key())
    beat = processes.Heartbeat(dataclasses.replace(tipline.runtime.ctx, settings=settings), "serve").start()
    try:
        # When an administrator rotates the master key, then it refuses, saying why and what to do
        with pytest.raises(rotation.RotationError) as refused:
            rotation.rotate_master(tipline.runtime.ctx, tipline.master_key(), crypto.new_key())
        assert "TIPLINE_MASTER_KEY" in str(refused.value)
        assert "stop them" in str(refused.value)
    finally:
        beat.stop()
    # And once that process stopped, the rotation goes ahead
    assert rotation.rotate_master(tipline.runtime.ctx, tipline.master_key(), crypto.new_key()) > 0


def test_the_command_refuses_too(tipline: Harness, cli_env: dict[str, str]) -> None:
    settings = dataclasses.replace(tipline.runtime.settings, master_key=tipline.master_key())
    beat = processes.Heartbeat(dataclasses.replace(tipline.runtime.ctx, settings=settings), "dispatch").start()
    try:
        new = base64.b64encode(crypto.new_key()).decode()
        result = run(cli_env, "keys", "rotate-master", stdin=new + "\n")
        assert result.returncode != 0
        assert "TIPLINE_MASTER_KEY" in result.stderr + result.stdout
    finally:
        beat.stop()


def test_a_retired_key_leaves_every_process(tipline: Harness, other: Runtime) -> None:
    # Given another process that has used version 1 of the tips key
    reference = tipline.submit_tip("a tip sealed under v1")
    assert review.read_tip(other.ctx, reference).what == "a tip sealed under v1"
    assert (KeyPurpose.TIPS, 1) in other.keys.keyring.keks
    # When v1 is rotated away and retired
    rotate(tipline)
    rotation.retire(tipline.runtime.ctx, KeyPurpose.TIPS, 1)
    # Then at its next look the other process holds v1 no more, and cannot load it again
    keyring = other.keys.refresh()
    assert (KeyPurpose.TIPS, 1) not in keyring.keks
    with pytest.raises(crypto.MissingKeyError):
        keyring.unwrap_dek(KeyPurpose.TIPS, 1, b"\x01" + b"\x00" * 60, reference)


def test_a_rotation_is_not_done_while_a_process_may_still_write_under_the_old_key(
    tipline: Harness, other: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rotation, "PROPAGATION", dt.timedelta(seconds=2))
    tipline.submit_tip("a tip from before the rotation")
    # Given another process that looked at the primaries just now (and will not look again for a while)
    other.keys.refresh()
    other.keys._check_interval = 3600.0
    # When a rotation starts and its first pass re-wraps every row there is
    rotation_id = rotation.start(tipline.runtime.ctx, tipline.master_key(), KeyPurpose.TIPS)
    first = rotation.step(tipline.runtime.ctx, rotation_id)
    assert rotation.step(tipline.runtime.ctx, rotation_id, first.cursor).finished is False  # not yet: the window
    # And the other process, not knowing yet, takes a tip under the old version meanwhile
    text_from(other, "a tip written under the old primary", "+15555550182")
    with tipline.runtime.factory() as session:
        assert rotation.remaining(session, KeyPurpose.TIPS, 2) == 1
    # Then the rotation finishes only after that row too moved, and v1 can be retired
    assert rotation.run(tipline.runtime.ctx, rotation_id)
    with tipline.runtime.factory() as session:
        assert rotation.remaining(session, KeyPurpose.TIPS, 2) == 0
    rotation.retire(tipline.runtime.ctx, KeyPurpose.TIPS, 1)


@pytest.mark.parametrize(
    ("column", "value"),
    [("kind", MessageKind.NOTE), ("kind", MessageKind.AGENCY), ("kind", MessageKind.BOT), ("author_id", 1)],
)
def test_a_thread_entry_retyped_in_the_database_fails_to_open(tipline: Harness, column: str, value: object) -> None:
    reference = tipline.submit_tip("words the tipster wrote")
    # Given someone with write access to the database re-types the tipster's first message
    with tipline.runtime.factory.begin() as session:
        first = session.scalars(select(Message).where(Message.kind == MessageKind.TIPSTER).order_by(Message.id)).first()
        assert first is not None
        session.execute(update(Message).where(Message.id == first.id).values({column: value}))
    # Then reading the tip fails closed instead of showing a tipster's words as something else
    with pytest.raises(crypto.IntegrityError):
        review.read_tip(tipline.runtime.ctx, reference)


def test_init_binds_entries_sealed_before_kind_and_author_were_bound(tipline: Harness) -> None:
    reference = tipline.submit_tip("a message sealed the old way")
    keyring = tipline.runtime.keys.keyring
    # Given a thread entry sealed as version 0.1 did: bound to its place in the thread only
    with tipline.runtime.factory.begin() as session:
        tip = records.submitted_tip(session, reference)
        assert tip is not None
        key = records.tip_dek(keyring, tip)
        message = session.scalars(select(Message).where(Message.tip_id == tip.id).order_by(Message.seq)).first()
        assert message is not None
        message.body_ct = records.MESSAGE_BODY.seal(key, f"{reference}#{message.seq}", b"a message sealed the old way")
    with pytest.raises(crypto.IntegrityError):
        review.read_tip(tipline.runtime.ctx, reference)
    # When the first `tipline init` of 0.2 runs (the marker of a fresh install is removed to replay it)
    with tipline.runtime.factory.begin() as session:
        session.execute(delete(DataUpgrade).where(DataUpgrade.name == records.MESSAGE_BINDING_UPGRADE))
    report = initialise(tipline.runtime.settings)
    # Then the entry is bound to its kind and author, and reads again
    assert (report.messages_resealed, report.messages_unreadable) == (1, 0)
    assert review.read_tip(tipline.runtime.ctx, reference).thread[0].text == "a message sealed the old way"


def test_the_old_binding_is_never_accepted_again_after_the_upgrade(tipline: Harness) -> None:
    reference = tipline.submit_tip("words the tipster wrote")
    keyring = tipline.runtime.keys.keyring
    # Given someone copies an old-style ciphertext into a row and re-types it, after the upgrade ran
    with tipline.runtime.factory.begin() as session:
        tip = records.submitted_tip(session, reference)
        assert tip is not None
        key = records.tip_dek(keyring, tip)
        message = session.scalars(select(Message).where(Message.tip_id == tip.id).order_by(Message.seq)).first()
        assert message is not None
        message.body_ct = records.MESSAGE_BODY.seal(key, f"{reference}#{message.seq}", b"words the tipster wrote")
        message.kind = MessageKind.NOTE
    # When `tipline init` runs again (as after every upgrade), it neither accepts nor fails on it
    report = initialise(tipline.runtime.settings)
    assert (report.messages_resealed, report.messages_unreadable) == (0, 0)
    # Then the altered entry still fails closed
    with pytest.raises(crypto.IntegrityError):
        review.read_tip(tipline.runtime.ctx, reference)
