"""`tipline serve` starts as an operator expects: the port first, then everything else; one clear line
when it cannot; a warning for settings that work but should not (tipline/web/server.py)."""

from __future__ import annotations

import signal
import socket
import subprocess

import pytest

from tests.support.processes import free_port, run, spawn

TELEGRAM_TOKEN = "123456:" + "A" * 35


def serve_output(env: dict[str, str], *args: str) -> str:
    """Start `tipline serve`, wait for its "serving" line, stop it; everything it wrote."""
    process = spawn(env, "serve", "--port", str(free_port()), *args, output=subprocess.PIPE)
    assert process.stdout is not None
    lines = []
    try:
        for raw in process.stdout:
            lines.append(raw.decode())
            if "tipline serving on" in lines[-1]:
                break
        process.send_signal(signal.SIGTERM)
        rest, _ = process.communicate(timeout=30)
        lines.append(rest.decode())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    assert process.returncode == 0, "".join(lines)
    return "".join(lines)


@pytest.fixture
def initialised(cli_env: dict[str, str]) -> dict[str, str]:
    """An initialised tip line, sandbox off (it is served on loopback addresses only)."""
    env = {**cli_env, "TIPLINE_SANDBOX": "0"}
    assert run(env, "init").returncode == 0
    return env


def test_a_busy_port_is_one_line_and_nothing_starts(initialised: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run(initialised, "serve", "--port", str(port))
    assert result.returncode == 2
    assert result.stderr == f"tipline: port {port} on 127.0.0.1 is in use (another tipline serve?)\n"
    assert "serving" not in result.stdout


def test_an_address_that_is_not_this_machines_is_one_line(initialised: dict[str, str]) -> None:
    result = run(initialised, "serve", "--host", "192.0.2.1", "--port", str(free_port()))
    assert result.returncode == 2
    assert result.stderr == "tipline: cannot listen on 192.0.2.1: not an address of this machine\n"


@pytest.mark.parametrize(
    "settings,warned",
    [
        ({"TIPLINE_PUBLIC_URL": "http://tips.example.org"}, "plain http with Twilio configured"),
        ({"TIPLINE_PUBLIC_URL": "https://tips.example.org"}, None),
        ({"TIPLINE_PUBLIC_URL": "http://127.0.0.1:8000"}, None),  # this machine only: nothing crosses a network
        ({"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN}, "without TELEGRAM_WEBHOOK_SECRET"),
        ({"TELEGRAM_BOT_TOKEN": TELEGRAM_TOKEN, "TELEGRAM_WEBHOOK_SECRET": "s3cret-token"}, None),
    ],
)
def test_settings_that_work_but_should_not_are_warned_about(
    initialised: dict[str, str], settings: dict[str, str], warned: str | None
) -> None:
    env = {**initialised, **settings}
    if "TELEGRAM_BOT_TOKEN" in settings:
        env["TELEGRAM_API_BASE_URL"] = f"http://127.0.0.1:{free_port()}"  # never called at start
    else:
        env |= {
            "TWILIO_ACCOUNT_SID": "AC" + "5a" * 16,
            "TWILIO_AUTH_TOKEN": "tok_" + "3c" * 14,
            "TWILIO_FROM_NUMBER": "+15555550100",
            "TWILIO_API_BASE_URL": f"http://127.0.0.1:{free_port()}",
            "TIPLINE_TWILIO_RECONCILE_SECONDS": "0",
        }
    output = serve_output(env)
    warnings = [line for line in output.splitlines() if line.startswith("WARNING")]
    if warned is None:
        assert warnings == []
    else:
        [line] = warnings
        assert warned in line


@pytest.mark.parametrize("value", ["*", "10.0.0.0/8", "proxy.example.org", "127.0.0.1,,nonsense"])
def test_a_malformed_trusted_proxy_is_one_line(cli_env: dict[str, str], value: str) -> None:
    result = run({**cli_env, "TIPLINE_TRUSTED_PROXY": value}, "serve")
    assert result.returncode == 2
    assert result.stderr.startswith("tipline: TIPLINE_TRUSTED_PROXY must be IP addresses")
    assert result.stderr.count("\n") == 1


def test_serve_stops_on_sigterm_and_says_so(initialised: dict[str, str]) -> None:
    output = serve_output(initialised)
    assert "stopping: no new connections" in output
    assert "stopped: every request answered" in output
