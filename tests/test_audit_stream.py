"""Audit entries also leave the server as a stream an auditor can ship to syslog or a SIEM.

Each committed entry is one line of the `tipline.audit` logger (text or JSON), and with
TIPLINE_AUDIT_LOG_FILE one JSON line in a file of its own; an entry rolled back is not logged,
and the lines are as content-free as the entries, with the phone-number mask of every log line.
"""

from __future__ import annotations

import html
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
import requests

from tests.support.anonymity import phone_formats, scan_files
from tests.support.harness import TIPSTER, Harness, inbound_form, reference_of, sign
from tests.support.processes import free_port, run, spawn, wait_until_serving, workdir
from tipline import logs
from tipline.logs import redact
from tipline.services import audit
from tipline.services.auth import TOTP_PERIOD

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r'data-totp-secret="([A-Z2-7]+)"')
PASSWORD = "correct horse battery staple"
STORY = ["CANARY-AUDIT a grey pickup dumps barrels by the creek", "skip", "skip"]
FIELDS = {"id", "at", "action", "actor", "object_type", "object_id", "outcome", "detail"}


def csrf(page: requests.Response) -> str:
    match = CSRF.search(page.text)
    assert match, page.text
    return html.unescape(match.group(1))


def sign_in(base: str, username: str) -> requests.Session:
    """Sign in through the console's pages as a person would, enrolling TOTP on the way."""
    browser = requests.Session()
    login = browser.get(base + "/console/login", timeout=10)
    form = {"csrf_token": csrf(login), "username": username, "password": PASSWORD, "ack": "1", "code": ""}
    answer = browser.post(base + "/console/login", data=form, allow_redirects=False, timeout=30)
    assert answer.status_code == 302 and answer.headers["Location"].endswith("/console/enrol"), answer.text
    enrol = browser.get(base + "/console/enrol", timeout=10)
    secret = SECRET.search(enrol.text)
    assert secret
    code = pyotp.TOTP(secret.group(1)).at(int(time.time() // TOTP_PERIOD) * TOTP_PERIOD)
    done = browser.post(base + "/console/enrol", data={"csrf_token": csrf(enrol), "code": code}, timeout=30)
    assert done.status_code == 200, done.text
    return browser


@pytest.fixture
def audited(env: dict[str, str], tmp_path: Path) -> Iterator[tuple[str, dict[str, str], Path, Path]]:
    """`tipline serve` with audit entries as JSON, to its log and to a file; (base, env, file, log)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    stream = tmp_path / "audit" / "audit.jsonl"
    stream.parent.mkdir()
    env = {
        **env,
        "TIPLINE_PUBLIC_URL": base,
        "TIPLINE_SANDBOX": "0",
        "TIPLINE_AUDIT_LOG_FORMAT": "json",
        "TIPLINE_AUDIT_LOG_FILE": str(stream),
    }
    assert run(env, "init").returncode == 0
    log = workdir(env) / "serve.log"
    with log.open("w") as out:
        process = spawn(env, "serve", "--port", str(port), output=out)
    try:
        wait_until_serving(base, log=log, healthy=False, process=process)
        yield base, env, stream, log
    finally:
        process.terminate()
        process.wait(timeout=15)


def entries(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_sign_in_and_a_tip_view_are_streamed_as_json_lines(audited: tuple[str, dict[str, str], Path, Path]) -> None:
    base, env, stream, log = audited
    created = run(env, "users", "add", "dana", "--role", "detective", "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    # Given a tip texted in
    for body in STORY:
        form = inbound_form(body)
        answer = requests.post(
            base + "/webhooks/twilio/sms",
            data=form,
            headers={"X-Twilio-Signature": sign("/webhooks/twilio/sms", form, base=base)},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
    reference = reference_of(answer.text)
    # When a detective signs in and opens it
    browser = sign_in(base, "dana")
    assert browser.get(f"{base}/console/tips/{reference}", timeout=10).status_code == 200

    # Then the file holds one JSON object per entry, with every field ...
    time.sleep(0.2)
    lines = entries(stream)
    assert all(set(line) == FIELDS for line in lines), lines
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", line["at"]) for line in lines)  # to the minute
    signed_in = [line for line in lines if line["action"] == "auth.sign_in" and line["actor"] == "dana"]
    assert signed_in and signed_in[-1]["outcome"] == "ok"
    viewed = [line for line in lines if line["action"] == "tip.view"]
    assert viewed and viewed[-1]["actor"] == "dana"
    assert (viewed[-1]["object_type"], viewed[-1]["object_id"]) == ("tip", reference)
    assert isinstance(viewed[-1]["detail"], dict)
    # ... the same ids as the database's chain (the record of truth), readable only by the service
    assert [line["id"] for line in lines] == sorted({line["id"] for line in lines})
    assert stat.S_IMODE(stream.stat().st_mode) == 0o600
    # And the server's own log carries the same lines, as JSON after the usual prefix
    logged = [line for line in log.read_text().splitlines() if " INFO tipline.audit: " in line]
    assert any(json.loads(line.split(": ", 1)[1])["action"] == "tip.view" for line in logged)
    # And nothing about the tipster is in either
    needles = [*phone_formats(TIPSTER), STORY[0]]
    assert scan_files(stream.parent, needles, [log]) == []


def test_audit_lines_keep_the_phone_number_mask(env: dict[str, str], tmp_path: Path) -> None:
    # Given an audit stream to a file (and the command's own log)
    stream = tmp_path / "audit.jsonl"
    env = {**env, "TIPLINE_AUDIT_LOG_FILE": str(stream)}
    assert run(env, "init").returncode == 0
    # When an administrator names an account with what is in fact a phone number
    number = TIPSTER.removeprefix("+")
    created = run(env, "users", "add", number, "--role", "admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0, created.stderr
    # Then the entry is streamed, and the number is masked in the file and in the log (text form)
    created_entries = [line for line in entries(stream) if line["action"] == "user.create"]
    assert [line["object_id"] for line in created_entries] == ["admin", "[redacted]"]  # `init`'s admin, then ours
    assert "tipline.audit: audit" in created.stderr and "user.create" in created.stderr
    assert number not in stream.read_text() and number not in created.stderr


def test_only_committed_entries_are_logged(tipline: Harness) -> None:
    ctx = tipline.runtime.ctx
    # An entry whose transaction is rolled back never happened: not logged
    with pytest.raises(RuntimeError), ctx.factory.begin() as session:
        audit.record(session, ctx.keyring, "test.rolled_back", actor="dana")
        raise RuntimeError
    # One in a savepoint rolled back inside a committed transaction neither; the other one is
    with ctx.factory.begin() as session:
        audit.record(session, ctx.keyring, "test.kept", actor="dana", object_type="tip", object_id="T-AAAAAA")
        with pytest.raises(RuntimeError), session.begin_nested():
            audit.record(session, ctx.keyring, "test.undone", actor="dana")
            raise RuntimeError
    audit.log_event(ctx, "test.event", detail={"results": 3})
    lines = [line for line in tipline.log_file.read_text().splitlines() if line.startswith("INFO tipline.audit ")]
    assert [line.split(": ", 1)[1].split(" by ")[0] for line in lines][-2:] == ["test.kept", "test.event"]
    assert lines[-2].endswith("test.kept by dana on tip T-AAAAAA: ok {}")
    assert lines[-1].endswith('test.event by system: ok {"results":3}')
    assert not any("rolled_back" in line or "undone" in line for line in lines)
    assert audit.verify(ctx).intact


def test_a_bad_audit_format_is_refused_in_one_line(env: dict[str, str]) -> None:
    result = run({**env, "TIPLINE_AUDIT_LOG_FORMAT": "xml"}, "users", "list")
    assert result.returncode == 2
    assert result.stderr.strip() == "tipline: TIPLINE_AUDIT_LOG_FORMAT must be text or json"
    missing = run({**env, "TIPLINE_AUDIT_LOG_FILE": "/nonexistent-dir/audit.jsonl"}, "users", "list")
    assert missing.returncode == 2 and "TIPLINE_AUDIT_LOG_FILE" in missing.stderr


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ('{"at":"2026-12-03T11:30Z"}', '{"at":"2026-12-03T11:30Z"}'),  # an entry's time stays readable
        ('{"object_id":"15555550142"}', '{"object_id":"[redacted]"}'),
        ('{"object_id":"555-555-0142"}', '{"object_id":"[redacted]"}'),
        ('{"object_id":"5555-55-0142"}', '{"object_id":"[redacted]"}'),  # not a date: masked
    ],
)
def test_the_mask_keeps_dates_and_masks_numbers(line: str, masked: str) -> None:
    assert redact(line) == masked


def test_an_existing_audit_file_is_tightened_to_0600(env: dict[str, str], tmp_path: Path) -> None:
    # Given an audit file an operator created with the usual umask, readable by everyone
    stream = tmp_path / "audit.jsonl"
    stream.write_text("")
    stream.chmod(0o644)
    # When any command starts with it
    result = run({**env, "TIPLINE_AUDIT_LOG_FILE": str(stream)}, "users", "list")
    assert "TIPLINE_AUDIT_LOG_FILE" not in result.stderr  # (it stops later, at "run `tipline init`")
    # Then it is the tip line's alone
    assert stat.S_IMODE(stream.stat().st_mode) == 0o600


def test_the_audit_file_is_not_written_through_a_symlink_nor_into_a_non_file(tmp_path: Path) -> None:
    from tipline.config import ConfigError

    target = tmp_path / "elsewhere"
    target.write_text("")
    link = tmp_path / "audit.jsonl"
    link.symlink_to(target)
    fifo = tmp_path / "audit.fifo"
    os.mkfifo(fifo)
    try:
        with pytest.raises(ConfigError) as followed:
            logs.audit_stream("json", link)
        assert str(followed.value).startswith("TIPLINE_AUDIT_LOG_FILE cannot be opened:")
        assert "\n" not in str(followed.value)
        with pytest.raises(ConfigError) as special:
            logs.audit_stream("json", fifo)
        assert "TIPLINE_AUDIT_LOG_FILE" in str(special.value) and "\n" not in str(special.value)
        assert stat.S_IMODE(target.stat().st_mode) != 0o600 or target.read_text() == ""
    finally:
        logs.audit_stream()
