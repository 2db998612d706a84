"""The `tipline` command as an operator uses it, and `tipline serve` as a real HTTP server."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from sqlalchemy import select, update

from tests.support import samples
from tests.support.anonymity import scan_files
from tests.support.harness import reference_of
from tests.support.processes import free_port, run, spawn, wait_until_serving, workdir
from tipline.config import load_settings
from tipline.core.vocabulary import AttachmentStatus
from tipline.runtime import build_runtime
from tipline.services import review
from tipline.storage.models import Attachment, AuditEntry


def test_init_is_idempotent_and_prints_the_first_admin_password_once(cli_env: dict[str, str]) -> None:
    first = run(cli_env, "init")
    assert first.returncode == 0, first.stderr
    assert "first admin account: admin" in first.stdout
    password = re.search(r"one-time password: (\S+)", first.stdout)
    assert password is not None, first.stdout
    assert len(password.group(1)) >= 12
    second = run(cli_env, "init")
    assert second.returncode == 0, second.stderr
    assert "one-time password" not in second.stdout
    assert "keys: present" in second.stdout
    listing = run(cli_env, "users", "list")
    assert re.search(r"admin\s+admin\s+active", listing.stdout)


@pytest.mark.parametrize(
    "name,value,message",
    [
        ("TIPLINE_PUBLIC_URL", "tips.example.org", "TIPLINE_PUBLIC_URL must be an http(s) URL"),
        ("TIPLINE_MASTER_KEY", "not-base64!", "TIPLINE_MASTER_KEY must be base64"),
        ("TWILIO_ACCOUNT_SID", "AC123", "TWILIO_ACCOUNT_SID must look like"),
        ("TIPLINE_SANDBOX", "maybe", "TIPLINE_SANDBOX must be 1 or 0"),
        ("TIPLINE_DATABASE_URL", "mysql://x/y", "TIPLINE_DATABASE_URL must be"),
    ],
)
def test_a_bad_setting_stops_with_one_line_naming_it(
    cli_env: dict[str, str], name: str, value: str, message: str
) -> None:
    result = run({**cli_env, name: value}, "init")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_before_init_says_what_to_do(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "purge")
    assert result.returncode == 2
    assert "tipline init" in result.stderr


def test_users_add_list_disable(cli_env: dict[str, str]) -> None:
    run(cli_env, "init")
    short = run(cli_env, "users", "add", "dana", "--role", "detective", "--password-stdin", stdin="short\n")
    assert short.returncode == 2
    assert "at least 12" in short.stderr
    added = run(
        cli_env, "users", "add", "dana", "--role", "detective", "--password-stdin", stdin="a long enough passphrase\n"
    )
    assert added.returncode == 0, added.stderr
    assert run(cli_env, "users", "add", "dana", "--role", "detective").returncode == 2
    assert run(cli_env, "users", "disable", "dana").returncode == 0
    assert re.search(r"dana\s+detective\s+disabled", run(cli_env, "users", "list").stdout)


def test_every_command_has_help(cli_env: dict[str, str]) -> None:
    for args in (
        ["--help"],
        ["init", "--help"],
        ["serve", "--help"],
        ["dispatch", "--help"],
        ["purge", "--help"],
        ["users", "add", "--help"],
        ["keys", "status", "--help"],
    ):
        result = run(cli_env, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert "Usage: tipline" in result.stdout, args


@pytest.fixture
def served(cli_env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    assert run(cli_env, "init").returncode == 0
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    # The sandbox is served on a loopback address only (tests/attacks/test_exposed_sandbox.py).
    cli_env = {**cli_env, "TIPLINE_PUBLIC_URL": base}
    with (workdir(cli_env) / "serve.log").open("w") as out:
        process = spawn({**cli_env, "TIPLINE_LOG_LEVEL": "DEBUG"}, "serve", "--port", str(port), output=out)
    try:
        wait_until_serving(base)
        yield base, cli_env
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_serve_runs_the_sandbox_end_to_end_with_the_in_process_dispatcher(served: tuple[str, dict[str, str]]) -> None:
    base, env = served
    health = requests.get(base + "/healthz", timeout=5)
    assert health.status_code == 200, health.text
    assert (health.json()["status"], health.json()["database"], health.json()["channels"]) == ("ok", "ok", ["sandbox"])
    browser = requests.Session()
    page = browser.get(base + "/sandbox", timeout=5)
    assert page.status_code == 200
    assert "Tip line sandbox" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]

    def say(text: str) -> list[str]:
        response = browser.post(base + "/sandbox/messages", json={"text": text}, timeout=5)
        assert response.status_code == 200, response.text
        return response.json()["replies"]

    assert "anonymous" in say("hi")[0]
    say("CANARY-SANDBOX a man sells stolen phones at the market")
    say("skip")
    reference = reference_of(say("skip")[0])

    # A detective replies from another process; the server's dispatcher delivers it to the page
    settings = load_settings(env)
    runtime = build_runtime(settings)
    try:
        review.reply(runtime.ctx, reference, "Which market stall?")
    finally:
        runtime.close()
    for _ in range(50):
        inbox = browser.get(base + "/sandbox/inbox", timeout=5).json()["messages"]
        if inbox:
            break
        time.sleep(0.2)
    assert [m["text"] for m in inbox] == ["Example City Police: Which market stall?"]
    # Another browser sees nothing of it
    assert requests.get(base + "/sandbox/inbox", timeout=5).json() == {"messages": []}
    data_dir = Path(env["TIPLINE_DATA_DIR"])
    assert scan_files(data_dir.parent, ["CANARY-SANDBOX", "stolen phones", "Which market stall"]) == []


def test_serve_cleans_a_photo_from_the_sandbox_in_its_isolated_child(served: tuple[str, dict[str, str]]) -> None:
    base, env = served
    browser = requests.Session()
    browser.get(base + "/sandbox", timeout=5)
    sent = browser.post(
        base + "/sandbox/photos", data=samples.camera_jpeg(6).data, headers={"Content-Type": "image/jpeg"}, timeout=5
    )
    assert sent.json()["replies"][0].startswith("Thank you, we got your photo.")
    runtime = build_runtime(load_settings(env))
    try:
        for _ in range(100):  # the server's own dispatcher fetches and cleans it
            with runtime.factory() as session:
                stored = session.scalars(select(Attachment)).all()
            if stored and stored[0].status not in (AttachmentStatus.PENDING, AttachmentStatus.FETCHING):
                break
            time.sleep(0.1)
    finally:
        runtime.close()
    assert [(a.status, a.width, a.height, a.source_format) for a in stored] == [
        (AttachmentStatus.STORED, 64, 96, "JPEG")
    ]
    data_dir = Path(env["TIPLINE_DATA_DIR"])
    assert scan_files(data_dir.parent, [samples.MAKE, samples.SERIAL, samples.OWNER, samples.XMP_GPS]) == []


def test_the_sandbox_refuses_nonsense(served: tuple[str, dict[str, str]]) -> None:
    base, _ = served
    browser = requests.Session()
    assert (
        browser.post(base + "/sandbox/messages", json={"text": "hi"}, timeout=5).status_code == 400
    )  # no identity yet
    browser.get(base + "/sandbox", timeout=5)
    assert browser.post(base + "/sandbox/messages", data="not json", timeout=5).status_code == 400
    assert browser.post(base + "/sandbox/messages", json={"text": ["x"]}, timeout=5).status_code == 400
    assert browser.post(base + "/sandbox/messages", json={"text": "x" * 1601}, timeout=5).status_code == 400


def test_settings_come_from_a_dotenv_file_and_the_environment_wins(cli_env: dict[str, str]) -> None:
    workdir = Path(cli_env["TIPLINE_DATA_DIR"]).parent
    (workdir / ".env").write_text("TIPLINE_AGENCY_NAME=From Dotenv\nTIPLINE_RETENTION_DAYS=soon\n")
    bad = run(cli_env, "init")
    assert bad.returncode == 2
    assert "TIPLINE_RETENTION_DAYS must be a whole number" in bad.stderr
    assert run({**cli_env, "TIPLINE_RETENTION_DAYS": "30"}, "init").returncode == 0


def test_purge_and_dispatch_once_report_what_they_did(cli_env: dict[str, str]) -> None:
    run(cli_env, "init")
    purged = run(cli_env, "purge")
    assert purged.returncode == 0, purged.stderr
    assert "idle drafts submitted or dropped: 0" in purged.stdout
    dispatched = run(cli_env, "dispatch", "--once")
    assert dispatched.returncode == 0, dispatched.stderr
    assert "outbox rows attempted: 0" in dispatched.stdout
    status = run(cli_env, "keys", "status")
    assert status.returncode == 0, status.stderr
    for purpose in ("tips", "contacts", "pseudonym"):
        assert purpose in status.stdout


def test_audit_verify_exits_non_zero_on_tampering(cli_env: dict[str, str]) -> None:
    run(cli_env, "init")
    assert run(cli_env, "users", "add", "dana", "--role", "detective", "--role", "admin").returncode == 0
    assert "detective,admin" in run(cli_env, "users", "list").stdout
    assert run(cli_env, "users", "disable", "dana").returncode == 0
    runtime = build_runtime(load_settings(cli_env))
    try:
        with runtime.factory() as session:
            actions = [(e.actor, e.action, e.object_id) for e in session.scalars(select(AuditEntry))]
    finally:
        runtime.close()
    assert actions == [
        ("init", "user.create", "admin"),
        ("cli", "user.create", "dana"),
        ("cli", "user.disable", "dana"),
    ]
    intact = run(cli_env, "audit", "verify")
    assert intact.returncode == 0, intact.stderr
    assert "audit log intact" in intact.stdout
    runtime = build_runtime(load_settings(cli_env))
    try:
        with runtime.factory.begin() as session:
            session.execute(update(AuditEntry).values(outcome="failed"))
    finally:
        runtime.close()
    tampered = run(cli_env, "audit", "verify")
    assert tampered.returncode == 1
    assert "TAMPERED" in tampered.stderr
