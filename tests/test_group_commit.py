"""SQLite's group commit: many requests, one durable commit, failures isolated per request."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from tests.support.harness import Harness, inbound_form, replies, sign
from tests.support.scratch import PG_URL
from tipline.storage.db import GroupCommitter
from tipline.storage.models import Contact, Conversation, ProcessedDelivery

PATH = "/webhooks/twilio/sms"


def remember(key: str) -> Callable[[Session], str]:
    """A unit of work that records `key` as a processed delivery (a unique key: twice fails)."""

    def work(session: Session) -> str:
        session.add(ProcessedDelivery(key=key, expires_at=dt.datetime(2030, 1, 1)))
        session.flush()
        return key

    return work


def submitter(
    committer: GroupCommitter, results: dict[str, object]
) -> Callable[[str, Callable[[Session], object]], None]:
    """A thread target that runs a named unit through `committer`, keeping its result or error in `results`."""

    def submit(name: str, work: Callable[[Session], object]) -> None:
        try:
            results[name] = committer.run(work)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            results[name] = error

    return submit


def test_units_share_commits_and_a_failing_unit_rolls_back_alone(tipline: Harness) -> None:
    committer = GroupCommitter(tipline.runtime.factory)
    commits = []
    event.listen(tipline.runtime.engine, "commit", lambda conn: commits.append(1))
    gate = threading.Event()

    def slow(session: Session) -> str:
        gate.wait(5)  # hold the first transaction open while the others queue up behind it
        return remember("first")(session)

    def broken(session: Session) -> str:
        remember("broken")(session)
        raise ValueError("this unit fails after writing")

    results: dict[str, object] = {}
    submit = submitter(committer, results)

    threads = [threading.Thread(target=submit, args=("first", slow))]
    threads[0].start()
    threading.Event().wait(0.2)
    for name, work in [("a", remember("a")), ("broken", broken), ("b", remember("b")), ("dup", remember("a"))]:
        thread = threading.Thread(target=submit, args=(name, work))
        thread.start()
        threads.append(thread)
    threading.Event().wait(0.2)
    gate.set()
    for thread in threads:
        thread.join(10)

    assert (results["first"], results["a"], results["b"]) == ("first", "a", "b")
    assert isinstance(results["broken"], ValueError)
    assert "IntegrityError" in type(results["dup"]).__name__  # same key twice: the second unit fails alone
    with tipline.runtime.factory() as session:
        keys = set(session.scalars(select(ProcessedDelivery.key)))
    assert {"first", "a", "b"} <= keys
    assert "broken" not in keys
    assert len(commits) == 2  # the slow unit alone, then the four queued units in one transaction
    assert committer.reruns == 1  # tried without savepoints, then again unit by unit once one failed


class Seen(Exception):
    """Raised by a unit before it writes anything (as intake's Duplicate is)."""


@pytest.mark.skipif(
    bool(PG_URL), reason="group commit serves SQLite only (PostgreSQL aborts a transaction at a failed statement)"
)
def test_a_unit_that_fails_before_writing_does_not_make_its_batch_run_again(tipline: Harness) -> None:
    committer = GroupCommitter(tipline.runtime.factory, clean=(Seen,))
    runs: list[str] = []
    gate = threading.Event()
    insert = ProcessedDelivery.__table__.insert()

    def unit(key: str, seen: bool = False) -> Callable[[Session], str]:
        def work(session: Session) -> str:
            runs.append(key)
            if seen:  # as intake's remember_once: an INSERT of a key already there, then Seen
                try:
                    session.connection().execute(insert, {"key": "x", "expires_at": dt.datetime(2030, 1, 1)})
                except IntegrityError:
                    raise Seen(key) from None
            return remember(key)(session)

        return work

    results: dict[str, object] = {}
    submit = submitter(committer, results)

    blocker = threading.Thread(target=submit, args=("blocker", lambda s: gate.wait(5)))
    blocker.start()
    threading.Event().wait(0.2)
    threads = [
        threading.Thread(target=submit, args=(name, unit(name, seen=name == "seen"))) for name in ("x", "seen", "y")
    ]
    for thread in threads:
        thread.start()
        threading.Event().wait(0.05)  # queued in this order
    gate.set()
    for thread in [blocker, *threads]:
        thread.join(10)
    assert (results["x"], results["y"]) == ("x", "y")
    assert isinstance(results["seen"], Seen)
    assert sorted(runs) == ["seen", "x", "y"]  # each ran once: no second run for a clean failure
    assert committer.reruns == 0
    with tipline.runtime.factory() as session:
        assert {"x", "y"} <= set(session.scalars(select(ProcessedDelivery.key)))


@pytest.mark.skipif(bool(PG_URL), reason="group commit serves SQLite only")
def test_a_failed_commit_fails_every_unit_in_it(tipline: Harness) -> None:
    committer = GroupCommitter(tipline.runtime.factory)

    def good(session: Session) -> str:
        return remember("good")(session)

    def fails_at_commit(session: Session) -> None:
        # A deferred foreign-key violation: every statement succeeds, the COMMIT itself fails,
        # as it would on a full disk.
        session.execute(text("PRAGMA defer_foreign_keys=ON"))
        session.add(Conversation(contact_id="missing", state="new", language="en", updated_at=dt.datetime(2030, 1, 1)))
        session.flush()

    gate = threading.Event()
    errors: list[BaseException] = []

    def submit(work: Callable[[Session], object]) -> None:
        try:
            committer.run(work)
        except Exception as error:  # noqa: BLE001 - the test inspects it
            errors.append(error)

    blocker = threading.Thread(target=submit, args=(lambda s: gate.wait(5),))
    blocker.start()
    threading.Event().wait(0.2)
    threads = [threading.Thread(target=submit, args=(w,)) for w in (good, fails_at_commit)]
    for thread in threads:
        thread.start()
    threading.Event().wait(0.2)
    gate.set()
    for thread in [blocker, *threads]:
        thread.join(10)
    assert len(errors) == 2
    assert ["FOREIGN KEY" in str(e) for e in errors] == [True, True], errors
    with tipline.runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(ProcessedDelivery)) == 0
    assert committer.run(good) == "good"  # the lock was released and the database is usable


