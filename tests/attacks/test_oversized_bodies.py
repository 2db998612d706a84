"""Threat: request bodies reach the disk, and anyone can fill it through the webhooks.

`tipline serve` ran waitress with its defaults: bodies up to 1 GB accepted, and any body over
512 kB spooled to a temporary file before the app saw it. A sandbox photo's original bytes (EXIF
and GPS included) then sat in TMPDIR, and anyone could post gigabytes to a webhook, unsigned.
What must hold, against the real `tipline serve` process with TMPDIR pointed at an empty directory:
a webhook refuses a body larger than its provider sends (413, or the connection is dropped), a
sandbox photo of 1.5 MB is taken, a body over the photo limit is refused, and at no moment does the
server hold a file in TMPDIR (checked through /proc while each body is half sent, and afterwards).
"""

from __future__ import annotations

import html
import io
import os
import random
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
import requests
from PIL import Image
from sqlalchemy import select

from tests.support import fake_telegram, samples
from tests.support.harness import reference_of
from tests.support.processes import free_port, run, spawn, wait_until_serving, workdir
from tipline.config import load_settings
from tipline.core.vocabulary import AttachmentStatus
from tipline.runtime import build_runtime
from tipline.storage.models import Attachment
from tipline.web import limits

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs Linux's /proc to see open files")

PHOTO_LIMIT = 3_000_000  # TIPLINE_MEDIA_MAX_BYTES of the served tip line
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
ENROL_SECRET = re.compile(r'data-totp-secret="([A-Z2-7]+)"')


