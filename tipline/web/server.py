"""How `tipline serve` and `tipline dispatch` start, listen and stop.

Start: the port is bound before anything else happens (no "serving" line, no dispatcher, no
heartbeat), so a busy port is one clear line, not a traceback after a start that seemed to work.

Listen: waitress, with every request body kept in memory (limits.py) and the X-Forwarded-* headers
believed from the reverse proxies in TIPLINE_TRUSTED_PROXY only (`proxy_options`).

Stop: SIGTERM (systemd's stop) or Ctrl-C. Twilio retries no webhook, so a request cut in flight is a
tipster left without an answer, and possibly a message stored but never acknowledged. On the first
signal the server stops accepting connections at once, finishes the requests in flight (at most
`grace` seconds, then cuts what is left and says how many), lets the dispatcher finish its current
pass, and returns; the command then closes the runtime and exits 0. A second signal cuts short.

Several processes (`serve --workers N`, `Supervisor`): the command binds the port and checks the
database once, then forks N workers that each serve as above on the same sockets; it passes each
signal on to them, replaces one that dies, and exits 0 when all have stopped gracefully.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from socket import AF_INET, AF_INET6
from types import FrameType
from typing import Any, NoReturn
from urllib.parse import urlsplit

import waitress
from waitress import wasyncore
from waitress.channel import HTTPChannel
from waitress.proxy_headers import proxy_headers_middleware
from waitress.server import BaseWSGIServer

from tipline.config import Settings
from tipline.web.limits import server_limits
from tipline.web.sandbox import is_loopback

log = logging.getLogger(__name__)

STOP_SECONDS = 20.0  # the default bound on a graceful stop: well inside systemd's 90 s TimeoutStopSec
# A connection with no request yet is closed on stop only after this long: its first bytes may
# still be on their way (a client that connected just before the signal is in flight too).
IDLE_GRACE = 1.0
DRAIN_TICK = 0.05  # how often the stop re-checks what is still in flight
# What a trusted proxy may tell us: the client's address, the scheme and the host it asked for.
FORWARDED_HEADERS = frozenset({"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host"})

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Any]


class PortUnavailable(Exception):
    """The address cannot be listened on; the message says why in one line."""


# Starting ------------------------------------------------------------------------------------------


def bind(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of `host` on `port` (not yet listening: nothing is accepted
    until the server is built). PortUnavailable if the port is taken or the address is not ours."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError):
        raise PortUnavailable(f"cannot listen on {host}: not an address or name this machine knows") from None
    wanted = {(family, address): proto for family, _, proto, _, address in found if family in (AF_INET, AF_INET6)}
    sockets: list[socket.socket] = []
    try:
        for (family, address), proto in wanted.items():
            try:
                sock = socket.socket(family, socket.SOCK_STREAM, proto)
            except OSError as error:
                if error.errno == errno.EAFNOSUPPORT and len(wanted) > 1:
                    continue  # "localhost" on a machine without IPv6: its IPv4 address will do
                raise
            sockets.append(sock)
            _bind(sock, family, address)
    except OSError as error:
        for sock in sockets:
            sock.close()
        raise PortUnavailable(_why_not(error, host, port)) from None
    return sockets


def _bind(sock: socket.socket, family: int, address: Any) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as waitress: a restart reuses the port at once
    if family == AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # IPv4 gets its own socket
    sock.bind(address)


def _why_not(error: OSError, host: str, port: int) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use (another tipline serve?)"
    if error.errno == errno.EACCES:
        return f"not allowed to listen on port {port} (below 1024 needs privileges: use 8000 behind a reverse proxy)"
    if error.errno == errno.EADDRNOTAVAIL:
        return f"cannot listen on {host}: not an address of this machine"
    return f"cannot listen on port {port} on {host}: {error.strerror}"


def startup_warnings(settings: Settings) -> list[str]:
    """Settings that work but should not: one line each, for stderr.

    Warned, not refused, because the server still does something useful with them and refusing
    would take the console and the other channels down with the one at fault:
    - an http:// public address that is not this machine's, with Twilio or Telegram configured:
      Twilio does call http webhooks, but the signatures (and the console's cookies, which are
      Secure only under https) then cross the network in clear; a lab network may do it knowingly.
    - a Telegram token without TELEGRAM_WEBHOOK_SECRET: the webhook refuses every update (it
      cannot tell Telegram from anyone else), but the bot may be served by `tipline telegram
      poll`, which this command cannot see.
    """
    lines = []
    url = urlsplit(settings.public_url)
    providers = [name for name, on in (("Twilio", settings.twilio), ("Telegram", settings.telegram)) if on]
    if url.scheme == "http" and providers and not is_loopback(url.hostname or ""):
        lines.append(
            f"TIPLINE_PUBLIC_URL={settings.public_url} is plain http with {' and '.join(providers)} configured: "
            "webhook signatures and console cookies cross the network in clear (and Telegram refuses http "
            "webhooks). Put TLS in front (README: Behind a reverse proxy) and set an https:// address"
        )
    if settings.telegram is not None and not settings.telegram.webhook_secret:
        lines.append(
            "TELEGRAM_BOT_TOKEN is set without TELEGRAM_WEBHOOK_SECRET: /webhooks/telegram refuses every update. "
            "Set the secret and run `tipline telegram set-webhook`, or use `tipline telegram poll`"
        )
    return lines


# Listening -----------------------------------------------------------------------------------------


def proxy_options(app: WSGIApp, trusted: tuple[str, ...]) -> tuple[WSGIApp, dict[str, Any]]:
    """The app to serve and waitress's proxy settings, for the proxies at the addresses `trusted`.

    From a trusted proxy, X-Forwarded-For names the client (REMOTE_ADDR becomes its address, so the
    sign-in throttle counts each client, not the proxy), and X-Forwarded-Proto/-Host the scheme and
    host it asked for. Only the last entry of X-Forwarded-For is believed (trusted_proxy_count=1):
    that is the one the proxy itself wrote; the ones before it came from the client, who can write
    anything. From any other peer these headers are removed before the app sees them.

    With one proxy (or none) this is waitress's own setting. waitress trusts only one address (or
    "*", which would let anyone forge the headers), so for several the app is wrapped in waitress's
    own middleware once per proxy and chosen by the peer's address, with a clearing one for every
    other peer; waitress's setting is then off, since its wrapper would sit outside ours and remove
    the headers before ours could believe them.
    """
    if len(trusted) <= 1:
        options: dict[str, Any] = {"clear_untrusted_proxy_headers": True}
        if trusted:
            options |= {
                "trusted_proxy": trusted[0],
                "trusted_proxy_count": 1,
                "trusted_proxy_headers": " ".join(sorted(FORWARDED_HEADERS)),
            }
        return app, options
    return _believe_only(app, trusted), {"clear_untrusted_proxy_headers": False}


def _believe_only(app: WSGIApp, trusted: tuple[str, ...]) -> WSGIApp:
    believing: dict[str, WSGIApp] = {
        address: proxy_headers_middleware(
            app,
            trusted_proxy=address,
            trusted_proxy_count=1,
            trusted_proxy_headers=set(FORWARDED_HEADERS),
            clear_untrusted=True,
        )
        for address in trusted
    }
    doubting: WSGIApp = proxy_headers_middleware(app, trusted_proxy=None, clear_untrusted=True)

    def by_peer(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        return believing.get(environ.get("REMOTE_ADDR", ""), doubting)(environ, start_response)

    return by_peer


# Stopping ------------------------------------------------------------------------------------------


class StopSignals:
    """SIGTERM and SIGINT, counted, while in a `with` block entered before the command says it is
    running. Each also makes `self.pipe` readable, so that a thread waiting on it wakes at once.

    The kernel may hand a signal to any thread (a waitress worker, the dispatcher), and Python runs
    the handler only when the main thread next runs Python code: without the pipe, a main thread
    asleep in select() would notice a second later. The pipe is written by Python's own C-level
    handler (`signal.set_wakeup_fd`), whichever thread the signal hit. The Python handler only
    counts: it runs between any two bytecodes of the main thread, perhaps while that thread holds a
    lock (an Event's, waitress's), so it takes none."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self) -> None:
        self.received = 0
        self.pipe, self._write = os.pipe()
        os.set_blocking(self.pipe, False)
        os.set_blocking(self._write, False)
        self._previous: dict[int, Any] = {}
        self._previous_fd = -1

    def __enter__(self) -> StopSignals:
        for number in self.SIGNALS:
            self._previous[number] = signal.signal(number, self._count)
        self._previous_fd = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        return self

    def __exit__(self, *_: object) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        os.close(self.pipe)
        os.close(self._write)

    def _count(self, _number: int, _frame: FrameType | None) -> None:
        self.received += 1

    def wait(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for a signal; whether one has come."""
        if not self.received:
            select.select([self.pipe], [], [], timeout)
        try:
            os.read(self.pipe, 64)
        except BlockingIOError:
            pass
        return self.received > 0


class _Wakeup(wasyncore.file_dispatcher):  # type: ignore[misc]  # waitress has no type information
    """The signal pipe in waitress's loop: a signal ends the loop's wait at once."""

    def writable(self) -> bool:
        return False

    def handle_read(self) -> None:
        try:
            self.recv(64)
        except OSError:
            pass


@dataclass
class Background:
    """A worker thread that stops after its current pass (the outbound dispatcher)."""

    thread: threading.Thread
    stop: threading.Event
    wake: Callable[[], None]  # cuts its idle wait short

    def ask_to_stop(self) -> None:
        self.stop.set()
        self.wake()

    def join(self, deadline: float) -> None:
        """Wait for the current pass until `deadline` (monotonic); after it, leave the thread behind:
        the rows it holds go back to the outbox when their lease ends, and a send already begun is
        checked in the provider's log before it is tried again."""
        self.thread.join(max(0.0, deadline - time.monotonic()))
        if self.thread.is_alive():
            log.warning("the dispatcher was still busy when the stop's time ran out: stopping without it")
        else:
            log.info("the dispatcher stopped after its current pass")


def run_until_stopped(signals: StopSignals, background: Background, grace: float = STOP_SECONDS) -> None:
    """`tipline dispatch`: let the dispatcher work until SIGTERM or SIGINT, then let it finish its
    current pass (at most `grace` seconds)."""
    while background.thread.is_alive() and not signals.wait(1.0):
        pass
    background.ask_to_stop()
    background.join(time.monotonic() + grace)


class Server:
    """waitress on sockets already bound (`bind`), served until a signal, then stopped gracefully."""

    def __init__(self, app: WSGIApp, sockets: list[socket.socket], settings: Settings, *, threads: int, grace: float):
        served, proxies = proxy_options(app, settings.trusted_proxies)
        self.map: dict[int, Any] = {}
        self.grace = grace
        self.waitress = waitress.create_server(
            served,
            map=self.map,
            sockets=sockets,
            threads=threads,
            ident="tipline",
            # poll(), not select(): select() cannot watch a file descriptor past 1023 and raises, which
            # would end the process and cut every connection (thousands of open files are allowed)
            asyncore_use_poll=True,
            **proxies,
            **server_limits(settings),  # no body over what a route accepts; none spooled to disk
        )
        self.listeners = [d for d in self.map.values() if isinstance(d, BaseWSGIServer)]

    def serve(self, signals: StopSignals, background: Background | None = None) -> int:
        """Serve until SIGTERM or SIGINT, then stop gracefully; returns how many requests were cut."""
        _Wakeup(signals.pipe, self.map)
        while not signals.received:
            self._poll(self.waitress.adj.asyncore_loop_timeout)
        deadline = time.monotonic() + self.grace
        if background is not None:
            background.ask_to_stop()
        for listener in self.listeners:
            self._stop_accepting(listener)
        busy = sum(1 for channel in self._channels() if _in_flight(channel))
        log.info("stopping: no new connections; finishing %d %s in flight", busy, _requests(busy))
        cut = self._finish_in_flight(signals, deadline)
        self.waitress.task_dispatcher.shutdown(cancel_pending=True, timeout=1)
        wasyncore.close_all(self.map)
        if background is not None:
            background.join(deadline)
        if cut:
            log.warning("stopped after %g s: %d %s in flight cut", self.grace, cut, _requests(cut))
        else:
            log.info("stopped: every request answered")
        return cut

    def _poll(self, timeout: float) -> None:
        wasyncore.loop(timeout=timeout, map=self.map, use_poll=self.waitress.adj.asyncore_use_poll, count=1)

    def _channels(self) -> list[Any]:
        return [d for d in self.map.values() if isinstance(d, HTTPChannel)]

    def _stop_accepting(self, listener: Any) -> None:
        """Take the connections already waiting in the backlog (their clients are in flight too), as
        many as waitress's connection limit allows, as while serving, then close the listening
        socket: new connections, and any left in the backlog past the limit, are refused from here
        on. Without the limit a flood of connections would all be taken at once, thousands of them."""
        while len(self.map) < self.waitress.adj.connection_limit:
            before = len(self.map)
            listener.handle_accept()
            if len(self.map) == before:
                break
        listener.accepting = False
        listener.del_channel()
        listener.socket.close()

    def _finish_in_flight(self, signals: StopSignals, deadline: float) -> int:
        """Serve the open connections until none is left, the deadline passes or a second signal
        comes; closes each idle one as it becomes idle. Returns how many were cut in flight."""
        while self._channels():
            for channel in self._channels():
                if _idle(channel, time.time()):
                    channel.handle_close()
            if time.monotonic() >= deadline or signals.received > 1:
                return sum(1 for channel in self._channels() if _in_flight(channel))
            self._poll(DRAIN_TICK)
        return 0


def _in_flight(channel: Any) -> bool:
    """A request is being received, handled, or its answer sent on this connection."""
    return bool(channel.requests) or channel.request is not None or channel.total_outbufs_len > 0


def _idle(channel: Any, now: float) -> bool:
    """A connection between requests, quiet for a while, with nothing new arriving: one to close."""
    if _in_flight(channel) or channel.will_close or channel.close_when_flushed:
        return False
    if now - channel.last_activity < IDLE_GRACE:
        return False
    try:
        return not channel.socket.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)  # b"": the client left
    except BlockingIOError:
        return True
    except OSError:
        return True