@pytest.mark.skipif(bool(PG_URL), reason="the write lock shared by processes is SQLite's")
def test_what_arrives_while_another_process_writes_joins_the_next_transaction(tipline: Harness) -> None:
    """Two `serve` workers take turns at SQLite's write lock. A batch takes its units once it has
    the lock, so whatever queued while the other worker wrote shares one durable commit, instead
    of the first unit committing alone and the rest waiting for another turn (and another fsync)."""
    path = tipline.runtime.settings.sqlite_path
    assert path is not None
    committer = GroupCommitter(tipline.runtime.factory)
    commits = []
    event.listen(tipline.runtime.engine, "commit", lambda conn: commits.append(1))
    # Given another process in the middle of a write (it holds the lock file, as a worker's batch does)
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, f"{path}.writelock"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert other.stdout is not None and other.stdout.readline() == b"holding\n"
        results: dict[str, object] = {}
        submit = submitter(committer, results)
        threads = []
        # When one unit arrives, then two more while the committer waits for the lock
        for key in ("a", "b", "c"):
            thread = threading.Thread(target=submit, args=(key, remember(key)))
            thread.start()
            threads.append(thread)
            threading.Event().wait(0.2)
        assert results == {}  # nothing could be written yet
        assert other.stdin is not None
        other.stdin.close()  # the other process commits and lets go
        for thread in threads:
            thread.join(10)
    finally:
        other.kill()
        other.wait()
    # Then all three are stored in one transaction
    assert results == {"a": "a", "b": "b", "c": "c"}
    assert (committer.batches, len(commits)) == (1, 1)


