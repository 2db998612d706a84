"""/healthz tells an operator's monitor what fails tipsters silently: a database that cannot be
written (a full disk answers reads all the same), no dispatcher sending replies, and how much waits.

It is content-free (states, counts and ages), and answers 503 when tipsters are being failed.
The dispatcher's silence is measured on the tip line's clock, moved forward here; a full disk is a
real one: a small tmpfs, mounted in a user and mount namespace of its own, filled while the
server runs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import logging
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import update

from tests.attacks.test_database_outage import outage_harness
from tests.support.anonymity import phone_formats, scan_files
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import LINE_NUMBER, TIPSTER, Harness, new_sid, sign
from tests.support.processes import TIPLINE, environment, free_port, run, spawn, workdir
from tests.support.samples import camera_jpeg
from tests.support.scratch import PG_URL
from tipline.services import health, metrics, outbox, review
from tipline.storage.models import OutboxItem, utcnow

STATES = {"ok", "silent", "none", "unknown"}


class Clock:
    """The tip line's clock, moved by the test."""

    def __init__(self) -> None:
        self.moment = utcnow()

    def __call__(self) -> dt.datetime:
        return self.moment

    def move(self, **delta: float) -> None:
        self.moment += dt.timedelta(**delta)


def on_clock(harness: Harness) -> Clock:
    """Put the runtime's health check, heartbeat and dispatcher on a clock the test moves."""
    clock = Clock()
    harness.runtime.ctx = dataclasses.replace(harness.runtime.ctx, clock=clock)
    harness.runtime.dispatcher.clock = clock
    return clock


def check(harness: Harness) -> tuple[int, dict[str, Any]]:
    response = harness.client.get("/healthz")
    body = response.get_json()
    assert_content_free(body)
    return response.status_code, body


def assert_content_free(body: dict[str, Any]) -> None:
    """States from a fixed vocabulary, counts and ages: nothing else."""
    assert set(body) == {"status", "database", "dispatcher", "outbox", "photos", "channels"}
    assert body["dispatcher"]["state"] in STATES
    for queue in ("outbox", "photos"):
        if body[queue] is not None:
            assert all(value is None or isinstance(value, int) for value in body[queue].values())


