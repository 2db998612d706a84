"""Fault: the database cannot take a message when Twilio delivers it (stopped, unreachable, locked,
disk full). Twilio retries no webhook: before issue 12 every such message was answered 500 and lost.

What must hold: the webhook answers 200 with a short acknowledgement (never a 500 that Twilio gives
up on), writes nothing in plaintext anywhere, and once the database is back, reconciliation from
Twilio's Messages log takes in every message exactly once, in order per sender; each tipster gets
their replies by the REST API; a second run takes nothing twice.

How the outage is made, honestly, on each database:
- PostgreSQL: the tip line reaches the server through a small TCP proxy in this test, which is cut
  (every connection closed, new ones closed at once: what a stopped server or a broken network
  looks like to the client) and then restored.
- SQLite has no server to stop: its outage is a database that cannot be written. Another connection
  holds the write lock (as a backup or a forgotten admin shell would), so every write fails with
  SQLite's own "database is locked". The busy timeout is shortened from 30 s to 0.2 s for the test
  only, so that the test does not wait 30 s per message (in production the webhook then waits
  longer than Twilio's 15 s and Twilio calls the Fallback URL, then keeps the message in its log).
- Disk full (SQLite; a PostgreSQL server's disk is not ours to fill): `tipline serve` in a child
  process whose file size limit (RLIMIT_FSIZE, with SIGXFSZ ignored, as Python does) is lowered to
  a few bytes while Twilio delivers, so that every write fails as on a full disk, then raised again.
"""

from __future__ import annotations

import contextlib
import resource
import select as select_mod
import socket
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import event, func, select, text
from sqlalchemy.engine import make_url

from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import LINE_NUMBER, Harness, make_harness, reference_of, replies, sign
from tests.support.processes import free_port, process_tree, run, spawn, wait_until_serving, workdir
from tests.support.scratch import PG_URL, cut_the_pooled_connection
from tipline.config import load_settings
from tipline.runtime import build_runtime
from tipline.services import reconcile, review
from tipline.storage import db
from tipline.storage.models import ProcessedDelivery, Tip

# Fictional numbers (555-01XX) and words that must never appear in plaintext.
SENDERS = [f"+155555501{n}" for n in range(60, 65)]
ACK = "We received your message and will answer in a few minutes"


def story(n: int) -> list[str]:
    return [f"CANARY-OUTAGE-{n} a red scooter is stripped for parts behind the laundromat", "skip", "skip"]


