"""Intake throughput and latency: `tipline serve` against a bare Flask app on the same WSGI server.

Both servers run as separate processes on waitress with the same thread count and the same
number of processes (`--workers`: `tipline serve --workers N`, and the bare app in N forked
processes accepting on one socket). Each gets the same number of signed inbound-SMS webhooks from
realistic conversations (greeting, description, place, SKIP, follow-up) from many senders with
unique MessageSids, over 16 keep-alive connections. Printed: requests/s, p50 and p99 latency and
the server's CPU time per request (steadier than requests/s where neighbours share the machine)
for each, and tipline's share of the baseline's throughput (the product's target on SQLite: at least
0.5, with p99 under 50 ms on 2 cores). On PostgreSQL (--database-url) with more than one worker,
tipline is then measured again with --workers 1 on fresh conversations, and the scaling between
the two is printed (target: at least 1.4, with p99 under 100 ms).

On SQLite a third server is measured under the same load: the floor (`serve_floor`), the least any
tip line keeping this product's promises must do per webhook (signature, a delivery remembered once,
AES-GCM, a durable commit; nothing else), in lean raw sqlite3. Its share of the baseline is the most
this stack (Python, waitress, Flask, durable SQLite) can reach on this machine; tipline's share of the
floor is what tipline's own design costs. A last line says what the CPU alone allows each of them
(`cpu_ceiling`): the share of the baseline they could reach were nothing else in the way, and the
server CPU a request at which tipline could reach the target at all.

Then a per-stage profile of one webhook: the real app of a real runtime on an in-process waitress,
one message at a time, with clocks put around each stage by this script (nothing in tipline is
instrumented): HTTP (waitress, Flask routing, parsing, TwiML, the client's share), signature
(Twilio's), crypto (AES-GCM seal/open, HMAC pseudonyms and keyed hashes, data-key wrap/unwrap),
database (statements as the driver runs them, commit excluded), commit (the durable one), and the
rest (conversation logic, SQLAlchemy's own work). The per-message figures are steadier than
requests/s on a shared machine.

    python bench/intake.py [--senders 400] [--connections 16] [--threads 8] [--workers CORES]
                           [--profile-senders 100] [--database-url URL]
"""

from __future__ import annotations

import argparse
import http.client
import os
import queue
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PUBLIC_URL = "https://tips.example.org"
PATH = "/webhooks/twilio/sms"
ACCOUNT_SID = "AC" + "5a" * 16
AUTH_TOKEN = "bench-" + "3c" * 13
FIXED_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response><Message>Thank you.</Message></Response>'
CONVERSATION = [
    "hi",
    "A grey pickup has been parked outside the school every night this week, two men unload boxes into the garage",
    "Corner of Elm Street and 5th, the house with the blue door",
    "skip",
    "They came back again tonight around 11",
]


def serve_baseline(port: int, threads: int, workers: int) -> None:
    """The baseline: a Flask app that answers every webhook with fixed TwiML and does nothing else,
    served by `workers` processes (forked after binding) accepting on one socket."""
    import waitress
    from flask import Flask, Response

    app = Flask("baseline")

    @app.post(PATH)
    def sms() -> Response:
        return Response(FIXED_TWIML, content_type="text/xml; charset=utf-8")

    sock = listen_then_fork(port, workers)
    waitress.serve(app, sockets=[sock], threads=threads, _quiet=True)