def _requests(count: int) -> str:
    return "request" if count == 1 else "requests"


# Several processes ---------------------------------------------------------------------------------

# A worker that dies is replaced, but no more than this many times a minute: one that dies at once,
# again and again, is a fault for a person to see, not one to hide behind a loop of restarts.
RESTARTS_PER_MINUTE = 5
REAP_TICK = 0.2  # how often the supervisor looks for workers that exited
ORPHAN_TICK = 1.0  # how often a worker checks that its supervisor is still there (not on Linux)
PR_SET_PDEATHSIG = 1  # prctl(2): the signal a process gets when its parent dies


def default_workers() -> int:
    """The machine's cores: Python runs one request's code at a time per process."""
    return os.cpu_count() or 1


class Worker:
    """One process of `serve --workers N`, as the work it runs sees it.

    Worker 0 runs the dispatcher and the metrics: the outbox keeps each tipster's replies in order
    with one dispatcher per `serve`. The others wake it through a pipe when they queue outbox work,
    as the single process does through an Event, so that a reply does not wait out the dispatcher's
    idle second.

    A stop that comes while the worker is still starting (building its runtime, which a loaded
    machine may take seconds over) closes its copies of the listening sockets at once: the port
    must refuse new connections as soon as every worker has been told to stop, not once the
    slowest has started."""

    def __init__(
        self, index: int, signals: StopSignals, sockets: list[socket.socket], wake: tuple[int, int], ready: int
    ):
        self.index = index
        self.signals = signals
        self.sockets = sockets
        self.wake_read, self.wake_write = wake
        self._ready = ready
        self._starting = threading.Lock()
        self._serving = False
        threading.Thread(target=self._close_if_stopped, name="worker-start", daemon=True).start()

    @property
    def leads(self) -> bool:
        return self.index == 0

    def begin_serving(self) -> bool:
        """Called just before serving: False if a stop came first (the sockets are then closed)."""
        with self._starting:
            self._serving = not self.signals.received
            return self._serving

    def _close_if_stopped(self) -> None:
        while True:
            with self._starting:
                if self._serving:
                    return
                if self.signals.received:
                    for sock in self.sockets:
                        sock.close()
                    return
            time.sleep(DRAIN_TICK)

    def serving(self) -> None:
        """Tell the supervisor that this worker serves (it says "serving" once every worker does)."""
        os.write(self._ready, b"\0")

    def wake_dispatcher(self) -> None:
        """Tell worker 0 that there is outbox work (never blocks: a full pipe has wake-ups enough)."""
        try:
            os.write(self.wake_write, b"\0")
        except BlockingIOError:
            pass

    def relay_wakeups(self, wake: Callable[[], None]) -> None:
        """In worker 0: call `wake` whenever another worker has written to the pipe."""
        threading.Thread(target=_relay, args=(self.wake_read, wake), name="wake-relay", daemon=True).start()


