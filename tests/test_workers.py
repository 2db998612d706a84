"""`tipline serve --workers N`: several processes on one port keep every promise of one (tipline/web/server.py).

Real processes and real HTTP, on the database the suite runs on. Which worker serves a connection
is the kernel's choice; the tests find out from /proc which process holds the server's end of each
connection, so that "both workers served" and "this request went to the worker without the
dispatcher" are facts, not likelihoods.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from sqlalchemy import func, select

from tests.attacks.test_graceful_stop import answer, finish, refused, webhook
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import Harness
from tests.support.processes import TIPLINE, environment, free_port, run, wait_until_serving, workdir
from tipline.core.vocabulary import MessageKind
from tipline.storage.models import Message, ProcessBeat, ProcessedDelivery

pytestmark = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="finds connections' workers in /proc")

SENDERS = [f"+1555555018{n}" for n in range(8)]  # fictional (555-01XX)
STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


@dataclass
class Served:
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    def workers(self) -> dict[int, int]:
        """Worker index -> pid, of the workers started last (a replacement takes its index)."""
        return {int(index): int(pid) for index, pid in STARTED.findall(self.log.read_text())}

    def wait_for_workers(self, count: int = 2, seconds: float = 30) -> dict[int, int]:
        """The workers, once `count` of them are alive and every one of them accepts connections."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            workers = self.workers()
            if len(workers) == count and all(Path(f"/proc/{pid}").exists() for pid in workers.values()):
                for pid in workers.values():
                    connect_to(self.port, pid, workers.values()).close()
                return workers
            time.sleep(0.1)
        raise AssertionError(self.log.read_text())

    def stop(self, number: int = signal.SIGTERM) -> int:
        self.process.send_signal(number)
        return self.process.wait(timeout=30)


@contextlib.contextmanager
def serving(env: dict[str, str], *args: str, own_group: bool = False) -> Iterator[Served]:
    """`tipline serve --workers 2` until the block ends; killed (workers too) if still running then."""
    port = free_port()
    log = workdir(env) / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [*TIPLINE, "serve", "--port", str(port), "--workers", "2", *args],
            env=environment(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=workdir(env),
            process_group=0 if own_group else None,
        )
    served = Served(process, port, log)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}", log=log)
        served.wait_for_workers()
        yield served
    finally:
        if process.poll() is None:
            workers = served.workers().values()
            process.kill()
            process.wait(10)
            for pid in workers:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def owner(connection: socket.socket, port: int, pids: Collection[int], seconds: float = 10) -> int:
    """The worker (one of `pids`) that took `connection`: the one holding the server's end of it."""
    client_port = connection.getsockname()[1]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        inode = _server_end(port, client_port)
        for pid in pids:
            with contextlib.suppress(FileNotFoundError):
                if inode and f"socket:[{inode}]" in _sockets_of(pid):
                    return pid
        time.sleep(0.02)
    raise AssertionError(f"no worker took the connection from port {client_port}")


def _server_end(port: int, client_port: int) -> str | None:
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, inode = fields[1], fields[2], fields[9]
        if int(local.split(":")[1], 16) == port and int(remote.split(":")[1], 16) == client_port and inode != "0":
            return inode
    return None


def _sockets_of(pid: int) -> set[str]:
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            found.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return found