@dataclass
class Served:
    base: str
    port: int
    pid: int
    tmp: Path
    env: dict[str, str]  # the settings it was started with

    def open_in_tmp(self) -> list[str]:
        """The files the server process holds open under TMPDIR (a spooled body has no name there,
        but its descriptor still points into the directory)."""
        found = []
        for fd in Path(f"/proc/{self.pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue  # closed meanwhile
            if target.startswith(str(self.tmp)):
                found.append(target)
        return found

    def post_in_halves(
        self, path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int | None, list[str]]:
        """POST `body`, pausing halfway to look at the server's open files. Returns the status (None
        if the server dropped the connection) and every file it held under TMPDIR meanwhile."""
        head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head += "Connection: close\r\n\r\n"
        seen: list[str] = []
        answer = b""
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            try:
                sock.sendall(head.encode() + body[: len(body) // 2])
                for _ in range(10):  # the server reads what arrived
                    time.sleep(0.05)
                    seen += self.open_in_tmp()
                sock.sendall(body[len(body) // 2 :])
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused before the end of the body
            seen += self.open_in_tmp()
            try:
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                pass
        status = int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/") else None
        return status, seen


@pytest.fixture
def served(env: dict[str, str], tmp_path: Path) -> Iterator[Served]:
    """`tipline serve` with SMS, Telegram and the sandbox on, and TMPDIR an empty directory of its own."""
    tmp = tmp_path / "server-tmp"
    tmp.mkdir()
    telegram, telegram_server = fake_telegram.start(fake_telegram.TOKEN)
    port = free_port()
    settings = {
        **env,
        "TIPLINE_PUBLIC_URL": f"http://127.0.0.1:{port}",
        "TIPLINE_MEDIA_MAX_BYTES": str(PHOTO_LIMIT),
        "TELEGRAM_BOT_TOKEN": fake_telegram.TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": fake_telegram.SECRET,
        "TELEGRAM_API_BASE_URL": telegram.url,
        "TMPDIR": str(tmp),
    }
    assert run(settings, "init").returncode == 0
    with (workdir(settings) / "serve.log").open("w") as out:
        process = spawn(settings, "serve", "--port", str(port), output=out)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(base)
        yield Served(base, port, process.pid, tmp, settings)
        assert list(tmp.iterdir()) == [], "the server left a file in TMPDIR"
    finally:
        process.terminate()
        process.wait(timeout=10)
        telegram_server.shutdown()
        telegram_server.server_close()


TWO_MB = b"Body=" + b"x" * 2_000_000


@pytest.mark.parametrize(
    "path,headers",
    [
        ("/webhooks/twilio/sms", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/webhooks/twilio/status", {"Content-Type": "application/x-www-form-urlencoded"}),
        (
            "/webhooks/telegram",
            {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": fake_telegram.SECRET},
        ),
        ("/console/login", {"Content-Type": "application/x-www-form-urlencoded"}),
        ("/sandbox/messages", {"Content-Type": "application/json"}),
    ],
)
def test_a_2_mb_body_is_refused_and_never_reaches_the_disk(served: Served, path: str, headers: dict[str, str]) -> None:
    if path.startswith("/sandbox"):
        headers = {**headers, **sandbox_identity(served)}
    status, spooled = served.post_in_halves(path, TWO_MB, headers)
    assert status in (413, None)
    assert spooled == []


@pytest.mark.parametrize(
    "path,size,headers",
    [
        ("/webhooks/twilio/sms", limits.TWILIO_BODY + 1, {"Content-Type": "application/x-www-form-urlencoded"}),
        (
            "/webhooks/telegram",
            limits.TELEGRAM_BODY + 1,
            {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": fake_telegram.SECRET},
        ),
    ],
)
def test_a_webhook_takes_no_more_than_its_provider_sends(
    served: Served, path: str, size: int, headers: dict[str, str]
) -> None:
    status, spooled = served.post_in_halves(path, b"x" * size, headers)
    assert status == 413
    assert spooled == []


def noise_png(size: int) -> bytes:
    """A PNG of random pixels of about `size` bytes (noise does not compress)."""
    side = int((size / 3) ** 0.5)
    pixels = random.Random(11).randbytes(side * side * 3)
    out = io.BytesIO()
    Image.frombytes("RGB", (side, side), pixels).save(out, "PNG", compress_level=0)
    return out.getvalue()


def sandbox_identity(served: Served) -> dict[str, str]:
    page = requests.get(served.base + "/sandbox", timeout=5)
    return {"Cookie": "; ".join(f"{k}={v}" for k, v in page.cookies.items())}


def test_a_sandbox_photo_of_1_5_mb_is_taken_in_memory(served: Served) -> None:
    photo = noise_png(1_500_000)
    assert 1_400_000 < len(photo) < PHOTO_LIMIT
    status, spooled = served.post_in_halves(
        "/sandbox/photos", photo, {"Content-Type": "image/png", **sandbox_identity(served)}
    )
    assert status == 200
    assert spooled == []


def test_a_body_over_the_photo_limit_is_refused(served: Served) -> None:
    identity = {"Content-Type": "image/jpeg", **sandbox_identity(served)}
    # Just over the limit: read (in memory), and refused by the tip line itself, kindly.
    just_over = samples.camera_jpeg(1).data + b"\x00" * PHOTO_LIMIT
    status, spooled = served.post_in_halves("/sandbox/photos", just_over, identity)
    assert status == 200
    assert spooled == []
    # Far over: refused by the server before the app sees it.
    status, spooled = served.post_in_halves("/sandbox/photos", b"\x00" * (2 * PHOTO_LIMIT), identity)
    assert status in (413, None)
    assert spooled == []


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found is not None, "no CSRF token on the page"
    return html.unescape(found.group(1))


def signed_in_detective(served: Served) -> requests.Session:
    """A detective's browser, signed in to the served console (enrolling an authenticator)."""
    password = "correct horse battery staple"
    added = run(served.env, "users", "add", "dana", "--role", "detective", "--password-stdin", stdin=password + "\n")
    assert added.returncode == 0, added.stderr
    browser = requests.Session()
    login = browser.get(served.base + "/console/login", timeout=5)
    form = {"csrf_token": csrf_of(login.text), "username": "dana", "password": password, "ack": "1", "code": ""}
    answer = browser.post(served.base + "/console/login", data=form, timeout=30)
    if answer.url.endswith("/console/enrol"):
        secret = ENROL_SECRET.search(answer.text)
        assert secret is not None, answer.text
        code = pyotp.TOTP(secret.group(1)).now()
        answer = browser.post(
            served.base + "/console/enrol", data={"csrf_token": csrf_of(answer.text), "code": code}, timeout=30
        )
    assert answer.url.endswith("/console/"), answer.url
    return browser


def get_slowly(served: Served, path: str, cookies: dict[str, str]) -> tuple[bytes, list[str]]:
    """GET `path` without reading the answer for a while: whatever the server cannot send yet waits
    in its output buffer. Returns the body and every file the server held under TMPDIR meanwhile."""
    cookie = "; ".join(f"{k}={v}" for k, v in cookies.items())
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{served.port}\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n"
    seen: list[str] = []
    answer = b""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # the answer piles up at the server
        sock.settimeout(30)
        sock.connect(("127.0.0.1", served.port))
        sock.sendall(request.encode())
        for _ in range(20):
            time.sleep(0.05)
            seen += served.open_in_tmp()
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body, seen


def test_a_photo_on_its_way_to_a_detective_never_reaches_the_disk(served: Served) -> None:
    # A tipster sends a 1.5 MB photo and a tip from the sandbox; the server's dispatcher cleans it.
    tipster = requests.Session()
    tipster.get(served.base + "/sandbox", timeout=5)
    photo = noise_png(1_500_000)
    assert tipster.post(served.base + "/sandbox/photos", data=photo, headers={"Content-Type": "image/png"}).ok
    for words in ("CANARY-OUTBUF the noise on this picture is evidence", "skip", "skip"):
        replies = tipster.post(served.base + "/sandbox/messages", json={"text": words}, timeout=10).json()["replies"]
    reference = reference_of(replies[0])
    runtime = build_runtime(load_settings(served.env))
    try:
        for _ in range(150):
            with runtime.factory() as session:
                stored = session.scalars(select(Attachment)).all()
            if stored and stored[0].status == AttachmentStatus.STORED:
                break
            time.sleep(0.1)
    finally:
        runtime.close()
    assert [a.status for a in stored] == [AttachmentStatus.STORED]
    assert (stored[0].size or 0) > 1_100_000  # larger than waitress's default output buffer in memory
    # A detective opens it, on a connection that reads slowly.
    detective = signed_in_detective(served)
    body, spooled = get_slowly(served, f"/console/tips/{reference}/photos/{stored[0].id}", detective.cookies.get_dict())
    assert len(body) == stored[0].size
    assert spooled == []