def _relay(read: int, wake: Callable[[], None]) -> None:
    while True:
        select.select([read], [], [])
        try:
            os.read(read, 4096)
        except BlockingIOError:
            continue  # another reader of the pipe (a worker 0 on its way out) took the bytes
        wake()


class Supervisor:
    """`serve --workers N`: N processes forked from this one, serving the sockets it bound.

    The supervisor serves nothing itself: it starts the workers, replaces one that dies, and passes
    each SIGTERM or SIGINT on to every worker as SIGTERM (the first: a graceful stop; the second:
    cut short). Workers have their own process group, so a terminal's Ctrl-C reaches the supervisor
    only and each worker gets exactly one signal for it; systemd (KillMode=mixed) signals the main
    process only, for the same result. It must fork before any thread, engine or connection exists
    in it: a fork copies a lock held by another thread as held, forever, and a connection shared by
    two processes mixes their conversations with the database."""

    def __init__(
        self, sockets: list[socket.socket], workers: int, work: Callable[[Worker], int], fatal: tuple[int, ...]
    ):
        self.sockets = sockets
        self.workers = workers
        self.work = work
        self.fatal = fatal  # a worker's exit status that stops everything: a refusal, not a crash
        self.pids: dict[int, int] = {}  # pid -> worker index
        self.restarts: list[float] = []  # when workers were replaced (monotonic), within the last minute
        self.stopping = False
        self.status = 0

    def run(self, started: Callable[[], None]) -> int:
        """Serve until the workers have stopped; the exit status: 0 after a graceful stop in which
        every worker exited 0. `started` runs once every worker serves."""
        _wait_for_threads()
        for sock in self.sockets:
            sock.listen(1024)  # waitress's backlog: connections wait here while the workers start
        self.wake_read, self.wake_write = os.pipe()
        self.ready_read, self.ready_write = os.pipe()
        pipes = (self.wake_read, self.wake_write, self.ready_read, self.ready_write)
        for end in pipes:
            os.set_blocking(end, False)
        try:
            with StopSignals() as signals:
                for index in range(self.workers):
                    self._start(index)
                self._watch(signals, started)
        finally:
            for end in pipes:
                os.close(end)
        return self.status

    def _start(self, index: int) -> None:
        sys.stdout.flush()  # what is buffered would be written twice, once by each process
        sys.stderr.flush()
        # Signals wait until the worker has its own handlers: one arriving in between is kept, not lost
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, StopSignals.SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                self._be_worker(index)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        self.pids[pid] = index
        log.info("worker %d started (pid %d)%s", index, pid, ", with the dispatcher" if index == 0 else "")

    def _be_worker(self, index: int) -> NoReturn:
        status = 1
        supervisor = os.getppid()
        try:
            os.setpgid(0, 0)
            with StopSignals() as signals:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, StopSignals.SIGNALS)
                _die_with(supervisor)
                wake = (self.wake_read, self.wake_write)
                status = self.work(Worker(index, signals, self.sockets, wake, self.ready_write))
        except SystemExit as exit_:  # a refusal at start: the command's own status
            status = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
        except BaseException:  # noqa: BLE001 - said here, then the supervisor replaces this worker
            log.exception("worker %d failed", index)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(status)  # never back into the command: that is the supervisor's

    def _watch(self, signals: StopSignals, started: Callable[[], None]) -> None:
        forwarded = ready = 0
        while self.pids:
            select.select([signals.pipe, self.ready_read], [], [], REAP_TICK)
            _drain(signals.pipe)
            if ready < self.workers:  # a replacement, later, is not announced
                ready += _drain(self.ready_read)
                if ready >= self.workers and not self.stopping:
                    started()
            else:
                _drain(self.ready_read)
            if signals.received > forwarded:
                forwarded = signals.received
                self._stop(signal.SIGTERM)
            for pid, status in _exited():
                self._exited(self.pids.pop(pid), pid, os.waitstatus_to_exitcode(status))

    def _exited(self, index: int, pid: int, code: int) -> None:
        if self.stopping:
            if code != 0:
                log.warning("worker %d (pid %d) %s", index, pid, _how(code))
                self.status = self.status or 1
            return
        if code in self.fatal:
            self.status = code
            self._stop(signal.SIGTERM)
            return
        now = time.monotonic()
        self.restarts = [moment for moment in self.restarts if now - moment < 60] + [now]
        if len(self.restarts) > RESTARTS_PER_MINUTE:
            log.error("worker %d (pid %d) %s: too many restarts in a minute, stopping", index, pid, _how(code))
            self.status = 1
            self._stop(signal.SIGTERM)
            return
        log.warning("worker %d (pid %d) %s: starting another in its place", index, pid, _how(code))
        self._start(index)

    def _stop(self, number: int) -> None:
        """Pass a stop on to every worker; at the first, stop listening here too, so that new
        connections are refused once every worker has closed its own copy of the sockets."""
        if not self.stopping:
            self.stopping = True
            for sock in self.sockets:
                sock.close()
        for pid in self.pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, number)


