"""Threat: behind a reverse proxy every request comes from the proxy's address, so the sign-in
throttle (20 attempts a minute per client address, tipline/services/auth.py) counted one client for
all: one person's wrong passwords locked every detective out. And a header that says who the client
is can be forged by anyone who reaches the server directly.

What must hold, through a real `tipline serve` and real TCP connections from distinct loopback
addresses (127.0.0.1, .2 and .3 are all this machine; a connection from one is seen as coming from it):
- from an address listed in TIPLINE_TRUSTED_PROXY, X-Forwarded-For names the client, and each
  client has its own budget: client A throttled (429) does not stop client B signing in;
- from any other peer, or with no trusted proxy at all, X-Forwarded-For is ignored: a client who
  rotates it on every attempt is throttled all the same after its 20 attempts.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from tests.support.processes import free_port, run, spawn, wait_until_serving, workdir

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
BUDGET = 20  # auth.Policy.per_address
CLIENT_A, CLIENT_B = "203.0.113.5", "198.51.100.7"  # documentation addresses (RFC 5737)


class FromAddress(HTTPAdapter):
    """Connections that leave from a given local address (so the server sees that peer)."""

    def __init__(self, address: str):
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def browser(peer: str) -> requests.Session:
    session = requests.Session()
    session.mount("http://", FromAddress(peer))
    return session


def sign_in(base: str, username: str, password: str, *, peer: str = "127.0.0.1", forwarded: str | None = None) -> int:
    """One sign-in through the form, from `peer`, with `forwarded` as X-Forwarded-For; the status."""
    headers = {"X-Forwarded-For": forwarded} if forwarded else {}
    with browser(peer) as session:
        page = session.get(base + "/console/login", headers=headers, timeout=10)
        match = CSRF.search(page.text)
        assert match, page.text
        form = {"csrf_token": html.unescape(match.group(1)), "username": username, "password": password}
        form |= {"code": "", "ack": "1"}
        answer = session.post(base + "/console/login", data=form, headers=headers, allow_redirects=False, timeout=30)
        return answer.status_code


def wrong_passwords_until_throttled(base: str, *, peer: str = "127.0.0.1", forwarded: Any = None) -> list[int]:
    """Failed sign-ins (a new unknown name each time, so no account locks) until one is refused
    as too many; `forwarded(n)` gives the X-Forwarded-For of attempt n, if any."""
    statuses = []
    for n in range(BUDGET + 3):
        sent = forwarded(n) if callable(forwarded) else forwarded
        statuses.append(sign_in(base, f"nobody{n}", "not the password!", peer=peer, forwarded=sent))
        if statuses[-1] == 429:
            break
    return statuses


@contextmanager
def served(env: dict[str, str], trusted: str | None) -> Iterator[tuple[str, str]]:
    """`tipline serve` with TIPLINE_TRUSTED_PROXY=`trusted` (unset if None); (base URL, admin's password)."""
    init = run(env, "init")
    assert init.returncode == 0, init.stderr
    password = re.search(r"one-time password: (\S+)", init.stdout)
    assert password is not None, init.stdout
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env, "TIPLINE_PUBLIC_URL": base, "TIPLINE_SANDBOX": "0"}
    if trusted is not None:
        env["TIPLINE_TRUSTED_PROXY"] = trusted
    with (workdir(env) / "serve.log").open("w") as out:
        process = spawn(env, "serve", "--host", "127.0.0.1", "--port", str(port), output=out)
    try:
        wait_until_serving(base, log=workdir(env) / "serve.log")
        yield base, password.group(1)
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_one_client_behind_the_proxy_cannot_lock_out_the_others(cli_env: dict[str, str]) -> None:
    with served(cli_env, trusted="127.0.0.1") as (base, admin_password):
        # Given client A, behind the proxy, failing sign-in after sign-in
        statuses = wrong_passwords_until_throttled(base, forwarded=CLIENT_A)
        assert statuses[:BUDGET] == [401] * BUDGET and statuses[-1] == 429, statuses
        # Then A stays throttled, but client B, behind the same proxy, signs in
        assert sign_in(base, "nobody", "not the password!", forwarded=CLIENT_A) == 429
        assert sign_in(base, "admin", admin_password, forwarded=CLIENT_B) == 302


def test_a_forged_forwarded_for_changes_nothing_without_a_trusted_proxy(cli_env: dict[str, str]) -> None:
    with served(cli_env, trusted=None) as (base, _):
        # A client who names a new "client" in every request is still the one peer it is
        statuses = wrong_passwords_until_throttled(base, forwarded=lambda n: f"192.0.2.{n + 1}")
        assert statuses[:BUDGET] == [401] * BUDGET and statuses[-1] == 429, statuses
        assert sign_in(base, "nobody", "x", forwarded="198.51.100.99") == 429


def test_only_the_listed_proxies_are_believed(cli_env: dict[str, str]) -> None:
    # Two proxies are trusted (more than waitress's own setting can hold), 127.0.0.2 is not one.
    with served(cli_env, trusted="127.0.0.3, 127.0.0.1") as (base, admin_password):
        # A peer not listed cannot escape the throttle by forging the header
        statuses = wrong_passwords_until_throttled(base, peer="127.0.0.2", forwarded=lambda n: f"192.0.2.{n + 1}")
        assert statuses[:BUDGET] == [401] * BUDGET and statuses[-1] == 429, statuses
        # Through the second proxy, client A is throttled as its own client ...
        statuses = wrong_passwords_until_throttled(base, peer="127.0.0.3", forwarded=CLIENT_A)
        assert statuses[:BUDGET] == [401] * BUDGET and statuses[-1] == 429, statuses
        # ... and client B signs in through the first
        assert sign_in(base, "admin", admin_password, peer="127.0.0.1", forwarded=CLIENT_B) == 302