@pytest.mark.skipif(bool(PG_URL), reason="group commit serves SQLite only")
def test_one_senders_messages_in_one_batch_each_find_what_the_one_before_left(tipline: Harness) -> None:
    """Intake reads the sender with a Core query and makes the objects itself. In a batch, an
    earlier message of the same sender may have left its contact in the session (STOP erases the
    address through the session's unit of work): the next one must get that object, as the ORM's
    identity map gave it. A second copy of the row cannot join the session: its unit would fail,
    and the whole batch run again unit by unit."""
    path = tipline.runtime.settings.sqlite_path
    assert path is not None
    tipline.submit_tip()
    with tipline.runtime.factory() as session:
        key_before_stop = session.scalars(select(Contact.wrapped_dek)).one()
    committer = tipline.runtime.intake.committer
    assert committer is not None
    batches, reruns = committer.batches, committer.reruns
    # Given another process in the middle of a write, so that what the tipster sends now queues up
    other = subprocess.Popen(
        [sys.executable, "-c", HOLD_WRITE_LOCK, f"{path}.writelock"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    answers: dict[str, list[str]] = {}

    def text(body: str) -> None:
        client = tipline.app.test_client()
        form = inbound_form(body)
        response = client.post(PATH, data=form, headers={"X-Twilio-Signature": sign(PATH, form)})
        assert response.status_code == 200, response.get_data(as_text=True)
        answers[body] = replies(response)

    try:
        assert other.stdout is not None and other.stdout.readline() == b"holding\n"
        # When the tipster sends STOP, then more words, then START, one after the other
        threads = []
        for body in ("STOP", "CANARY-BATCH words after stop", "START"):
            thread = threading.Thread(target=text, args=(body,))
            thread.start()
            threads.append(thread)
            threading.Event().wait(0.2)
        assert answers == {}  # nothing could be written yet
        assert other.stdin is not None
        other.stdin.close()
        for thread in threads:
            thread.join(10)
    finally:
        other.kill()
        other.wait()
    # Then the three were taken in one transaction, each answered as it would be alone
    assert committer.batches == batches + 1
    assert committer.reruns == reruns  # no unit failed (a second copy of the contact would have)
    assert answers["STOP"] == [] and answers["CANARY-BATCH words after stop"] == []
    assert answers["START"]  # opted back in: the tip line answers again
    with tipline.runtime.factory() as session:
        assert session.scalar(select(func.count()).select_from(ProcessedDelivery)) == 3 + 3  # and the tip's
        contact = session.scalars(select(Contact)).one()
        assert not contact.opted_out
        # And STOP's erasure held: the data key that sealed the address was replaced
        assert contact.wrapped_dek != key_before_stop


@pytest.mark.skipif(bool(PG_URL), reason="the write lock file is SQLite's")
def test_a_process_forked_while_another_writes_does_not_keep_the_write_lock_after_it_died(tipline: Harness) -> None:
    """`keys rotate` forks its read-ahead helper while it may hold the write lock. An flock belongs
    to the open file, which a forked child's copy of the descriptor shares: kept, it would hold the
    lock after the parent was killed, for as long as the child lives, and every writer (intake,
    the resumed rotation) would wait on it."""
    path = tipline.runtime.settings.sqlite_path
    assert path is not None
    lock = Path(f"{path}.writelock")
    # Given a process in the middle of a write that has forked a child which lives on
    writer = subprocess.Popen(
        [sys.executable, "-c", FORK_WHILE_WRITING, tipline.runtime.settings.database_url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert writer.stdout is not None
    child = int(writer.stdout.readline())
    try:
        assert not lock_is_free(lock)
        # When the writer is killed in the middle of its transaction
        writer.kill()
        writer.wait()
        # Then the lock is free at once, though the child still runs
        deadline = time.monotonic() + 5
        while not lock_is_free(lock) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock_is_free(lock)
        os.kill(child, 0)  # still there
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def lock_is_free(path: Path) -> bool:
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    finally:
        os.close(fd)  # releases the lock if this took it
    return True


# A process that begins a write (and so takes the write lock), forks a child that sleeps, prints
# the child's pid and waits for its stdin to close.
FORK_WHILE_WRITING = """
import os, sys, time
from tipline.storage.db import make_engine
with make_engine(sys.argv[1]).begin():
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
    print(child, flush=True)
    sys.stdin.read()
"""


# A second process holding the write lock file until its stdin closes.
HOLD_WRITE_LOCK = """
import fcntl, os, sys
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("holding", flush=True)
sys.stdin.read()
"""
