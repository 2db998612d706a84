"""Fault: the operator stops the tip line (systemd sends SIGTERM) while Twilio is delivering messages.

Before issue 14 `tipline serve` ended within 20 ms of SIGTERM and reset every webhook in flight,
some of them already stored but never answered (Twilio retries no webhook: the tipster got no
reply). What must hold: on SIGTERM the server stops accepting connections at once, answers every
request already in flight completely, stops its dispatcher after the current pass, and exits 0;
what is still unfinished after the bound (`--stop-timeout`) is cut, with a line saying how many.
`tipline dispatch` finishes the send under way and exits 0 promptly. A flood of connections waiting
in the kernel's backlog at the stop changes none of this: the server takes no more than its
connection limit of them (it once took them all, past what select() can watch, and crashed).

How requests are in flight, honestly: Twilio's requests arrive over the network, and a request is in
flight from its first byte to the last byte of its answer. Each test request is sent in two parts,
its headers and half its body before SIGTERM, the rest after, as over a slow link; so every one is
certainly in flight when the signal arrives, whatever the machine's speed.
"""

from __future__ import annotations

import contextlib
import resource
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO
from urllib.parse import urlencode

import pytest

from tests.attacks.test_sent_twice import QUESTION, hold_outbound, sends
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import LINE_NUMBER, Harness, sign
from tests.support.processes import free_port, run, spawn, wait_until_serving, workdir
from tipline.core.vocabulary import OutboxStatus
from tipline.services import review

PATH = "/webhooks/twilio/sms"
SENDERS = [f"+155555501{n}" for n in range(70, 78)]  # fictional (555-01XX)
IN_FLIGHT = len(SENDERS)


def webhook(twilio: FakeTwilio, sender: str, public_url: str, port: int) -> bytes:
    """A signed inbound-SMS webhook as Twilio sends it, as bytes on the wire."""
    _, form = twilio.receive(sender, LINE_NUMBER, "A white van has been parked behind the school all week")
    body = urlencode(form).encode()
    head = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"Content-Length: {len(body)}\r\nX-Twilio-Signature: {sign(PATH, form, base=public_url)}\r\n\r\n"
    )
    return head.encode() + body


def answer(connection: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (b"" if it was reset)."""
    received = b""
    with contextlib.suppress(OSError):
        while chunk := connection.recv(65536):
            received += chunk
            if b"</Response>" in received:
                break
    return received


def refused(port: int, within: float = 2.0) -> bool:
    """Whether new connections are refused within `within` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return True
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def serving(env: dict[str, str], *args: str) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    assert run(env, "init").returncode == 0
    port = free_port()
    log = workdir(env) / "serve.log"
    with log.open("w") as out:
        process = spawn(env, "serve", "--port", str(port), *args, output=out)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", log=log, process=process)
        yield process, port, log
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)