class Proxy:
    """A TCP proxy to PostgreSQL that can be cut (like a stopped server) and restored."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.up = threading.Event()
        self.up.set()
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.live: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.up.is_set():
                client.close()  # the server is "stopped": the connection ends at once
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.live += [client, server]
            threading.Thread(target=self._pump, args=(client, server), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select_mod.select([a, b], [], [], 1.0)
                for source in ready:
                    data = source.recv(65536)
                    if not data:
                        return
                    (b if source is a else a).sendall(data)
        except (OSError, ValueError):  # cut: the sockets were closed under us (ValueError: fd -1)
            return
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> None:
        self.up.clear()
        with self.lock:
            live, self.live = self.live, []
        for s in live:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                s.close()

    def restore(self) -> None:
        self.up.set()

    def close(self) -> None:
        self.stopping.set()
        self.cut()
        self.listener.close()


@contextlib.contextmanager
def outage_harness(
    env: dict[str, str], twilio: FakeTwilio, log_file: Path
) -> Iterator[tuple[Harness, contextlib.AbstractContextManager[None]]]:
    """The tip line, and a context manager during which its database cannot take anything."""
    if PG_URL:
        url = make_url(env["TIPLINE_DATABASE_URL"])
        proxy = Proxy((url.host or "127.0.0.1", url.port or 5432))
        proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        harness = make_harness({**env, "TIPLINE_DATABASE_URL": proxied}, twilio, log_file)

        @contextlib.contextmanager
        def down() -> Iterator[None]:
            proxy.cut()
            try:
                yield
            finally:
                proxy.restore()

        try:
            yield harness, down()
        finally:
            harness.runtime.close()
            proxy.close()
        return

    harness = make_harness(env, twilio, log_file)
    engine = harness.runtime.engine
    # Test speed only: 0.2 s instead of 30 s before SQLite says "database is locked".
    event.listen(engine, "connect", lambda connection, _: connection.execute("PRAGMA busy_timeout=200"))
    engine.dispose()

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        path = harness.runtime.settings.sqlite_path
        assert path is not None
        holder = sqlite3.connect(path, isolation_level=None)
        holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        try:
            yield
        finally:
            holder.execute("ROLLBACK")
            holder.close()

    try:
        yield harness, locked()
    finally:
        harness.runtime.close()


def tips_and_deliveries(harness: Harness) -> tuple[int, int]:
    with harness.runtime.factory() as session:
        tips = session.scalar(select(func.count()).select_from(Tip)) or 0
        deliveries = session.scalar(select(func.count()).select_from(ProcessedDelivery)) or 0
    return tips, deliveries


def rest_replies(twilio: FakeTwilio, number: str) -> list[str]:
    return [form["Body"] for form in twilio.sent if form.get("To") == number]


def test_messages_delivered_while_the_database_is_down_are_recovered_exactly_once(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    twilio = twilio_server
    with outage_harness(env, twilio, log_file) as (tipline, outage):
        # Before the outage, one tipster begins a tip normally (answered in TwiML)
        _, form = twilio.receive(SENDERS[0], LINE_NUMBER, story(0)[0])
        assert "Where did it happen?" in replies(tipline.post_signed("/webhooks/twilio/sms", form))[0]

        answered: list[list[str]] = []
        with outage:
            assert tipline.client.get("/healthz").status_code == 503
            for n, sender in enumerate(SENDERS):
                for position, body in enumerate(story(n)):
                    if n == 0 and position == 0:
                        continue  # already taken in
                    _, form = twilio.receive(sender, LINE_NUMBER, body)
                    if n == len(SENDERS) - 1:
                        continue  # Twilio received these, but the tip line was not even reachable
                    path = "/webhooks/twilio/fallback" if n == 3 else "/webhooks/twilio/sms"
                    response = tipline.post_signed(path, form)
                    # Then the webhook answers 200 (never a 500 Twilio gives up on) with a short
                    # acknowledgement in the default language, 911 included
                    assert response.status_code == 200, response.get_data(as_text=True)
                    answered.append(replies(response))
            # The dispatcher's periodic reconciliation meanwhile fails quietly and takes nothing
            sms = tipline.runtime.sms
            assert sms is not None
            during = reconcile.periodic(tipline.runtime.ctx, sms, tipline.runtime.intake)
            assert during is None or during.taken_in == 0
        assert len(answered) == 3 * (len(SENDERS) - 1) - 1
        assert all(len(a) == 1 and ACK in a[0] and "911" in a[0] for a in answered)
        assert tips_and_deliveries(tipline) == (1, 1)  # nothing was stored during the outage

        # When the database is back and reconciliation runs
        report = reconcile.reconcile(tipline.runtime.ctx, sms, tipline.runtime.intake)
        total = 3 * len(SENDERS)
        assert (report.listed, report.taken_in, report.already, report.failed) == (total, total - 1, 1, 0)
        # A second run takes nothing twice
        again = reconcile.reconcile(tipline.runtime.ctx, sms, tipline.runtime.intake)
        assert (again.taken_in, again.failed) == (0, 0)
        while tipline.dispatch():
            pass
        assert reconcile.reconcile(tipline.runtime.ctx, sms, tipline.runtime.intake).taken_in == 0

        # Then every message is in, exactly once, in order, and every tipster got their replies by REST
        assert tips_and_deliveries(tipline) == (len(SENDERS), total)
        tips, count = review.list_tips(tipline.runtime.ctx)
        assert count == len(SENDERS)
        for n, sender in enumerate(SENDERS):
            sent = rest_replies(twilio, sender)
            expected = 2 if n == 0 else 3  # the first "Where?" went out in TwiML before the outage
            assert len(sent) == expected, (n, sent)
            reference = reference_of(sent[-1])
            detail = review.read_tip(tipline.runtime.ctx, reference)
            assert (detail.what, detail.where, detail.when) == (story(n)[0], None, None)
        assert twilio.logged("inbound") == []  # Twilio's copies deleted, as for any message

        # And nothing identifying was written anywhere in plaintext
        needles = [n for sender in SENDERS for n in phone_formats(sender)] + [story(n)[0] for n in range(5)]
        assert scan_files(tipline.data_dir, needles, [log_file]) == []
        assert scan_database(tipline.runtime.engine, needles) == []


def _post(base: str, path: str, form: dict[str, str], public_url: str) -> requests.Response:
    return requests.post(
        base + path, data=form, headers={"X-Twilio-Signature": sign(path, form, base=public_url)}, timeout=30
    )


@pytest.mark.skipif(bool(PG_URL), reason="a PostgreSQL server's disk is not this test's to fill")
def test_a_full_disk_loses_nothing_once_space_returns(env: dict[str, str], twilio_server: FakeTwilio) -> None:
    twilio = twilio_server
    # A long interval: this test runs reconciliation itself, once space returns.
    env = {**env, "TIPLINE_SANDBOX": "0", "TIPLINE_TWILIO_RECONCILE_SECONDS": "3600", "TIPLINE_LOG_LEVEL": "DEBUG"}
    assert run(env, "init").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    public_url = env["TIPLINE_PUBLIC_URL"]
    log_path = workdir(env) / "serve.log"
    # Its log goes to a pipe (a file would hit the same size limit), saved for the scan afterwards.
    process = spawn(env, "serve", "--port", str(port), output=subprocess.PIPE)
    try:
        wait_until_serving(base)
        senders = SENDERS[:2]
        # When the disk is full (no file of the process can grow by a byte)
        serving = process_tree(process.pid)  # the server and its worker processes
        soft, hard = resource.prlimit(process.pid, resource.RLIMIT_FSIZE)
        for pid in serving:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, (1, hard))
        answers = []
        try:
            for n, sender in enumerate(senders):
                for body in story(n):
                    _, form = twilio.receive(sender, LINE_NUMBER, body)
                    response = _post(base, "/webhooks/twilio/sms", form, public_url)
                    assert response.status_code == 200, response.text
                    answers.append(response.text)
        finally:
            # Then space returns
            for pid in serving:
                resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))
        assert all(ACK in answer for answer in answers), answers
        # The line works again at once
        _, form = twilio.receive(SENDERS[2], LINE_NUMBER, story(2)[0])
        assert "Where did it happen?" in _post(base, "/webhooks/twilio/sms", form, public_url).text

        # When reconciliation runs (the operator's command), everything lost is recovered once
        result = run(env, "twilio", "reconcile")
        assert result.returncode == 0, result.stderr
        # (the message sent after space returned may be listed too, as already processed, unless the
        # server's dispatcher already deleted Twilio's copy)
        assert "taken in 6, already processed" in result.stdout and "failed 0" in result.stdout, result.stdout
        assert "taken in 0" in run(env, "twilio", "reconcile").stdout
        # The replies go out by REST (from this command or the server's dispatcher, whichever claims them)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(len(rest_replies(twilio, s)) < 3 for s in senders):
            time.sleep(0.1)
        runtime = build_runtime(load_settings(env))
        try:
            tips, count = review.list_tips(runtime.ctx)
            assert count == 2
            for n, sender in enumerate(senders):
                sent = rest_replies(twilio, sender)
                assert len(sent) == 3, sent
                detail = review.read_tip(runtime.ctx, reference_of(sent[-1]))
                assert detail.what == story(n)[0]
            needles = [n for sender in SENDERS[:3] for n in phone_formats(sender)] + [story(n)[0] for n in range(3)]
            assert scan_database(runtime.engine, needles) == []
        finally:
            runtime.close()
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=10)
        log_path.write_bytes(output)
    # The server saw the full disk as such (SQLite's "database or disk is full", an OperationalError)
    assert b"database unavailable (OperationalError)" in output
    assert scan_files(Path(env["TIPLINE_DATA_DIR"]), needles, [log_path]) == []


def test_the_acknowledgement_during_an_outage_speaks_the_tipsters_language(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    with outage_harness(env, twilio_server, log_file) as (tipline, outage), outage:
        _, form = twilio_server.receive(SENDERS[0], LINE_NUMBER, "Hola, quiero denunciar algo")
        spanish = replies(tipline.post_signed("/webhooks/twilio/sms", form))
        _, form = twilio_server.receive(SENDERS[1], LINE_NUMBER, "Help")
        english = replies(tipline.post_signed("/webhooks/twilio/sms", form))
    assert spanish == ["Recibimos su mensaje y le responderemos en unos minutos. Si hay peligro ahora, llame al 911."]
    assert len(english) == 1
    assert ACK in english[0]


def test_a_process_that_starts_during_an_outage_keeps_running_and_is_seen_once_it_ends(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    """A worker replaced, or the service restarted, while the database takes nothing (a full disk,
    a PostgreSQL restart): its first heartbeat fails. That must cost a log line, not the process:
    a dead worker is replaced by one that dies the same way, and the supervisor gives up."""
    with outage_harness(env, twilio_server, log_file) as (tipline, outage):
        runtime = tipline.runtime
        # When a serving process starts its heartbeat and its dispatcher during the outage
        with outage:
            runtime.announce("serve")
            runtime.start_dispatcher()
            assert runtime.health().dispatcher.state != "ok"
        # Then it is still running, its log says why its beat is missing, and once the database is
        # back its dispatcher is recorded (and /healthz is 200) within seconds
        deadline = time.monotonic() + 15
        while runtime.health().dispatcher.state != "ok" and time.monotonic() < deadline:
            time.sleep(0.1)
        assert runtime.health().dispatcher.state == "ok"
        assert tipline.client.get("/healthz").status_code == 200
    assert "heartbeat failed" in log_file.read_text()


@pytest.mark.skipif(not PG_URL, reason="a pool of connections to a server is PostgreSQL's")
def test_a_connection_cut_while_idle_is_replaced_before_a_message_uses_it(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server restarted, or a firewall that drops idle connections, leaves the pool holding a dead
    connection. The next message must be answered as usual, not deferred as in an outage."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE", 0.2)
    engine = tipline.runtime.engine
    backend = cut_the_pooled_connection(engine)
    time.sleep(0.3)  # idle past PING_AFTER_IDLE
    answer = tipline.say("CANARY-IDLE a red scooter is stripped for parts behind the laundromat", sender=SENDERS[0])
    assert len(answer) == 1 and "Where did it happen?" in answer[0]  # not the outage's acknowledgement
    assert tips_and_deliveries(tipline) == (1, 1)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT pg_backend_pid()")).scalar() != backend
