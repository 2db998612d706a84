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
"""

from __future__ import annotations

import errno
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from socket import AF_INET, AF_INET6
from types import FrameType
from typing import Any
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