def listen_then_fork(port: int, workers: int) -> socket.socket:
    """A listening socket, then `workers - 1` forked processes: each returns it, to serve on it."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    for _ in range(workers - 1):
        if os.fork() == 0:
            break  # a child serves; the parent forks the next one (measure() ends the whole group)
    return sock


def serve_floor(port: int, threads: int, workers: int, database: str) -> None:
    """The least a tip line keeping this product's promises can do per webhook, written leanly (raw
    sqlite3, no ORM, one committer thread a process), so that the gap between it and tipline is
    what tipline's own design costs: check
    Twilio's signature, remember the delivery once (a primary key), seal the message with AES-GCM
    bound to its row under a keyed pseudonym of the sender, store it durably in SQLite (WAL,
    synchronous=FULL, raw sqlite3), answer with fixed TwiML. No conversation, no thread, no search
    index, no deletion at the provider. Served like the baseline; the processes share SQLite's lock
    through an flock, and each groups the writes of its threads into one durable commit, as tipline does."""
    import fcntl
    import hashlib
    import hmac
    import sqlite3
    from concurrent.futures import Future

    import waitress
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    from flask import Flask, Response, request
    from twilio.request_validator import RequestValidator

    setup = sqlite3.connect(database)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.execute("CREATE TABLE IF NOT EXISTS deliveries (key BLOB PRIMARY KEY)")
    setup.execute("CREATE TABLE IF NOT EXISTS messages (id INTEGER PRIMARY KEY, sender BLOB, body BLOB)")
    setup.close()
    sock = listen_then_fork(port, workers)

    validator = RequestValidator(AUTH_TOKEN)
    pepper, cipher = b"p" * 32, AESGCM(b"k" * 32)
    lock = os.open(database + ".writelock", os.O_RDWR | os.O_CREAT, 0o600)
    db = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=30000")
    pending: list[tuple[tuple[bytes, bytes, str], Future[bool]]] = []
    ready = threading.Condition()

    def commit_forever() -> None:
        while True:
            with ready:
                while not pending:
                    ready.wait()
                batch = pending[:]
                del pending[:]
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                db.execute("BEGIN IMMEDIATE")
                done = []
                for (key, sender, body), future in batch:
                    try:
                        db.execute("INSERT INTO deliveries VALUES (?)", (key,))
                    except sqlite3.IntegrityError:
                        done.append((future, False))  # a redelivery: processed once
                        continue
                    row = db.execute("INSERT INTO messages (sender) VALUES (?)", (sender,)).lastrowid
                    sealed = cipher.encrypt(os.urandom(12), body.encode(), f"message|{row}".encode())
                    db.execute("UPDATE messages SET body = ? WHERE id = ?", (sealed, row))
                    done.append((future, True))
                db.execute("COMMIT")
            except sqlite3.Error as error:  # nothing of the batch is stored: its requests fail (500)
                if db.in_transaction:
                    db.execute("ROLLBACK")
                for _, future in batch:
                    future.set_exception(error)
                continue
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
            for future, fresh in done:
                future.set_result(fresh)

    threading.Thread(target=commit_forever, daemon=True).start()
    app = Flask("floor")

    @app.post(PATH)
    def sms() -> Response:
        form = request.form
        if not validator.validate(PUBLIC_URL + PATH, form, request.headers.get("X-Twilio-Signature", "")):
            return Response("forged", status=403)
        key = hmac.new(pepper, f"sms:{form['MessageSid']}".encode(), hashlib.sha256).digest()
        sender = hmac.new(pepper, f"sms:{form['From']}".encode(), hashlib.sha256).digest()
        future: Future[bool] = Future()
        with ready:
            pending.append(((key, sender, form.get("Body", "")), future))
            ready.notify()
        future.result()
        return Response(FIXED_TWIML, content_type="text/xml; charset=utf-8")

    waitress.serve(app, sockets=[sock], threads=threads, _quiet=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(port: int, process: subprocess.Popen[bytes]) -> None:
    for _ in range(300):
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def wait_for_line(process: subprocess.Popen[bytes], line: bytes) -> None:
    """Read the server's output until a line starts with `line`; then drain the rest on a thread."""
    assert process.stdout is not None
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        said = process.stdout.readline()
        if not said and process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        if said.startswith(line):
            threading.Thread(target=process.stdout.read, daemon=True).start()
            return
    raise SystemExit("server did not say it serves")


_SENDERS: set[str] = set()


def _new_sender() -> str:
    """A number no conversation of this run has used. One drawn twice (it happened about once in
    thirty PostgreSQL runs, which play 800-odd senders) finds its tip already submitted: its
    messages become follow-ups, and `stored` rightly reports a tip short."""
    while True:
        sender = f"+1555{secrets.randbelow(10**7):07d}"
        if sender not in _SENDERS:
            _SENDERS.add(sender)
            return sender


