"""Fault: the tip line is stopped while it cleans a tipster's photo.

systemd stops a service by signalling its whole process group (or cgroup), and Ctrl-C in a
terminal signals the foreground group. The photo cleaner is a child process (tipline/core/images.py):
it died of the same SIGTERM, its death was read as "the picture is unreadable", the photo was
refused, Twilio's copy deleted and the tipster told that nothing of it was kept. The photo was lost.

What must hold, through a real `tipline serve` and a real 12-megapixel photo:
- a SIGTERM to serve's process group lets the cleaner finish: the photo is stored;
- a cleaner killed from outside all the same (systemd's cgroup stop, the OOM killer) is tried
  again later, never refused: no "could not open" message, Twilio's copy kept until it is stored.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import LINE_NUMBER, TIPSTER, Harness, photos, sign
from tests.support.processes import TIPLINE, environment, free_port, process_tree, workdir
from tests.support.samples import camera_jpeg
from tipline.core.vocabulary import AttachmentStatus

PATH = "/webhooks/twilio/sms"
UNUSABLE = "We could not open the picture you sent"


def wait_for(condition: Callable[[], object], seconds: float = 60, step: float = 0.01) -> object:
    deadline = time.monotonic() + seconds
    while not (found := condition()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(step)
    return found


@contextmanager
def serve_in_own_group(env: dict[str, str]) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`tipline serve` as systemd or a terminal runs it: the leader of its own process group."""
    port = free_port()
    log = workdir(env) / f"serve-{port}.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*TIPLINE, "serve", "--port", str(port)],
            env=environment({**env, "TIPLINE_SANDBOX": "0"}),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir(env),
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: answers(base), seconds=30, step=0.1)
        yield base, process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=60)


def answers(base: str) -> bool:
    try:
        return requests.get(base + "/healthz", timeout=5).status_code in (200, 503)
    except requests.ConnectionError:
        return False


def cleaner_of(server: int) -> int | None:
    """The pid of the photo cleaner started by `server` or by one of its worker processes, if one runs now."""
    parents = set(process_tree(server))
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            command = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) in parents and b"tipline.core.images" in command:
            return int(entry.name)
    return None


def send_photo(twilio: FakeTwilio, base: str, public_url: str) -> None:
    photo = camera_jpeg(size=(4000, 3000)).data  # 12 megapixels: a phone camera's photo
    _, form = twilio.receive(TIPSTER, LINE_NUMBER, "", media=[(photo, "image/jpeg")])
    headers = {"X-Twilio-Signature": sign(PATH, form, base=public_url)}
    assert requests.post(base + PATH, data=form, headers=headers, timeout=30).status_code == 200


def assert_not_lost(tipline: Harness, twilio: FakeTwilio) -> None:
    assert [a.status for a in photos(tipline)] == [AttachmentStatus.STORED]
    assert not any(UNUSABLE in message.get("Body", "") for message in twilio.sent)


def test_stopping_the_process_group_lets_the_photo_under_way_be_stored(
    env: dict[str, str], tipline: Harness, twilio_server: FakeTwilio
) -> None:
    with serve_in_own_group(env) as (base, server):
        # Given a tipster's photo being cleaned
        send_photo(twilio_server, base, env["TIPLINE_PUBLIC_URL"])
        wait_for(lambda: cleaner_of(server.pid))
        # When the service is stopped as systemd or Ctrl-C stops it: a signal to its whole group
        os.killpg(server.pid, signal.SIGTERM)
        assert server.wait(timeout=90) == 0
    # Then the photo was stored, and the tipster was not told it was unusable
    assert_not_lost(tipline, twilio_server)


def test_a_cleaner_killed_from_outside_is_tried_again_not_refused(
    env: dict[str, str], tipline: Harness, twilio_server: FakeTwilio
) -> None:
    with serve_in_own_group(env) as (base, server):
        # Given a tipster's photo being cleaned
        send_photo(twilio_server, base, env["TIPLINE_PUBLIC_URL"])
        cleaner = wait_for(lambda: cleaner_of(server.pid))
        assert isinstance(cleaner, int)
        deleted_before = list(twilio_server.deleted)
        # When the cleaner alone is killed from outside (systemd stopping the whole cgroup, the OOM killer)
        os.kill(cleaner, signal.SIGTERM)
        # Then the photo waits to be tried again: not refused, Twilio's copy not deleted
        wait_for(lambda: [a.reason for a in photos(tipline)] == ["interrupted"], seconds=30, step=0.1)
        assert [a.status for a in photos(tipline)] == [AttachmentStatus.PENDING]
        assert [d for d in twilio_server.deleted if d.startswith("ME")] == [
            d for d in deleted_before if d.startswith("ME")
        ]
        # And it is stored on the next try (after a few seconds' backoff)
        wait_for(lambda: [a.status for a in photos(tipline)] == [AttachmentStatus.STORED], seconds=90, step=0.2)
    assert_not_lost(tipline, twilio_server)
