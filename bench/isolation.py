"""Isolation: webhook latency at a steady tip rate, alone and while other work runs beside it.

`tipline serve` runs as its own process (SQLite by default, PostgreSQL with --database-url) and
gets signed inbound-SMS webhooks from realistic conversations of many senders at a steady rate,
open-loop: each webhook is sent at its scheduled time, and its latency counts from that time, so a
stall shows in full even though the sender was waiting for earlier answers. Five phases:
  1. alone (the baseline of this run);
  2. while clients flood the console's sign-in page with wrong passwords, each attempt from an
     address of its own (a botnet behind the trusted reverse proxy, so no budget stops it);
  3. while `tipline keys rotate --purpose tips` re-wraps the data keys of --keys tips, again as
     soon as it ends;
  4. while detectives' consoles poll the tip list (what console.js polls, every 2.5 s by default
     where it waits 5 s, reloading the list whenever it changed, as the page does: at this tip rate
     it changes between any two polls);
  5. while a burst of 12-megapixel photos (JPEG with EXIF, GPS, XMP, IPTC) arrives by MMS and is
     cleaned by the media worker, fetched from a local stand-in for Twilio.
Each prints p50, p99, max and errors with the target: p99 under 100 ms and every webhook answered 200.

    python bench/isolation.py [--seconds 30] [--rate 20] [--database-url postgresql+psycopg://...]
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.intake import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    CONVERSATION,
    PATH,
    PUBLIC_URL,
    conversations,
    free_port,
    percentile,
    wait_ready,
)

TARGET_P99_MS = 100.0
PASSWORD = "correct horse battery staple"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
Work = list[tuple[float, bytes, str]]  # (seconds after the phase's start, signed body, signature)


# The tip rate ------------------------------------------------------------------------------------


def schedule(rate: float, seconds: float) -> Work:
    """Webhooks at `rate` a second for `seconds`, from as many conversations as that takes, each
    sender's messages in order and a few seconds apart (many senders at once, as in a burst of tips)."""
    count = int(rate * seconds)
    talks = conversations(max(1, -(-count // len(CONVERSATION))))
    active = max(1, min(len(talks), int(rate * 2.5)))  # about 2.5 s between a sender's messages
    ordered: list[tuple[bytes, str]] = []
    for start in range(0, len(talks), active):
        group = talks[start : start + active]
        for step in range(len(CONVERSATION)):
            ordered.extend(talk[step] for talk in group)
    return [(n / rate, body, signature) for n, (body, signature) in enumerate(ordered[:count])]


def play(port: int, work: Work, senders: int = 32) -> tuple[list[float], int]:
    """Send each webhook at its time (open-loop) over keep-alive connections; (latencies, errors).

    A latency counts from the scheduled time, not from when a connection was free to send it."""
    todo: queue.Queue[tuple[float, bytes, str]] = queue.Queue()
    for item in sorted(work, key=lambda item: item[0]):
        todo.put(item)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    start = time.perf_counter() + 0.2

    def sender() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine: list[float] = []
        failed = 0
        while True:
            try:
                offset, body, signature = todo.get_nowait()
            except queue.Empty:
                break
            due = start + offset
            time.sleep(max(0.0, due - time.perf_counter()))
            try:
                connection.request("POST", PATH, body, {**FORM, "X-Twilio-Signature": signature})
                response = connection.getresponse()
                response.read()
                ok = response.status == 200
            except (OSError, http.client.HTTPException):
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
                ok = False
            mine.append(time.perf_counter() - due)
            failed += not ok
        connection.close()
        with lock:
            latencies.extend(mine)
            errors[0] += failed

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, errors[0]


def report(name: str, latencies: list[float], errors: int, note: str = "") -> bool:
    if not latencies:
        print(f"{name:28} no webhook sent", flush=True)
        return False
    p50, p99, worst = percentile(latencies, 50) * 1000, percentile(latencies, 99) * 1000, max(latencies) * 1000
    ok = p99 < TARGET_P99_MS and errors == 0
    print(
        f"{name:28} {len(latencies):5d} webhooks  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {worst:7.1f} ms"
        f"  errors {errors}  {'ok' if ok else 'MISSED'} (target: p99 < {TARGET_P99_MS:.0f} ms, errors 0)"
        + (f"  [{note}]" if note else ""),
        flush=True,
    )
    return ok


# A minimal browser: cookies of its own, over one keep-alive connection -----------------------------


class Browser:
    def __init__(self, port: int, address: str):
        self.port = port
        self.address = address  # the client address the trusted proxy reports (X-Forwarded-For)
        self.cookies: dict[str, str] = {}
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def request(self, method: str, path: str, form: dict[str, str] | None = None) -> tuple[int, str, str]:
        """(status, body, Location) of one request; the cookies it sets are kept."""
        headers = {"X-Forwarded-For": self.address, "Accept": "application/json" if "/api/" in path else "text/html"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = urlencode(form).encode() if form is not None else None
        if body is not None:
            headers.update(FORM)
        try:
            self.connection.request(method, path, body, headers)
            response = self.connection.getresponse()
            text = response.read().decode("utf-8", "replace")
        except (OSError, http.client.HTTPException):
            self.connection.close()
            self.connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            return 0, "", ""
        for header in response.headers.get_all("Set-Cookie") or []:
            name, _, rest = header.partition("=")
            value = rest.split(";", 1)[0]
            if value and "Max-Age=0" not in header and "1970" not in header:
                self.cookies[name.strip()] = value
            else:
                self.cookies.pop(name.strip(), None)
        return response.status, text, response.headers.get("Location", "")

    def csrf(self, path: str) -> str:
        match = re.search(r'name="csrf_token" value="([^"]+)"', self.request("GET", path)[1])
        return match.group(1).replace("&#34;", '"').replace("&amp;", "&") if match else ""

    def sign_in(self, username: str, password: str, code: str = "") -> tuple[int, str]:
        form = {"csrf_token": self.csrf("/console/login"), "username": username, "password": password, "ack": "1"}
        status, _, location = self.request("POST", "/console/login", {**form, "code": code})
        return status, location


def random_address() -> str:
    return f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"


# What runs beside intake (each in a process of its own, so that it does not slow the sender) ------


def flood(port: int, clients: int) -> None:
    """Wrong passwords for unknown and made-up usernames, as fast as `clients` can post them."""
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def client() -> None:
        browser = Browser(port, random_address())
        while True:
            browser.address = random_address()
            browser.cookies.clear()
            status, _ = browser.sign_in(f"user{secrets.token_hex(4)}", secrets.token_urlsafe(12))
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    for _ in range(clients):
        threading.Thread(target=client, daemon=True).start()
    print("ready", flush=True)
    tell(statuses, lock)


def signed_in_detective(port: int, username: str) -> Browser:
    """A detective's browser, signed in for the first time: password, then enrolling TOTP."""
    import pyotp

    browser = Browser(port, random_address())
    status, location = browser.sign_in(username, PASSWORD)
    assert status == 302 and location.endswith("/console/enrol"), (status, location)
    page = browser.request("GET", "/console/enrol")[1]
    secret = re.search(r'data-totp-secret="([A-Z2-7]+)"', page)
    assert secret, "no TOTP secret on the enrolment page"
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert csrf
    code = pyotp.TOTP(secret.group(1)).now()
    status, _, location = browser.request("POST", "/console/enrol", {"csrf_token": csrf.group(1), "code": code})
    assert status == 302 and location.endswith(("/console/", "/console/")), (status, location)
    return browser


def poll(port: int, detectives: int, every: float) -> None:
    """Each detective's tip list as console.js keeps it live: the changes fingerprint and the fresh
    tips for the tab title every `every` seconds, and the whole list again whenever it changed."""
    browsers = [signed_in_detective(port, f"detective{n}") for n in range(detectives)]
    answers: dict[int, int] = {}
    lock = threading.Lock()

    def detective(browser: Browser) -> None:
        browser.request("GET", "/console/")
        seen = ""
        time.sleep(random.uniform(0, every))
        while True:
            started = time.monotonic()
            status, changes, _ = browser.request("GET", "/console/api/changes")
            statuses = [status, browser.request("GET", "/console/api/alerts/fresh?since=0")[0]]
            if status == 200 and changes != seen:
                seen = changes
                statuses.append(browser.request("GET", "/console/")[0])
            with lock:
                for status in statuses:
                    answers[status] = answers.get(status, 0) + 1
            time.sleep(max(0.0, every - (time.monotonic() - started)))

    for browser in browsers:
        threading.Thread(target=detective, args=(browser,), daemon=True).start()
    print("ready", flush=True)
    tell(answers, lock)


def tell(answers: dict[int, int], lock: threading.Lock) -> None:
    """Say every second how many answers of each status the server gave (read when stopped)."""
    while True:
        time.sleep(1)
        with lock:
            print("answers (status: count)", dict(sorted(answers.items())), flush=True)


def beside(args: list[str]) -> subprocess.Popen[str]:
    """Start this script in a mode that runs beside intake; returns once it says it is ready."""
    process = subprocess.Popen([sys.executable, __file__, *args], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "ready":
        process.kill()
        raise SystemExit(f"{args[0]} did not start: {line!r}")
    return process


def stop_beside(process: subprocess.Popen[str]) -> str:
    """Stop it; its last line of counts (what the server answered it)."""
    process.terminate()
    out, _ = process.communicate(timeout=30)
    lines = [line for line in out.splitlines() if line.startswith("answers")]
    return lines[-1] if lines else "no answer yet"


# Setup ---------------------------------------------------------------------------------------------


def prepare(env: dict[str, str], keys: int, detectives: int) -> None:
    """Schema and keys, `keys` tips' worth of wrapped data keys (the fast path of bench/rotation.py),
    and the detectives' accounts."""
    from bench.rotation import fill
    from tipline.config import load_settings
    from tipline.runtime import build_runtime
    from tipline.services.accounts import add_user

    subprocess.run([sys.executable, "-m", "tipline.cli", "init"], env=env, check=True, capture_output=True)
    runtime = build_runtime(load_settings(env), channels={})
    try:
        fill(runtime, keys)
        for n in range(detectives):
            add_user(runtime.ctx, f"detective{n}", ("detective",), PASSWORD)
    finally:
        runtime.close()


def photo_burst(fake: Any, count: int, megapixels: float) -> Work:
    """`count` MMS webhooks, each with one phone photo (12 MP, EXIF with GPS, XMP, IPTC), in 1 s."""
    from twilio.request_validator import RequestValidator

    from bench.media import encode, photo

    data = encode(photo(megapixels), "JPEG")
    validator = RequestValidator(AUTH_TOKEN)
    work: Work = []
    for n in range(count):
        sender = f"+1555{secrets.randbelow(10**7):07d}"
        _, form = fake.receive(sender, "+15555550100", "Photo of the van", media=[(data, "image/jpeg")])
        work.append((n / count, urlencode(form).encode(), validator.compute_signature(PUBLIC_URL + PATH, form)))
    print(f"  photo: {len(data) / 1e6:.1f} MB JPEG, {megapixels:.0f} MP", flush=True)
    return work


def run_phase(
    name: str,
    port: int,
    args: argparse.Namespace,
    extra: Work | None = None,
    during: Callable[[], str] | None = None,
) -> bool:
    work = sorted([*schedule(args.rate, args.seconds), *(extra or [])], key=lambda item: item[0])
    latencies, errors = play(port, work)
    return report(name, latencies, errors, during() if during else "")


@dataclass(frozen=True)
class Beside:
    """What a phase may use besides the server's port: its environment, directory and the fake Twilio."""

    env: dict[str, str]
    tmp: str
    fake: Any


def helpers(args: argparse.Namespace) -> list[str]:
    return ["--flooders", str(args.flooders), "--detectives", str(args.detectives)]


def flood_phase(port: int, args: argparse.Namespace, _: Beside) -> bool:
    flooders = beside(["--flood", str(port), *helpers(args)])
    try:
        return run_phase(f"2. sign-in flood ({args.flooders})", port, args, during=lambda: stop_beside(flooders))
    finally:
        flooders.kill()


def rotation_phase(port: int, args: argparse.Namespace, context: Beside) -> bool:
    """Intake while `tipline keys rotate` runs as its own process, again as soon as it ends (a
    rotation of --keys tips may be shorter than the phase)."""
    done = threading.Event()
    took: list[float] = []
    codes: set[int] = set()

    def rotate() -> None:
        while not done.is_set():
            started = time.perf_counter()
            rotation = subprocess.run(
                [sys.executable, "-m", "tipline.cli", "keys", "rotate", "--purpose", "tips"],
                env=context.env,
                cwd=context.tmp,
                capture_output=True,
            )
            took.append(time.perf_counter() - started)
            codes.add(rotation.returncode)

    rotating = threading.Thread(target=rotate)
    rotating.start()
    try:
        latencies, errors = play(port, schedule(args.rate, args.seconds))
    finally:
        done.set()
        rotating.join()
    note = f"rotations of {args.keys:,} keys back to back: {len(took)}, median {statistics.median(took):.1f} s"
    return report("3. key rotation", latencies, errors, note + ("" if codes == {0} else f", exit codes {codes}"))


def polling_phase(port: int, args: argparse.Namespace, _: Beside) -> bool:
    pollers = beside(["--poll", str(port), *helpers(args), "--poll-seconds", str(args.poll_seconds)])
    try:
        name = f"4. {args.detectives} consoles polling"
        return run_phase(name, port, args, during=lambda: stop_beside(pollers))
    finally:
        pollers.kill()


def photo_phase(port: int, args: argparse.Namespace, context: Beside) -> bool:
    burst = photo_burst(context.fake, args.photos, args.megapixels)
    before = len(context.fake.cdn_requests)
    return run_phase(
        f"5. {args.photos} photos cleaned",
        port,
        args,
        extra=burst,
        during=lambda: f"{len(context.fake.cdn_requests) - before} of {args.photos} photos fetched in the phase",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30, help="length of each phase")
    parser.add_argument("--rate", type=float, default=20, help="webhooks a second, steady")
    parser.add_argument("--threads", type=int, default=8, help="waitress threads of `tipline serve`")
    parser.add_argument("--flooders", type=int, default=8, help="clients flooding the sign-in page")
    parser.add_argument("--keys", type=int, default=50_000, help="tips whose data keys the rotation re-wraps")
    parser.add_argument("--detectives", type=int, default=20, help="signed-in consoles polling")
    parser.add_argument("--poll-seconds", type=float, default=2.5, help="between polls (console.js: 5)")
    parser.add_argument("--photos", type=int, default=20, help="12 MP photos in the burst")
    parser.add_argument("--megapixels", type=float, default=12.0)
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary data directory")
    parser.add_argument("--phases", default="1,2,3,4,5", help="which phases to run, e.g. 1,4 (1 always runs)")
    parser.add_argument("--flood", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--poll", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.flood:
        flood(args.flood, args.flooders)
        return
    if args.poll:
        poll(args.poll, args.detectives, args.poll_seconds)
        return

    from tests.support import fake_twilio
    from tests.support.scratch import scratch_database

    fake, twilio = fake_twilio.start(ACCOUNT_SID, AUTH_TOKEN)
    with (
        tempfile.TemporaryDirectory(prefix="tipline-bench-") as tmp,
        scratch_database(args.database_url) as database_url,
    ):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TIPLINE_", "TWILIO_", "TELEGRAM_"))}
        env.update(
            {
                "TIPLINE_DATA_DIR": str(Path(tmp) / "var"),
                "TIPLINE_PUBLIC_URL": PUBLIC_URL,
                "TIPLINE_LOG_LEVEL": "WARNING",
                "TIPLINE_TRUSTED_PROXY": "127.0.0.1",  # the flood and the consoles come "through" a proxy
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_FROM_NUMBER": "+15555550100",
                "TWILIO_API_BASE_URL": fake.url,
            }
        )
        if database_url:
            env["TIPLINE_DATABASE_URL"] = database_url
        started = time.perf_counter()
        prepare(env, args.keys, args.detectives)
        print(
            f"{args.rate:g} webhooks/s for {args.seconds:g} s a phase, open-loop; {args.keys:,} tips; "
            f"database {'SQLite (WAL, synchronous=FULL)' if not args.database_url else 'PostgreSQL'}; "
            f"waitress with {args.threads} threads; {os.cpu_count()} CPUs; "
            f"setup {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "tipline.cli", "serve", "--port", str(port), "--threads", str(args.threads)],
            env=env,
            cwd=tmp,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_ready(port, server)
            play(port, schedule(args.rate, 1.0))  # warm up: imports, first connections, caches
            results = [run_phase("1. alone", port, args)]
            wanted = {int(n) for n in args.phases.split(",")}
            phases = {2: flood_phase, 3: rotation_phase, 4: polling_phase, 5: photo_phase}
            for number, phase in phases.items():
                if number in wanted:
                    results.append(phase(port, args, Beside(env, tmp, fake)))
        finally:
            server.terminate()
            server.wait(timeout=60)
            twilio.shutdown()
        print(f"{sum(results)} of {len(results)} phases met the target", flush=True)


if __name__ == "__main__":
    main()
