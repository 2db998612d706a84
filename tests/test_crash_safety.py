"""kill -9 during intake: every acknowledged message survives, and redelivery stores it once."""

from __future__ import annotations

import random
import signal
import subprocess
import threading
import time
from pathlib import Path

import requests
from sqlalchemy import select

from tests.support.harness import PUBLIC_URL, inbound_form, sign
from tests.support.processes import free_port, run, spawn, wait_until_serving
from tipline.config import load_settings
from tipline.core.vocabulary import MessageKind
from tipline.runtime import build_runtime
from tipline.storage import records
from tipline.storage.models import Message, Tip

PATH = "/webhooks/twilio/sms"


def start(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("a") as out:
        # Webhooks only: the sandbox is not served on a public address (tests/attacks/test_exposed_sandbox.py)
        process = spawn({**env, "TIPLINE_SANDBOX": "0"}, "serve", "--port", str(port), "--no-dispatcher", output=out)
    wait_until_serving(f"http://127.0.0.1:{port}", log=log, healthy=False, process=process)
    return process


def deliver(port: int, form: dict[str, str]) -> bool:
    """One webhook delivery; True only when it was acknowledged with 200."""
    try:
        response = requests.post(
            f"http://127.0.0.1:{port}{PATH}", data=form, timeout=5, headers={"X-Twilio-Signature": sign(PATH, form)}
        )
        return response.status_code == 200
    except requests.RequestException:
        return False


def test_messages_survive_kill_9_and_redelivery_stores_them_once(env: dict[str, str], tmp_path: Path) -> None:
    assert env["TIPLINE_PUBLIC_URL"] == PUBLIC_URL
    assert run(env, "init").returncode == 0
    port = free_port()
    # 120 senders, one tip each; Twilio redelivers whatever was not acknowledged.
    forms = [inbound_form(f"crash-test tip number {n} about a burglary", sender=f"+1555555{n:04d}") for n in range(120)]
    acknowledged: set[int] = set()
    lock = threading.Lock()
    rng = random.Random(1234)
    interrupted = 0
    for round_ in range(4):
        process = start(env, port, tmp_path / "serve.log")
        todo = [n for n in range(len(forms)) if n not in acknowledged]

        def worker(chunk: list[int]) -> None:
            for n in chunk:
                if deliver(port, forms[n]):
                    with lock:
                        acknowledged.add(n)

        threads = [threading.Thread(target=worker, args=(todo[i::8],)) for i in range(8)]
        for thread in threads:
            thread.start()
        if round_ < 3:
            # Kill once some of this round's messages got through, with the others in flight: counted
            # in acknowledgements rather than seconds, so a fast or a loaded machine kills mid-stream alike.
            target = len(acknowledged) + min(rng.randint(5, 25), len(todo) - 8)
            deadline = time.monotonic() + 30
            while len(acknowledged) < target and time.monotonic() < deadline:
                time.sleep(0.002)
            process.send_signal(signal.SIGKILL)  # mid-transaction, mid-response, anywhere
        for thread in threads:
            thread.join()
        interrupted += len([n for n in todo if n not in acknowledged])
        if round_ == 3:
            process.terminate()
        process.wait(timeout=10)

    assert interrupted > 0  # the kills really landed while messages were in flight
    assert acknowledged == set(range(len(forms)))
    settings = load_settings(env)
    runtime = build_runtime(settings)
    try:
        with runtime.factory() as session:
            texts = []
            for tip in session.scalars(select(Tip)):
                texts.append(records.read_tip_field(tip, records.tip_dek(runtime.keys.keyring, tip), "what"))
            tipster_messages = session.scalars(select(Message).where(Message.kind == MessageKind.TIPSTER)).all()
    finally:
        runtime.close()
    assert sorted(texts) == sorted(f"crash-test tip number {n} about a burglary" for n in range(len(forms)))
    assert len(tipster_messages) == len(forms)  # redelivered copies were recognised, not stored again