def connect_to(port: int, pid: int, pids: Collection[int], seconds: float = 30) -> socket.socket:
    """A connection that the worker `pid` took (the kernel chooses: connect until it has; a worker
    just started may still be building its runtime)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        connection = socket.create_connection(("127.0.0.1", port), timeout=30)
        if owner(connection, port, pids) == pid:
            return connection
        connection.close()
        time.sleep(0.05)
    raise AssertionError(f"worker {pid} took no connection in {seconds:g} s")


def _half(wire: bytes) -> int:
    """Where `finish` (tests/attacks/test_graceful_stop.py) takes a request up: half its body."""
    return len(wire) - (len(wire) - wire.index(b"\r\n\r\n")) // 2


def _sid(wire: bytes) -> str:
    found = re.search(rb"MessageSid=(\w+)", wire)
    assert found is not None
    return found.group(1).decode()


def send(connection: socket.socket, wire: bytes) -> bytes:
    """One request on a kept-alive connection; its answer."""
    connection.sendall(wire)
    return answer(connection)


@pytest.fixture
def sms_env(env: dict[str, str]) -> dict[str, str]:
    return {**env, "TIPLINE_SANDBOX": "0", "TIPLINE_TWILIO_RECONCILE_SECONDS": "0"}


def test_two_workers_share_a_burst_of_webhooks_and_store_each_message_once(
    tipline: Harness, sms_env: dict[str, str], twilio_server: FakeTwilio
) -> None:
    public_url = sms_env["TIPLINE_PUBLIC_URL"]
    metrics = f"127.0.0.1:{free_port()}"
    with serving({**sms_env, "TIPLINE_METRICS_ADDRESS": metrics}) as served:
        workers = served.wait_for_workers()
        assert requests.get(f"http://{metrics}/metrics", timeout=10).status_code == 200  # from worker 0 alone
        with tipline.runtime.factory() as session:  # each worker is a serving process in the heartbeat rows
            assert session.scalar(select(func.count()).where(ProcessBeat.kind == "serve")) == 2
        # Given eight connections, at least one to each worker, each sending three webhooks at once
        connections = [connect_to(served.port, pid, workers.values()) for pid in workers.values()]
        connections += [socket.create_connection(("127.0.0.1", served.port), timeout=30) for _ in SENDERS[2:]]
        owners = {owner(connection, served.port, workers.values()) for connection in connections}
        answers: list[bytes] = []

        def tipster(connection: socket.socket, sender: str) -> None:
            for _ in range(3):
                answers.append(send(connection, webhook(twilio_server, sender, public_url, served.port)))

        threads = [threading.Thread(target=tipster, args=pair) for pair in zip(connections, SENDERS, strict=True)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        for connection in connections:
            connection.close()
        assert served.stop() == 0
    # Then both workers served, every webhook was answered, and each message was stored once
    assert owners == set(workers.values())
    assert len(answers) == 3 * len(SENDERS)
    assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"</Response>") for a in answers), answers
    with tipline.runtime.factory() as session:
        assert session.scalar(select(func.count()).where(Message.kind == MessageKind.TIPSTER)) == 3 * len(SENDERS)
        assert session.scalar(select(func.count()).select_from(ProcessedDelivery)) == 3 * len(SENDERS)
        assert session.scalar(select(func.count()).select_from(ProcessBeat)) == 0  # each worker said goodbye
    if tipline.runtime.settings.sqlite_path is not None:  # the processes took turns to write through it
        lock = Path(f"{tipline.runtime.settings.sqlite_path}.writelock")
        assert stat.S_IMODE(lock.stat().st_mode) == 0o600
    output = served.log.read_text()
    assert output.count(f"metrics on http://{metrics}/metrics") == 1 and "metrics not served" not in output, output


def test_sigterm_answers_what_is_in_flight_on_every_worker_then_exits_0(
    sms_env: dict[str, str], twilio_server: FakeTwilio
) -> None:
    assert run(sms_env, "init").returncode == 0
    with serving(sms_env) as served:
        workers = served.wait_for_workers()
        # Given two webhooks in flight on each worker (headers and half the body sent)
        wire = [webhook(twilio_server, s, sms_env["TIPLINE_PUBLIC_URL"], served.port) for s in SENDERS[:4]]
        pids = [workers[0], workers[0], workers[1], workers[1]]
        connections = [connect_to(served.port, pid, workers.values()) for pid in pids]
        for connection, data in zip(connections, wire, strict=True):
            connection.sendall(data[: _half(data)])
        time.sleep(0.3)
        # When systemd stops the service (SIGTERM to the main process only: KillMode=mixed)
        served.process.send_signal(signal.SIGTERM)
        assert refused(served.port, within=5)
        answers = finish(connections, wire)
        # Then every one is answered completely and the command exits 0
        assert all(a.startswith(b"HTTP/1.1 200 ") and a.endswith(b"</Response>") for a in answers), answers
        assert served.process.wait(timeout=20) == 0
    output = served.log.read_text()
    assert output.count("stopped: every request answered") == 2, output
    assert "cut" not in output, output


def test_ctrl_c_in_a_terminal_is_one_graceful_stop(sms_env: dict[str, str], twilio_server: FakeTwilio) -> None:
    assert run(sms_env, "init").returncode == 0
    with serving(sms_env, own_group=True) as served:
        workers = served.wait_for_workers()
        wire = [webhook(twilio_server, s, sms_env["TIPLINE_PUBLIC_URL"], served.port) for s in SENDERS[:2]]
        connections = [connect_to(served.port, pid, workers.values()) for pid in workers.values()]
        for connection, data in zip(connections, wire, strict=True):
            connection.sendall(data[: _half(data)])
        time.sleep(0.3)
        # When Ctrl-C is pressed: the terminal signals its foreground process group, the command's.
        # A worker signalled by the terminal and by the supervisor would count two signals and cut
        # its requests short; each worker must count one.
        os.killpg(served.process.pid, signal.SIGINT)
        [first, second] = finish(connections, wire)
        assert first.startswith(b"HTTP/1.1 200 ") and second.startswith(b"HTTP/1.1 200 "), (first, second)
        assert served.process.wait(timeout=20) == 0
    output = served.log.read_text()
    assert output.count("stopped: every request answered") == 2 and "cut" not in output, output


def test_a_killed_worker_is_replaced_and_its_replacement_runs_the_dispatcher(
    sms_env: dict[str, str], twilio_server: FakeTwilio
) -> None:
    assert run(sms_env, "init").returncode == 0
    with serving(sms_env) as served:
        before = served.wait_for_workers()
        # When the worker with the dispatcher is killed
        os.kill(before[0], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while served.workers()[0] == before[0] and time.monotonic() < deadline:
            time.sleep(0.1)
        after = served.wait_for_workers()
        # Then another takes its place, and the tip line still answers on both, and sends
        assert after[0] != before[0] and after[1] == before[1]
        sids = []
        for index, pid in after.items():
            wire = webhook(twilio_server, SENDERS[index], sms_env["TIPLINE_PUBLIC_URL"], served.port)
            sids.append(_sid(wire))
            with connect_to(served.port, pid, after.values()) as connection:
                reply = send(connection, wire)
            assert reply.startswith(b"HTTP/1.1 200 "), reply
        deadline = time.monotonic() + 10
        while not set(sids) <= set(twilio_server.deleted) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(sids) <= set(twilio_server.deleted)  # the new dispatcher sent the deletions
        assert served.stop() == 0
    output = served.log.read_text()
    assert f"worker 0 (pid {before[0]}) was killed (SIGKILL): starting another" in output
    assert output.count("with the dispatcher") == 2


def test_outbox_work_queued_by_a_worker_without_the_dispatcher_goes_out_at_once(
    sms_env: dict[str, str], twilio_server: FakeTwilio
) -> None:
    """The deletion of each inbound SMS at Twilio is queued by intake in the outbox. Queued by
    worker 1, it must wake worker 0's dispatcher through the pipe; without it, the dispatcher
    notices only at the end of its idle wait (up to a second, half a second on average)."""
    assert run(sms_env, "init").returncode == 0
    with serving(sms_env) as served:
        workers = served.wait_for_workers()
        time.sleep(1.5)  # the dispatcher's first passes (maintenance) are behind it: it waits idle
        waited = []
        with connect_to(served.port, workers[1], workers.values()) as connection:
            for sender in SENDERS[:4]:
                wire = webhook(twilio_server, sender, sms_env["TIPLINE_PUBLIC_URL"], served.port)
                assert send(connection, wire).startswith(b"HTTP/1.1 200 ")
                answered = time.monotonic()
                while _sid(wire) not in twilio_server.deleted and time.monotonic() - answered < 5:
                    time.sleep(0.005)
                waited.append(time.monotonic() - answered)
                time.sleep(0.3)  # into the dispatcher's next idle wait
        assert served.stop() == 0
    # Each within a fraction of the idle second: four in a row by chance is 1 in 150 or so
    assert max(waited) < 0.35, waited


def test_a_senders_reply_limit_counts_messages_that_land_on_different_workers(
    sms_env: dict[str, str], twilio_server: FakeTwilio
) -> None:
    env = {**sms_env, "TIPLINE_SENDER_REPLY_LIMIT": "2"}
    assert run(env, "init").returncode == 0
    with serving(env) as served:
        workers = served.wait_for_workers()
        connections = [connect_to(served.port, pid, workers.values()) for pid in workers.values()]
        # Given one sender whose messages alternate between the two workers
        replies = []
        for n in range(4):
            wire = webhook(twilio_server, SENDERS[0], env["TIPLINE_PUBLIC_URL"], served.port)
            replies.append(send(connections[n % 2], wire))
        for connection in connections:
            connection.close()
        assert served.stop() == 0
    # Then the third, whichever worker took it, is the one notice, and the fourth gets no answer
    assert all(reply.startswith(b"HTTP/1.1 200 ") for reply in replies), replies
    assert [b"<Message" in reply for reply in replies] == [True, True, True, False], replies
    assert [b"Please slow down" in reply for reply in replies] == [False, False, True, False], replies


def test_refusals_at_start_are_one_line_from_the_supervisor(cli_env: dict[str, str]) -> None:
    # Not initialised: checked once, before any worker exists
    result = run({**cli_env, "TIPLINE_SANDBOX": "0"}, "serve", "--port", str(free_port()), "--workers", "2")
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tipline: ") and result.stderr.count("\n") == 1, result.stderr
    assert "worker" not in result.stderr + result.stdout
    # The sandbox keeps its conversations in one process: it is never spread over several
    sandbox = {**cli_env, "TIPLINE_SANDBOX": "1", "TIPLINE_PUBLIC_URL": "http://127.0.0.1:8000"}
    result = run(sandbox, "serve", "--port", str(free_port()), "--workers", "2")
    assert result.returncode == 2
    assert result.stderr.startswith("tipline: the sandbox keeps its conversations in one process's memory")