def wait_until(condition: Callable[[], bool], seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_stopped_dispatcher_makes_the_server_unhealthy_once_it_has_been_silent_too_long(tipline: Harness) -> None:
    clock = on_clock(tipline)
    # Given a server with its dispatcher, as `tipline serve` runs them
    heartbeat = tipline.runtime.announce("serve")
    thread, stop = tipline.runtime.start_dispatcher()
    status, body = check(tipline)
    assert status == 200, body
    assert body["status"] == "ok" and body["database"] == "ok" and body["dispatcher"]["state"] == "ok"
    assert body["dispatcher"]["silent_after_seconds"] == int(health.SILENT.total_seconds())

    # A live dispatcher stays healthy however much time passes: it passes every second
    clock.move(minutes=10)
    wait_until(lambda: tipline.runtime.dispatcher.passed_at == clock.moment)
    heartbeat.beat()
    assert check(tipline)[0] == 200

    # When the dispatcher stops (its thread ended; the process and its heartbeat live on)
    stop.set()
    tipline.runtime.dispatcher.wake()
    thread.join(10)
    clock.move(seconds=health.SILENT.total_seconds() - 1)
    heartbeat.beat()
    # Then it is still healthy within the bound ...
    status, body = check(tipline)
    assert status == 200 and body["dispatcher"]["seconds_since_pass"] == health.SILENT.total_seconds() - 1
    # ... and unhealthy after it, saying why
    clock.move(seconds=2)
    heartbeat.beat()
    status, body = check(tipline)
    assert status == 503
    assert body["status"] == "unavailable" and body["database"] == "ok"
    assert body["dispatcher"]["state"] == "silent"
    assert body["dispatcher"]["problem"] == health.SILENT_DISPATCHER
    assert body["dispatcher"]["seconds_since_pass"] == health.SILENT.total_seconds() + 1


def test_the_backlog_and_the_photo_queue_are_counted_while_no_dispatcher_runs(tipline: Harness) -> None:
    clock = on_clock(tipline)
    # Given no dispatcher anywhere (as with `serve --no-dispatcher` and no `tipline dispatch`)
    status, body = check(tipline)
    assert status == 503
    assert body["dispatcher"] == {
        "state": "none",
        "seconds_since_pass": None,
        "silent_after_seconds": int(health.SILENT.total_seconds()),
        "problem": health.NO_DISPATCHER,
    }
    assert body["database"] == "ok"
    assert body["outbox"] == {"backlog": 0, "oldest_seconds": None}
    assert body["photos"] == {"waiting": 0, "oldest_seconds": None}

    # When a tipster sends a tip with a photo and a detective answers twice
    sid = new_sid("MM")
    url = tipline.twilio.add_media(sid, camera_jpeg().data)
    tipline.sms(
        "CANARY-HEALTH a van without plates", sid=sid, NumMedia="1", MediaContentType0="image/jpeg", MediaUrl0=url
    )
    tipline.say("skip")
    reference = tipline.say("skip")[0].split("T-", 1)[1][:6]
    review.reply(tipline.runtime.ctx, "T-" + reference, "Which night was it?")
    review.reply(tipline.runtime.ctx, "T-" + reference, "Is the van still there?")
    clock.move(seconds=90)

    # Then /healthz counts what waits and how long the oldest has waited, and nothing more
    status, body = check(tipline)
    assert status == 503
    queued = body["outbox"]["backlog"]
    assert queued >= 2  # the two replies, and the deletions of Twilio's copies of the tip's messages
    assert body["outbox"]["oldest_seconds"] == 60  # 90 s, in whole minutes: an arrival is not timed to the second
    assert body["photos"]["waiting"] == 1
    assert body["photos"]["oldest_seconds"] in (60, 120)  # a photo's time is stored to the minute
    text = str(body)
    assert reference not in text and "CANARY" not in text and "van" not in text
    assert not any(number in text for number in phone_formats(TIPSTER))

    # When a dispatcher has worked through them, nothing waits
    tipline.runtime.dispatcher.clock = utcnow  # the photo's fetch and the sends happen now
    tipline.dispatch()
    clock.moment = utcnow()
    body = check(tipline)[1]
    assert body["outbox"] == {"backlog": 0, "oldest_seconds": None}
    assert body["photos"] == {"waiting": 0, "oldest_seconds": None}


def test_a_database_that_cannot_be_written_is_unhealthy_and_named(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    # PostgreSQL stopped (its connections cut by a proxy), or SQLite's write lock held by another process
    with outage_harness(env, twilio_server, log_file) as (tipline, outage):
        tipline.runtime.announce("serve")
        tipline.runtime.start_dispatcher()
        assert check(tipline)[0] == 200
        time.sleep(health.PROBE_EVERY)  # a success is reused that long
        with outage:
            status, body = check(tipline)
            assert status == 503
            assert body["database"] == ("unreachable" if PG_URL else "locked")
            assert body["status"] == "unavailable"
        wait_until(lambda: check(tipline)[0] == 200)


def test_a_database_outage_is_logged_when_it_starts_now_and_then_while_it_lasts_and_when_it_ends(
    env: dict[str, str],
    twilio_server: FakeTwilio,
    log_file: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A dispatcher passes every second: before, an outage logged an ERROR a second and never its end.
    monkeypatch.setattr(outbox._FailedPasses, "EVERY", 3.0)  # a line a minute in production
    caplog.set_level(logging.INFO, logger="tipline.services.outbox")
    with outage_harness(env, twilio_server, log_file) as (tipline, outage):
        tipline.sms("CANARY-HEALTH a van without plates")  # queues the deletion of Twilio's copy: work to claim
        with outage:
            # Given a dispatcher that fails every pass for 10 seconds
            tipline.runtime.start_dispatcher()
            time.sleep(10)
            failed = [r for r in caplog.records if r.name == "tipline.services.outbox" and r.levelno >= logging.ERROR]
            # Then the first failure is logged, then a line every 3 s at most, with the count of passes
            assert failed[0].getMessage().startswith("dispatcher pass failed: OperationalError: database")
            assert 2 <= len(failed) <= 1 + 10 // 3 + 1, [r.getMessage() for r in failed]
            cause = "database unreachable" if PG_URL else "database is locked"
            assert failed[1].getMessage().startswith(f"dispatcher still failing: {cause}, ")
            assert failed[1].getMessage().endswith(" passes")
        # And its end is said once, at INFO
        wait_until(lambda: any("reachable again" in r.getMessage() for r in caplog.records))
        time.sleep(2)
        ended = [r for r in caplog.records if "reachable again" in r.getMessage()]
        assert len(ended) == 1 and ended[0].levelno == logging.INFO
        assert ended[0].getMessage().startswith("dispatcher database reachable again after ")


# A real server and real processes: where the dispatcher runs is the operator's choice.


@contextlib.contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    with (workdir(env) / f"serve-{port}.log").open("w") as out:
        process = spawn(env, "serve", "--port", str(port), *args, output=out)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: answers(base) is not None)
        yield base, process
    finally:
        process.terminate()
        process.wait(timeout=15)


def answers(base: str) -> int | None:
    try:
        return requests.get(base + "/healthz", timeout=5).status_code
    except requests.ConnectionError:
        return None


def test_serve_without_a_dispatcher_is_unhealthy_until_a_dispatch_process_runs(env: dict[str, str]) -> None:
    env = {**env, "TIPLINE_SANDBOX": "0"}
    assert run(env, "init").returncode == 0
    with serving(env, "--no-dispatcher") as (base, _):
        # Given a server that sends nothing, and no `tipline dispatch` anywhere: replies never go out
        response = requests.get(base + "/healthz", timeout=5)
        assert response.status_code == 503
        assert response.json()["dispatcher"]["state"] == "none"
        assert "no dispatcher is running: replies to tipsters do not go out" in response.json()["dispatcher"]["problem"]
        # When a dispatcher process starts, the server is healthy within a few seconds
        dispatch = spawn(env, "dispatch")
        try:
            wait_until(lambda: answers(base) == 200)
            assert requests.get(base + "/healthz", timeout=5).json()["dispatcher"]["seconds_since_pass"] < 15
        finally:
            dispatch.terminate()
            dispatch.wait(timeout=15)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_serve_with_its_own_dispatcher_is_healthy_as_soon_as_it_answers(env: dict[str, str], workers: str) -> None:
    """A load balancer probes /healthz from the first moment the port answers. With several
    workers, only the first runs the dispatcher, and the others read its beat from the database:
    they serve only once it is there, so no probe ever sees a 503 for a server that is fine."""
    env = {**env, "TIPLINE_SANDBOX": "0"}
    assert run(env, "init").returncode == 0
    port = free_port()
    with (workdir(env) / f"serve-{port}.log").open("w") as out:
        process = spawn(env, "serve", "--port", str(port), "--workers", workers, output=out)
    base = f"http://127.0.0.1:{port}"
    try:
        # Every answer from the first one on, each on a new connection (any worker may take it)
        statuses: list[int] = []
        deadline = time.monotonic() + 60
        while len(statuses) < 40 and time.monotonic() < deadline:
            status = answers(base)
            if status is not None:
                statuses.append(status)
        assert statuses and set(statuses) == {200}, statuses
        body = requests.get(base + "/healthz", timeout=5).json()
        assert_content_free(body)
        assert (body["status"], body["database"], body["dispatcher"]["state"]) == ("ok", "ok", "ok")
        assert body["channels"] == ["sms"]
    finally:
        process.terminate()
        process.wait(timeout=15)


def test_only_a_client_on_this_machine_sees_the_counts_and_ages(env: dict[str, str], tipline: Harness) -> None:
    # Every inbound SMS queues the deletion of Twilio's copy a minute later: from outside, a backlog
    # going 0, 1, 0 and the age of its oldest row would time each tipster's message.
    # Given a message whose deletion at Twilio has been due for a minute and a half
    tipline.sms("CANARY-HEALTH a van without plates")
    with tipline.runtime.ctx.factory.begin() as session:
        session.execute(update(OutboxItem).values(next_attempt_at=utcnow() - dt.timedelta(seconds=90)))
    env = {**env, "TIPLINE_SANDBOX": "0", "TIPLINE_TRUSTED_PROXY": "127.0.0.1"}
    with serving(env, "--no-dispatcher") as (base, _):
        # When the internet asks, through the trusted reverse proxy on this machine
        outside = requests.get(base + "/healthz", headers={"X-Forwarded-For": "203.0.113.5"}, timeout=5)
        # Then it learns the status alone, with the same 503 (no dispatcher runs)
        assert outside.status_code == 503
        assert outside.json() == {"status": "unavailable"}
        # And a client on this machine (no forwarded client: the monitor, or curl over ssh) sees it all,
        # ages in whole minutes
        local = requests.get(base + "/healthz", timeout=5)
        assert local.status_code == 503
        body = local.json()
        assert_content_free(body)
        assert body["outbox"]["backlog"] >= 1
        assert body["outbox"]["oldest_seconds"] == 60
        assert body["dispatcher"]["state"] == "none"


# A full disk: a tmpfs of a few megabytes that a file fills while the server runs.


def namespaces_work() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


@pytest.mark.skipif(bool(PG_URL), reason="a PostgreSQL server's disk is not this test's to fill (see the outage test)")
@pytest.mark.skipif(
    not namespaces_work(), reason="needs unshare with user and mount namespaces, to mount a small tmpfs"
)
def test_a_full_disk_is_unhealthy_and_named_in_health_and_in_the_log(
    env: dict[str, str], twilio_server: FakeTwilio, tmp_path: Path
) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {
        **env,
        "TIPLINE_SANDBOX": "0",
        "TIPLINE_DATA_DIR": str(disk / "var"),
        "TIPLINE_TWILIO_RECONCILE_SECONDS": "0",
    }
    env.pop("TIPLINE_DATABASE_URL", None)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # `init` and `serve` inside a mount namespace where `disk` is an 8 MB tmpfs of their own
    tipline = " ".join(TIPLINE)
    script = (
        f'mount -t tmpfs -o size=8m tmpfs "{disk}" && {tipline} init >/dev/null && exec {tipline} serve --port {port}'
    )
    process = subprocess.Popen(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=environment(env),
        cwd=disk.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    filler = Path(f"/proc/{process.pid}/root") / str(disk).lstrip("/") / "filler"
    try:
        wait_until(lambda: answers(base) == 200, seconds=60)
        # When the disk fills up
        with contextlib.suppress(OSError), filler.open("wb") as out:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        time.sleep(health.PROBE_EVERY)  # the last success is reused that long
        # Then /healthz says so (reads still answer: the counts are there)
        response = requests.get(base + "/healthz", timeout=10)
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["database"] == "full" and body["status"] == "unavailable"
        assert body["outbox"] is not None
        # And a webhook that cannot store its message is acknowledged, its log line naming the cause
        _, form = twilio_server.receive(TIPSTER, LINE_NUMBER, "CANARY-FULL a tip while the disk is full")
        path = "/webhooks/twilio/sms"
        signature = sign(path, form, base=env["TIPLINE_PUBLIC_URL"])
        webhook = requests.post(base + path, data=form, headers={"X-Twilio-Signature": signature}, timeout=30)
        assert webhook.status_code == 200, webhook.text  # Twilio keeps the message; reconciliation takes it in
        # When space returns, the server is healthy again
        filler.unlink()
        wait_until(lambda: answers(base) == 200)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=15)
        print(output.decode())  # shown by pytest if the test failed
    log = output.decode()
    assert "sms webhook: database unavailable (OperationalError): database or disk is full" in log, log
    (tmp_path / "serve.log").write_text(log)
    needles = [*phone_formats(TIPSTER), "CANARY-FULL a tip while the disk is full"]
    assert scan_files(tmp_path, needles, [tmp_path / "serve.log"]) == []


@pytest.mark.skipif(bool(PG_URL), reason="the embedded database's disk (PostgreSQL's is the outage test's)")
@pytest.mark.skipif(
    not namespaces_work(), reason="needs unshare with user and mount namespaces, to mount a small tmpfs"
)
def test_serve_on_a_full_disk_says_to_free_space_where_the_database_lives(env: dict[str, str], tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    env = {**env, "TIPLINE_SANDBOX": "0", "TIPLINE_DATA_DIR": str(disk / "var")}
    env.pop("TIPLINE_DATABASE_URL", None)
    # Given a disk that filled up while the tip line was stopped (an 8 MB tmpfs of this namespace)
    tipline = " ".join(TIPLINE)
    script = (
        f'mount -t tmpfs -o size=8m tmpfs "{disk}" && {tipline} init >/dev/null && '
        f'(cat /dev/zero > "{disk}/filler" 2>/dev/null; exec {tipline} serve --port {free_port()})'
    )
    # When it starts
    result = subprocess.run(
        ["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
        env=environment(env),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    # Then it refuses in one line that points at the disk, not at a URL nobody set, and exits 75
    # (try again later: systemd restarts it, and it serves once there is space)
    assert result.returncode == 75, result.stdout + result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("tipline: cannot reach the database: "), line
    assert line.endswith(f"check the free space and the permissions of {disk / 'var'}"), line


def test_database_errors_are_named_by_their_codes_never_their_text() -> None:
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from tipline.storage import faults

    def sqlite_error(code: int, text: str) -> sqlite3.Error:
        error = sqlite3.OperationalError(text)
        error.sqlite_errorcode = code  # type: ignore[attr-defined]
        return error

    secret = "ciphertext-b64-AAAA +15555550142"
    full = OperationalError("UPDATE x SET y=?", {"y": secret}, sqlite_error(13, "database or disk is full"))
    assert faults.describe(full) == "database or disk is full"
    assert faults.describe(sqlite_error(5, secret)) == "database is locked"
    assert faults.describe(sqlite_error(8 | (1 << 8), secret)) == "database is read-only"  # an extended code
    assert faults.describe(TimeoutError(secret)) == "database is locked"
    assert faults.describe(sqlite3.OperationalError(secret)) == "database error"
    assert secret not in "".join(faults.PHRASES.values())


def test_serve_answers_content_free_metrics_on_its_own_address_only(env: dict[str, str]) -> None:
    metrics_port = free_port()
    env = {**env, "TIPLINE_SANDBOX": "0", "TIPLINE_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}"}
    assert run(env, "init").returncode == 0
    with serving(env) as (base, _):
        wait_until(lambda: answers(base) == 200)
        scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
        assert scraped.status_code == 200
        assert scraped.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        # Gauges only, one sample each, named, with a number: nothing else
        samples = dict(line.split(" ") for line in scraped.text.splitlines() if not line.startswith("#"))
        assert set(samples) == {
            "tipline_healthy",
            "tipline_database_writable",
            "tipline_dispatcher_seconds_since_pass",
            "tipline_outbox_backlog",
            "tipline_outbox_oldest_seconds",
            "tipline_photos_waiting",
            "tipline_photos_oldest_seconds",
        }
        assert samples["tipline_healthy"] == "1" and samples["tipline_database_writable"] == "1"
        assert all(value.isdigit() for value in samples.values()), samples
        assert all(
            line.startswith(("# HELP tipline_", "# TYPE tipline_"))
            for line in scraped.text.splitlines()
            if line[0] == "#"
        )
        # Not on the public address, and nothing but /metrics on its own
        assert requests.get(base + "/metrics", timeout=5).status_code == 404
        assert requests.get(f"http://127.0.0.1:{metrics_port}/", timeout=5).status_code == 404


def non_loopback_address() -> str | None:
    """An address of this machine other than loopback, if it has one."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("203.0.113.1", 9))  # no packet is sent: this only picks the outgoing interface
        address: str = probe.getsockname()[0]
        return None if address.startswith("127.") else address
    return None


@pytest.mark.skipif(non_loopback_address() is None, reason="needs a non-loopback address on this machine")
def test_metrics_off_loopback_are_warned_about_and_idle_scrapers_are_let_go(env: dict[str, str]) -> None:
    host, port = non_loopback_address(), free_port()
    env = {**env, "TIPLINE_SANDBOX": "0", "TIPLINE_METRICS_ADDRESS": f"{host}:{port}"}
    assert run(env, "init").returncode == 0
    with serving(env) as (base, _):
        wait_until(lambda: answers(base) == 200)
        # A connection that never sends its request is closed after a few seconds (a thread each)
        with socket.create_connection((str(host), port), timeout=20) as idle:
            started = time.monotonic()
            assert idle.recv(1024) == b""
            assert time.monotonic() - started < metrics.IDLE_TIMEOUT + 5
        assert requests.get(f"http://{host}:{port}/metrics", timeout=10).status_code == 200
    log = next(workdir(env).glob("serve-*.log")).read_text()
    assert f"metrics on {host}, not a loopback address" in log


@pytest.mark.parametrize("address", ["9100", "127.0.0.1:", "127.0.0.1:99999", "localhost:http"])
def test_a_malformed_metrics_address_is_refused_in_one_line(env: dict[str, str], address: str) -> None:
    result = run({**env, "TIPLINE_METRICS_ADDRESS": address}, "serve", "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr.strip() == "tipline: TIPLINE_METRICS_ADDRESS must be HOST:PORT, e.g. 127.0.0.1:9100"
