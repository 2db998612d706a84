"""Caddy in front of the tip line, as deploy/Caddyfile puts it, but on this machine and for tests.

What a test changes in deploy/Caddyfile, and nothing else: the site's name becomes localhost on a
free port, its certificate comes from Caddy's internal CA (`tls internal`) instead of Let's Encrypt,
and global options keep Caddy off the machine's trust store (`skip_install_trust`) and off the
ports a real installation uses (admin endpoint, http redirect port).
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support.processes import free_port

DEPLOYED = Path(__file__).resolve().parents[2] / "deploy" / "Caddyfile"
EXAMPLE_SITE = "tips.police.example"


def available() -> str | None:
    """Why Caddy cannot be used here, or None when it can."""
    return None if shutil.which("caddy") else "caddy is not installed (apt-get install caddy; .ci/run installs it)"


def for_tests(deployed: str, site: str, global_options: str = "") -> str:
    """deploy/Caddyfile with the site `site` on Caddy's internal CA, and `global_options` added to its
    global options block (Caddy takes one, first: deploy/Caddyfile's keeps a logger out)."""
    opening = EXAMPLE_SITE + " {"
    assert deployed.count(opening) == 1, f"deploy/Caddyfile must hold one site block `{opening}`"
    assert deployed.count("\n{\n") == 1, "deploy/Caddyfile must hold one global options block"
    configured = deployed.replace(opening, f"{site} {{\n\ttls internal", 1)
    return configured.replace("\n{\n", "\n{\n" + global_options, 1)


def root_certificate(data_home: Path) -> Path:
    """Where Caddy keeps the root certificate of its internal CA (under XDG_DATA_HOME or HOME)."""
    return data_home / "caddy" / "pki" / "authorities" / "local" / "root.crt"


def wait_for_tls(port: int, certificate: Path, seconds: float = 30) -> None:
    """Until Caddy completes a TLS handshake on `port` with a certificate its root verifies.

    An open port and a written root certificate are not enough: Caddy accepts connections before
    it has issued the site's own certificate, and answers those handshakes with an internal-error
    alert (CI saw one, on the test's first request)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if certificate.exists():
                context = ssl.create_default_context(cafile=str(certificate))
                with (
                    socket.create_connection(("127.0.0.1", port), timeout=1) as connection,
                    context.wrap_socket(connection, server_hostname="localhost"),
                ):
                    return
        except (OSError, ssl.SSLError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"Caddy did not serve https on port {port} within {seconds} s")


@dataclass(frozen=True)
class Proxy:
    """A running Caddy: its https base URL and the root certificate that verifies it."""

    base: str
    certificate: Path
    log: Path


@contextmanager
def running(upstream_port: int, https_port: int, home: Path) -> Iterator[Proxy]:
    """`caddy run` as this user with deploy/Caddyfile for localhost:`https_port`, proxying to
    127.0.0.1:`upstream_port`; its home, data and configuration directories all under `home`."""
    deployed = DEPLOYED.read_text().replace("127.0.0.1:8000", f"127.0.0.1:{upstream_port}")
    options = f"\tadmin localhost:{free_port()}\n\thttp_port {free_port()}\n\tskip_install_trust\n"
    config = home / "Caddyfile"
    home.mkdir(parents=True, exist_ok=True)
    config.write_text(for_tests(deployed, f"localhost:{https_port}", options))
    env = {
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "PATH": "/usr/bin:/bin",
    }
    log = home / "caddy.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            ["caddy", "run", "--adapter", "caddyfile", "--config", str(config)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=home,
        )
    certificate = root_certificate(home / "data")
    try:
        wait_for_tls(https_port, certificate)
        yield Proxy(f"https://localhost:{https_port}", certificate, log)
    finally:
        process.terminate()
        process.wait(timeout=10)
