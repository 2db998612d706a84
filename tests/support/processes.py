"""Run the `tipline` command as an operator would: a child process with only the settings we give it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import requests

TIPLINE = [sys.executable, "-m", "tipline.cli"]


def environment(env: dict[str, str]) -> dict[str, str]:
    """This process's environment without any tip line setting of its own (a developer's shell has
    some), plus `env`."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("TIPLINE_", "TWILIO_", "TELEGRAM_"))}
    return {**inherited, **env}


def workdir(env: dict[str, str]) -> Path:
    """The directory that holds the data directory: the command runs there and reads its `.env`."""
    return Path(env["TIPLINE_DATA_DIR"]).parent


def run(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`tipline ARGS...` to completion; its output is captured as text."""
    return subprocess.run(
        [*TIPLINE, *args],
        env=environment(env),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=workdir(env),
    )


def spawn(env: dict[str, str], *args: str, output: IO[str] | int = subprocess.DEVNULL) -> subprocess.Popen[bytes]:
    """`tipline ARGS...` in the background, stdout and stderr both to `output`."""
    return subprocess.Popen(
        [*TIPLINE, *args], env=environment(env), stdout=output, stderr=subprocess.STDOUT, cwd=workdir(env)
    )


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants now (`tipline serve`'s worker processes and their children)."""
    try:
        children = (Path("/proc") / str(pid) / "task" / str(pid) / "children").read_text().split()
    except OSError:
        children = []
    return [pid, *(found for child in children for found in process_tree(int(child)))]


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_serving(
    base: str,
    seconds: float = 60,
    log: Path | None = None,
    *,
    healthy: bool = True,
    process: subprocess.Popen[bytes] | None = None,
) -> None:
    """Wait until the `tipline serve` at `base` answers /healthz: with 200 (it is listening and its
    dispatcher has passed), or with anything when `healthy` is False. AssertionError, with the
    server's log if given, when it does not in time (`process` is then stopped: it never served) or
    `process` exits first."""
    said = (lambda: f":\n{log.read_text()}") if log else (lambda: "")
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"tipline serve exited with {process.returncode}{said()}")
        try:
            if requests.get(base + "/healthz", timeout=5).status_code == 200 or not healthy:
                return
        except (requests.ConnectionError, requests.Timeout):  # not listening yet, or slow on a loaded machine
            pass
        time.sleep(0.1)
    if process is not None:
        process.terminate()
    raise AssertionError(f"tipline serve at {base} was not serving after {seconds:g} s{said()}")