def conversations(senders: int) -> list[list[tuple[bytes, str]]]:
    """Signed request bodies, one list per sender, in conversation order."""
    from twilio.request_validator import RequestValidator

    validator = RequestValidator(AUTH_TOKEN)
    result = []
    for _ in range(senders):
        sender = _new_sender()
        messages = []
        for body in CONVERSATION:
            sid = "SM" + secrets.token_hex(16)
            form = {
                "ToCountry": "US",
                "ToState": "NH",
                "SmsMessageSid": sid,
                "NumMedia": "0",
                "ToCity": "",
                "FromZip": "00599",
                "SmsSid": sid,
                "FromState": "NH",
                "SmsStatus": "received",
                "FromCity": "BENCHVILLE",
                "Body": body,
                "FromCountry": "US",
                "To": "+15555550100",
                "ToZip": "",
                "NumSegments": "1",
                "MessageSid": sid,
                "AccountSid": ACCOUNT_SID,
                "From": sender,
                "ApiVersion": "2010-04-01",
            }
            messages.append((urlencode(form).encode(), validator.compute_signature(PUBLIC_URL + PATH, form)))
        result.append(messages)
    return result


def load(port: int, work: list[list[tuple[bytes, str]]], connections: int) -> tuple[float, list[float], int]:
    """Play every conversation over `connections` keep-alive connections; (seconds, latencies, errors)."""
    todo: queue.Queue[list[tuple[bytes, str]]] = queue.Queue()
    for conversation in work:
        todo.put(conversation)
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    barrier = threading.Barrier(connections + 1)

    def worker() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        barrier.wait()
        while True:
            try:
                conversation = todo.get_nowait()
            except queue.Empty:
                break
            for body, signature in conversation:
                start = time.perf_counter()
                connection.request(
                    "POST",
                    PATH,
                    body,
                    {
                        "Content-Type": "application/x-www-form-urlencoded",
                        "X-Twilio-Signature": signature,
                    },
                )
                response = connection.getresponse()
                response.read()
                mine.append(time.perf_counter() - start)
                if response.status != 200:
                    with lock:
                        errors[0] += 1
        connection.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(connections)]
    for thread in threads:
        thread.start()
    barrier.wait()
    start = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, latencies, errors[0]


STAGES = ("HTTP", "signature", "crypto", "database", "commit", "rest")