def begin(requests_: list[bytes], port: int) -> list[socket.socket]:
    """Open one connection per request and send its headers and half its body."""
    connections = []
    for data in requests_:
        connection = socket.create_connection(("127.0.0.1", port), timeout=30)
        connection.sendall(data[: len(data) - (len(data) - data.index(b"\r\n\r\n")) // 2])
        connections.append(connection)
    return connections


def finish(connections: list[socket.socket], requests_: list[bytes]) -> list[bytes]:
    """Send the rest of each request and read each answer."""
    for connection, data in zip(connections, requests_, strict=True):
        with contextlib.suppress(OSError):  # a reset connection shows as an empty answer below
            connection.sendall(data[len(data) - (len(data) - data.index(b"\r\n\r\n")) // 2 :])
    try:
        return [answer(connection) for connection in connections]
    finally:
        for connection in connections:
            connection.close()


@pytest.fixture
def sms_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TIPLINE_SANDBOX": "0", "TIPLINE_TWILIO_RECONCILE_SECONDS": "0"}


def test_sigterm_answers_every_webhook_in_flight_then_exits(sms_env: dict[str, str], twilio_server: FakeTwilio) -> None:
    with serving(sms_env) as (process, port, log):
        # Given eight webhooks in flight
        wire = [webhook(twilio_server, sender, sms_env["TIPLINE_PUBLIC_URL"], port) for sender in SENDERS]
        connections = begin(wire, port)
        time.sleep(0.3)
        # When systemd stops the service
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # Then no new connection is taken, while those in flight are still being served
        assert refused(port)
        assert process.poll() is None
        answers = finish(connections, wire)
        # And every one gets its complete answer: the tipster's reply, not a reset
        for answer_ in answers:
            assert answer_.startswith(b"HTTP/1.1 200 "), answer_
            assert b"Where did it happen?" in answer_ and answer_.endswith(b"</Response>"), answer_
        assert process.wait(timeout=20) == 0
        assert time.monotonic() - stopped_at < 20
    output = log.read_text()
    assert "cut" not in output, output


def test_what_is_unfinished_after_the_bound_is_cut_with_a_line_saying_so(
    sms_env: dict[str, str], twilio_server: FakeTwilio
) -> None:
    with serving(sms_env, "--stop-timeout", "2") as (process, port, log):
        # Given one request that will finish and one whose sender stalls for good
        wire = [webhook(twilio_server, sender, sms_env["TIPLINE_PUBLIC_URL"], port) for sender in SENDERS[:2]]
        finishing, stalled = begin(wire, port)
        time.sleep(0.3)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert refused(port)
        [answered] = finish([finishing], wire[:1])
        assert answered.startswith(b"HTTP/1.1 200 "), answered
        # Then the server waits out the bound, no more, cuts the stalled one and still exits 0
        assert process.wait(timeout=15) == 0
        assert 2 <= time.monotonic() - stopped_at < 10
        assert answer(stalled) == b""
        stalled.close()
    assert "1 request in flight cut" in log.read_text()


def test_a_stop_during_a_flood_of_connections_still_finishes_what_is_in_flight(
    sms_env: dict[str, str], twilio_server: FakeTwilio
) -> None:
    # More connections than a select() loop can watch (file descriptors past 1023): waitress takes
    # 100 (its connection limit), the others wait in the kernel's backlog
    _allow_files(FLOOD + 200)
    # One process: the connection limit is per process (N workers take up to N times as many).
    with serving(sms_env, "--stop-timeout", "5", "--workers", "1") as (process, port, log):
        wire = [webhook(twilio_server, SENDERS[0], sms_env["TIPLINE_PUBLIC_URL"], port)]
        in_flight = begin(wire, port)
        flood = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(FLOOD)]
        try:
            time.sleep(0.3)
            # When systemd stops the service
            process.send_signal(signal.SIGTERM)
            assert refused(port)
            # Then the request in flight is still answered completely, and the server exits 0
            [answered] = finish(in_flight, wire)
            assert process.wait(timeout=15) == 0, log.read_text()[-2000:]
            assert answered.startswith(b"HTTP/1.1 200 ") and answered.endswith(b"</Response>"), answered
            # And no more connections were taken than waitress's limit: those left waiting were refused
            taken = sum(1 for connection in flood if _closed_by_the_server(connection))
            assert 0 < taken <= CONNECTION_LIMIT, taken
        finally:
            for connection in flood:
                connection.close()
    output = log.read_text()
    assert "Traceback" not in output and "cut" not in output, output[-2000:]


FLOOD = 1100
CONNECTION_LIMIT = 100  # waitress's connection_limit


def _closed_by_the_server(connection: socket.socket) -> bool:
    """Whether the server took this connection and closed it (True), or never took it and it was
    reset when the listening socket closed (False)."""
    try:
        return connection.recv(1) == b""
    except ConnectionResetError:
        return False


def _allow_files(count: int) -> None:
    """Let this process (and the server it starts) open `count` files, if the hard limit allows."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < count:
        if hard != resource.RLIM_INFINITY and hard < count:
            pytest.skip(f"this test needs {count} open files; the hard limit is {hard}")
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, hard))


def test_serve_lets_its_dispatcher_finish_the_send_under_way(
    tipline: Harness, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tipline.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
    tipline.dispatch()  # the deletions of the inbound copies: the outbox now holds only the reply
    review.reply(tipline.runtime.ctx, reference, QUESTION)
    taken, release = hold_outbound(tipline.twilio, monkeypatch)
    env = {**env, "TIPLINE_SANDBOX": "0"}  # the sandbox is served on loopback addresses only
    with _spawned(env, "serve", "--port", str(free_port())) as process:
        assert taken.wait(60), "the server's dispatcher never sent the reply"
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert process.poll() is None  # still waiting for Twilio's answer
        release.set()
        assert process.wait(timeout=10) == 0
    [item] = sends(tipline)
    assert item.status == OutboxStatus.SENT  # its answer recorded, not left claimed
    assert [form["Body"] for form in tipline.twilio.sent].count(f"Example City Police: {QUESTION}") == 1


def test_dispatch_finishes_the_send_under_way_and_exits_promptly(
    tipline: Harness, env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    reference = tipline.submit_tip("Stolen bikes being sold from a garage on Birch Rd")
    tipline.dispatch()
    review.reply(tipline.runtime.ctx, reference, QUESTION)
    taken, release = hold_outbound(tipline.twilio, monkeypatch)
    with _spawned(env, "dispatch") as process:
        assert taken.wait(60), "the dispatcher never sent the reply"
        process.send_signal(signal.SIGTERM)
        time.sleep(1)
        assert process.poll() is None  # still waiting for Twilio's answer
        release.set()
        released = time.monotonic()
        assert process.wait(timeout=10) == 0
        assert time.monotonic() - released < 2
    [item] = sends(tipline)
    assert item.status == OutboxStatus.SENT


def test_an_idle_dispatch_stops_at_once(env: dict[str, str]) -> None:
    assert run(env, "init").returncode == 0
    with _spawned(env, "dispatch") as process, _lines(process) as lines:
        assert any("dispatching for channels" in line for line in lines)
        time.sleep(0.5)  # well into its idle wait
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert any("dispatcher stopped" in line for line in lines)
        assert time.monotonic() - signalled < 0.3  # not the rest of its idle interval (1 s)
        assert process.wait(timeout=10) == 0


@contextlib.contextmanager
def _spawned(env: dict[str, str], *args: str) -> Iterator[subprocess.Popen[bytes]]:
    process = spawn(env, *args, output=subprocess.PIPE)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)
        if process.stdout is not None:
            process.stdout.close()


@contextlib.contextmanager
def _lines(process: subprocess.Popen[bytes]) -> Iterator[Iterator[str]]:
    stream: IO[bytes] | None = process.stdout
    assert stream is not None
    yield (line.decode() for line in stream)  # until the process closes its output