def _wait_for_threads(seconds: float = 5.0) -> None:
    """Let the threads of what ran before (a vendor client's event loop, closed but still ending)
    end before the first fork: a lock one of them held at the fork would stay held in the worker."""
    deadline = time.monotonic() + seconds
    for thread in threading.enumerate():
        if thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
    if threading.active_count() > 1:
        log.warning("starting the workers with %d threads still running", threading.active_count() - 1)


def _drain(pipe: int) -> int:
    """Read what a pipe holds; how many bytes."""
    try:
        return len(os.read(pipe, 4096))
    except BlockingIOError:
        return 0


def _exited() -> list[tuple[int, int]]:
    """The workers that have exited since the last look: (pid, wait status)."""
    found = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        found.append((pid, status))
    return found


def _how(code: int) -> str:
    if code < 0:
        return f"was killed ({signal.Signals(-code).name})"
    return f"exited with status {code}"


def _die_with(supervisor: int) -> None:
    """In a worker: be killed with the supervisor (kill -9, a crash), as one process would be.
    Workers left serving alone would hold the port, and the restart (systemd's) would find it busy
    and refuse with exit status 2, which is never restarted."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        named = libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL) == 0
    except (OSError, AttributeError):  # not Linux: look for the supervisor every second instead
        named = False
    if not named:
        threading.Thread(target=_follow, args=(supervisor,), name="supervisor-watch", daemon=True).start()
    elif os.getppid() != supervisor:  # it died before the request was made
        os.kill(os.getpid(), signal.SIGKILL)


def _follow(supervisor: int) -> None:
    while os.getppid() == supervisor:
        time.sleep(ORPHAN_TICK)
    os.kill(os.getpid(), signal.SIGKILL)