class StageClock:
    """Time spent per stage, summed over every thread; a stage entered inside another is not counted
    twice (the outer one owns the time)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.view = 0.0  # inside the webhook's view function
        self.unit = 0.0  # inside intake's unit of work (Intake._process)
        self.in_unit = dict.fromkeys(STAGES, 0.0)  # the stages' share of it

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds
            if getattr(self._local, "unit", False):
                self.in_unit[stage] += seconds

    def watch_unit(self, process: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self._local.unit = True
            start = time.perf_counter()
            try:
                return process(*args, **kwargs)
            finally:
                self.unit += time.perf_counter() - start
                self._local.unit = False

        return timed

    def wrap(self, stage: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if getattr(self._local, "inside", False):
                return function(*args, **kwargs)
            self._local.inside = True
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.add(stage, time.perf_counter() - start)
                self._local.inside = False

        return timed

    def watch_engine(self, engine: Any) -> None:
        """Statements (cursor execute) and the durable commit: SQLite commits in tipline's listener of
        the engine's commit event (db.make_engine), PostgreSQL in the dialect's do_commit after it."""
        from sqlalchemy import event

        def before_statement(conn: Any, *_: Any) -> None:
            conn.info["bench_statement"] = time.perf_counter()

        def after_statement(conn: Any, *_: Any) -> None:
            self.add("database", time.perf_counter() - conn.info.pop("bench_statement"))

        event.listen(engine, "before_cursor_execute", before_statement)
        event.listen(engine, "after_cursor_execute", after_statement)
        for listener in list(engine.dispatch.commit):
            event.remove(engine, "commit", listener)
            event.listen(engine, "commit", self.wrap("commit", listener))
        engine.dialect.do_commit = self.wrap("commit", engine.dialect.do_commit)


def profile(env: dict[str, str], senders: int, threads: int) -> None:
    """Where one webhook's time goes: the real app of a real runtime on an in-process waitress, one
    keep-alive connection, one message at a time, with clocks around each stage."""
    import waitress

    from tipline.config import load_settings
    from tipline.core import crypto
    from tipline.runtime import build_runtime
    from tipline.web.app import create_app

    runtime = build_runtime(load_settings(env))
    app = create_app(runtime)
    clock = StageClock()
    sms = runtime.sms
    assert sms is not None
    sms.authenticate = clock.wrap("signature", sms.authenticate)  # type: ignore[method-assign]
    for name in ("seal", "open_sealed", "new_key"):
        setattr(crypto, name, clock.wrap("crypto", getattr(crypto, name)))
    for name in ("keyed_hash", "mac"):
        setattr(crypto.Keyring, name, clock.wrap("crypto", getattr(crypto.Keyring, name)))
    clock.watch_engine(runtime.engine)
    intake = runtime.intake
    intake._process = clock.watch_unit(intake._process)  # type: ignore[method-assign]
    view = app.view_functions["twilio.inbound_sms"]

    def timed_view() -> Any:
        start = time.perf_counter()
        try:
            return view()
        finally:
            clock.view += time.perf_counter() - start

    app.view_functions["twilio.inbound_sms"] = timed_view
    port = free_port()
    server = waitress.create_server(app, host="127.0.0.1", port=port, threads=threads)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        load(port, conversations(4), connections=1)  # warm up
        clock.reset()
        seconds, latencies, errors = load(port, conversations(senders), connections=1)
    finally:
        server.close()
        runtime.close()
    if errors:
        print(f"profile: {errors} webhooks not answered 200", flush=True)
    n = len(latencies)
    per = {stage: clock.seconds[stage] / n for stage in STAGES}
    total = seconds / n
    per["HTTP"] = total - per["signature"] - clock.view / n
    per["rest"] = clock.view / n - per["crypto"] - per["database"] - per["commit"]
    print(f"profile of {n} webhooks, one at a time: {total * 1000:.3f} ms per message", flush=True)
    for stage in STAGES:
        print(f"  {stage:10} {per[stage] * 1000:7.3f} ms  {per[stage] / total:6.1%}", flush=True)
    inside = (clock.unit - sum(clock.in_unit.values())) / n
    print(
        f"  rest: {inside * 1000:.3f} ms in intake's unit of work (conversation, effects, SQLAlchemy), "
        f"{(per['rest'] - inside) * 1000:.3f} ms around it (session, transaction, group-commit hand-off, view)",
        flush=True,
    )


def session_cpu(session: int) -> float:
    """CPU seconds (user and system) used so far by the live processes of a session: a server and
    its workers. Steadier than requests/s on a shared machine, where a neighbour takes the CPU."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended meanwhile
        if int(fields[3]) == session:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def machine_idle() -> tuple[int, int]:
    """(idle, total) CPU ticks of the whole machine so far (/proc/stat): what share of it was left
    unused while a server was loaded tells a CPU-bound server from one waiting on a lock or a disk."""
    ticks = [int(n) for n in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return ticks[3] + ticks[4], sum(ticks)  # idle and iowait; total


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def stored(env: dict[str, str]) -> tuple[int, int]:
    """(deliveries remembered, tips submitted) in tipline's database: what the load left there."""
    from sqlalchemy import func, select

    from tipline.config import load_settings
    from tipline.storage.db import make_engine
    from tipline.storage.models import ProcessedDelivery, Tip

    engine = make_engine(load_settings(env).database_url)
    try:
        with engine.connect() as connection:
            deliveries = connection.scalar(select(func.count()).select_from(ProcessedDelivery)) or 0
            tips = connection.scalar(select(func.count()).where(Tip.submitted_at.is_not(None))) or 0
    finally:
        engine.dispose()
    return deliveries, tips


def measure(
    name: str,
    command: list[str],
    env: dict[str, str],
    port: int,
    work: list,
    connections: int,
    ready_line: bytes | None = None,
) -> dict[str, float]:
    """Serve with `command`, warm up, then play `work`. With `ready_line`, the load starts once the
    server printed it: a port accepts connections (its backlog) before every worker serves, and
    keep-alive connections opened then would all stay with the worker that accepted first.
    With `ready_line` (tipline), what the load stored is counted too: every message of `work`
    remembered once and every conversation a submitted tip, or the line says what is missing."""
    process = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.PIPE if ready_line else subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        if ready_line:
            wait_for_line(process, ready_line)
        wait_ready(port, process)
        # Warm up over as many connections as the load: imports, caches, and every worker thread's
        # first database connection (a pool fills as threads first need it), which a server
        # running for a while has long made; made during the load, they would be its p99.
        load(port, conversations(connections), connections)
        before = stored(env) if ready_line else (0, 0)
        cpu, (idle, ticks), client = session_cpu(process.pid), machine_idle(), time.process_time()
        seconds, latencies, errors = load(port, work, connections)
        cpu, client = session_cpu(process.pid) - cpu, time.process_time() - client
        idle, ticks = (now - then for now, then in zip(machine_idle(), (idle, ticks), strict=True))
    finally:
        process.terminate()
        process.wait(timeout=30)
        try:
            os.killpg(process.pid, signal.SIGTERM)  # worker processes left behind, if any
        except ProcessLookupError:
            pass
    kept = ""
    if ready_line:
        deliveries, tips = (now - then for now, then in zip(stored(env), before, strict=True))
        expected = (sum(len(conversation) for conversation in work), len(work))
        kept = (
            "  stored: all, once"
            if (deliveries, tips) == expected
            else (f"  STORED {deliveries} messages and {tips} tips, expected {expected[0]} and {expected[1]}")
        )
    figures = {
        "requests": len(latencies),
        "errors": errors,
        "rps": len(latencies) / seconds,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "cpu_ms": cpu / len(latencies) * 1000,
        "client_ms": client / len(latencies) * 1000,  # this script's load threads (the same work for every server)
        "idle": idle / ticks,
    }
    print(
        f"{name:10} {figures['requests']:6d} requests  {figures['rps']:8.1f} req/s  "
        f"p50 {figures['p50_ms']:6.2f} ms  p99 {figures['p99_ms']:6.2f} ms  "
        f"server CPU {figures['cpu_ms']:.2f} ms/request  client CPU {figures['client_ms']:.2f}  "
        f"machine idle {figures['idle']:.0%}  errors {errors}{kept}",
        flush=True,
    )
    return figures


def cpu_ceiling(baseline: dict[str, float], tipline: dict[str, float], floor: dict[str, float]) -> str:
    """What the CPU alone allows: on a machine the load keeps busy, requests/s are the cores over the
    CPU a request costs (the server's and the load client's), so a server's share of the baseline
    is at most (baseline server + client CPU) / (its server + client CPU), whatever else holds it
    back (a commit waiting for the disk, a lock). And the server CPU a request at which the target
    (0.5) would just be reachable."""
    per_request = baseline["cpu_ms"] + baseline["client_ms"]

    def share(server: dict[str, float]) -> float:
        return per_request / (server["cpu_ms"] + server["client_ms"])

    allowed = 2 * per_request - tipline["client_ms"]
    return (
        f"CPU ceiling (share of the baseline the CPU per request allows, the machine always busy): "
        f"tipline {share(tipline):.2f}, floor {share(floor):.2f}; a ratio of 0.5 needs tipline's server CPU "
        f"<= {allowed:.2f} ms/request (measured {tipline['cpu_ms']:.2f}, the floor's {floor['cpu_ms']:.2f})"
    )


def throughput(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Both servers under the same load, one after the other; the ratio and tipline's p99."""
    work = conversations(args.senders)
    print(
        f"{args.senders} conversations x {len(CONVERSATION)} messages, {args.connections} connections, "
        f"{args.workers} process(es) of waitress with {args.threads} threads each, "
        f"database {'SQLite (WAL, synchronous=FULL)' if not args.database_url else args.database_url}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    base_port, tip_port = free_port(), free_port()
    baseline = measure(
        "baseline",
        [sys.executable, __file__, "--serve-baseline", str(base_port)]
        + ["--threads", str(args.threads), "--workers", str(args.workers)],
        env,
        base_port,
        work,
        args.connections,
    )

    def serve(workers: int) -> list[str]:
        options = ["--port", str(tip_port), "--threads", str(args.threads), "--workers", str(workers)]
        return [sys.executable, "-m", "tipline.cli", "serve", *options]

    tipline = measure("tipline", serve(args.workers), env, tip_port, work, args.connections, b"tipline serving on")
    if not args.database_url:
        floor_port = free_port()
        with tempfile.TemporaryDirectory(prefix="tipline-floor-") as tmp:
            floor = measure(
                "floor",
                [sys.executable, __file__, "--serve-floor", str(floor_port), "--floor-database", f"{tmp}/floor.db"]
                + ["--threads", str(args.threads), "--workers", str(args.workers)],
                env,
                floor_port,
                work,
                args.connections,
            )
        print(
            f"ratio (tipline req/s / baseline req/s): {tipline['rps'] / baseline['rps']:.2f}   "
            f"tipline p99: {tipline['p99_ms']:.1f} ms (targets on SQLite: ratio >= 0.5, p99 < 50 ms)",
            flush=True,
        )
        if floor["errors"]:
            print("floor: not every webhook was answered 200; its figures say nothing", flush=True)
            return
        print(
            f"floor (floor req/s / baseline req/s): {floor['rps'] / baseline['rps']:.2f}   "
            f"tipline req/s / floor req/s: {tipline['rps'] / floor['rps']:.2f}",
            flush=True,
        )
        print(cpu_ceiling(baseline, tipline, floor), flush=True)
        return
    print(f"ratio (tipline req/s / baseline req/s): {tipline['rps'] / baseline['rps']:.2f}", flush=True)
    if args.workers == 1:
        print(f"tipline p99: {tipline['p99_ms']:.1f} ms (target on PostgreSQL: p99 < 100 ms)", flush=True)
        return
    # PostgreSQL's target is how intake scales with processes: the same load on one worker.
    # Fresh conversations: the first run's would all be redeliveries, recognised and not processed again.
    work = conversations(args.senders)
    one = measure("tipline -w1", serve(1), env, tip_port, work, args.connections, b"tipline serving on")
    print(
        f"scaling (--workers {args.workers} req/s / --workers 1 req/s): {tipline['rps'] / one['rps']:.2f}   "
        f"tipline p99: {tipline['p99_ms']:.1f} ms (targets on PostgreSQL: scaling >= 1.4, p99 < 100 ms)",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--senders", type=int, default=400, help="conversations per server (5 messages each)")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--threads", type=int, default=8, help="waitress threads, the same for both servers")
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="server processes, the same for both servers (default: the machine's cores, as `tipline serve`)",
    )
    parser.add_argument("--profile-senders", type=int, default=100, help="conversations of the per-stage profile")
    parser.add_argument("--database-url", default="", help="default: SQLite in a temporary data directory")
    parser.add_argument("--serve-baseline", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--floor-database", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        serve_baseline(args.serve_baseline, args.threads, args.workers)
        return
    if args.serve_floor:
        serve_floor(args.serve_floor, args.threads, args.workers, args.floor_database)
        return

    from tests.support.scratch import scratch_database

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
                "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
                "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
                "TWILIO_FROM_NUMBER": "+15555550100",
                # Deletions at Twilio are due 60 s after each message, after this run: nothing is sent anywhere.
                "TWILIO_API_BASE_URL": "http://127.0.0.1:9",
                # This checkout's tipline in every process, wherever the virtualenv's install points.
                "PYTHONPATH": str(ROOT),
            }
        )
        if database_url:
            env["TIPLINE_DATABASE_URL"] = database_url
        subprocess.run([sys.executable, "-m", "tipline.cli", "init"], env=env, check=True, capture_output=True, cwd=tmp)
        if args.senders:
            throughput(args, env)
        if args.profile_senders:
            profile(env, args.profile_senders, args.threads)


if __name__ == "__main__":
    main()
