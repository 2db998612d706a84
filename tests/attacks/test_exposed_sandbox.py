"""Threat: the sandbox is left on where the internet can reach it.

With `TIPLINE_SANDBOX=1` and a public address such as https://tips.example.org, `tipline serve`
started silently, and anyone could post tips (urgent ones too) into the detectives' queue. What
must hold: `serve` refuses to start, with one line naming the setting and exit status 2, unless
the public address (and the address it listens on) is loopback, or the loudly named override
`TIPLINE_SANDBOX_PUBLIC=i-understand` is set, which is warned about at start. Sandbox tips are
labelled "Sandbox" in the console, and the sandbox's cookie is `Secure` under https.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.console import person
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import PUBLIC_URL, Harness, make_harness
from tests.support.processes import free_port, run, spawn, wait_until_serving

SANDBOX_BADGE = '<span class="badge sandbox">Sandbox</span>'


def serve(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`tipline serve`, expected to refuse at once; a server that starts instead fails the test."""
    try:
        return run(env, "serve", "--port", str(free_port()), *args, timeout=30)
    except subprocess.TimeoutExpired:
        pytest.fail("tipline serve started instead of refusing")


@pytest.mark.parametrize(
    ("public_url", "host"),
    [(PUBLIC_URL, "127.0.0.1"), ("http://203.0.113.7:8000", "127.0.0.1"), ("http://127.0.0.1:8000", "0.0.0.0")],
    ids=["https-public-address", "public-ip", "listening-on-every-interface"],
)
def test_serve_refuses_an_exposed_sandbox(cli_env: dict[str, str], public_url: str, host: str) -> None:
    env = {**cli_env, "TIPLINE_SANDBOX": "1", "TIPLINE_PUBLIC_URL": public_url}
    refused = serve(env, "--host", host)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1, refused.stderr
    assert lines[0].startswith("tipline: TIPLINE_SANDBOX=1")
    assert "TIPLINE_SANDBOX_PUBLIC=i-understand" in lines[0]
    assert refused.stdout == ""


def test_the_override_must_be_spelled_out(cli_env: dict[str, str]) -> None:
    refused = serve({**cli_env, "TIPLINE_SANDBOX": "1", "TIPLINE_SANDBOX_PUBLIC": "1"})
    assert refused.returncode == 2
    assert refused.stderr.strip() == "tipline: TIPLINE_SANDBOX_PUBLIC must be empty or i-understand (got '1')"


@pytest.fixture
def started(cli_env: dict[str, str], tmp_path: Path) -> Iterator[tuple[dict[str, str], Path]]:
    assert run(cli_env, "init").returncode == 0
    yield cli_env, tmp_path / "serve.log"


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    with log.open("w") as out:
        process = spawn(env, "serve", "--port", str(port), "--no-dispatcher", output=out)
    base = f"http://127.0.0.1:{port}"
    wait_until_serving(base, log=log, healthy=False, process=process)
    return process, base


@pytest.mark.parametrize("public_url", ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"])
def test_serve_starts_the_sandbox_on_a_loopback_address(started: tuple[dict[str, str], Path], public_url: str) -> None:
    env, log = started
    process, base = start({**env, "TIPLINE_SANDBOX": "1", "TIPLINE_PUBLIC_URL": public_url}, log)
    try:
        assert requests.get(base + "/sandbox", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert "TIPLINE_SANDBOX_PUBLIC" not in log.read_text()


def test_the_override_serves_it_and_says_so_loudly(started: tuple[dict[str, str], Path]) -> None:
    env, log = started
    exposed = {
        **env,
        "TIPLINE_SANDBOX": "1",
        "TIPLINE_PUBLIC_URL": PUBLIC_URL,
        "TIPLINE_SANDBOX_PUBLIC": "i-understand",
    }
    process, base = start(exposed, log)
    try:
        assert requests.get(base + "/sandbox", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)
    warning = [line for line in log.read_text().splitlines() if line.startswith("WARNING")]
    assert len(warning) == 1
    assert "TIPLINE_SANDBOX_PUBLIC=i-understand" in warning[0]
    assert f"{PUBLIC_URL}/sandbox" in warning[0]
    assert "anyone" in warning[0]


def test_sandbox_tips_are_labelled_in_the_console(tipline: Harness) -> None:
    tipster = tipline.app.test_client()
    tipster.get("/sandbox")
    for text in ("CANARY-SANDBOX someone is selling fake tickets", "skip", "skip"):
        assert tipster.post("/sandbox/messages", json={"text": text}).status_code == 200
    from_phone = tipline.submit_tip("CANARY-SMS a real tip by text")
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    dana.sign_in()
    listed = dana.get("/console/").get_data(as_text=True)
    rows = {row.split('data-reference="', 1)[1][:8]: row for row in listed.split("<tr")[1:] if "data-reference" in row}
    (sandbox_reference,) = [ref for ref in rows if ref != from_phone]
    assert SANDBOX_BADGE in rows[sandbox_reference]
    assert SANDBOX_BADGE not in rows[from_phone]
    assert SANDBOX_BADGE in dana.get(f"/console/tips/{sandbox_reference}").get_data(as_text=True)
    assert SANDBOX_BADGE not in dana.get(f"/console/tips/{from_phone}").get_data(as_text=True)


def test_the_sandbox_cookie_is_secure_under_https(tipline: Harness) -> None:
    assert tipline.public_url.startswith("https://")
    cookie = tipline.app.test_client().get("/sandbox").headers["Set-Cookie"]
    assert cookie.startswith("tipline_sandbox=")
    assert "; Secure" in cookie
    assert "; HttpOnly" in cookie
    assert "SameSite=Strict" in cookie


def test_the_sandbox_cookie_is_not_secure_on_plain_http_loopback(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path
) -> None:
    harness = make_harness({**env, "TIPLINE_PUBLIC_URL": "http://127.0.0.1:8000"}, twilio_server, log_file)
    try:
        cookie = harness.app.test_client().get("/sandbox").headers["Set-Cookie"]
    finally:
        harness.runtime.close()
    assert "Secure" not in cookie  # a browser would drop a Secure cookie on http://127.0.0.1
