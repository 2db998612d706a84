"""`tipline backup` and `tipline restore`, as an operator runs them, with tips arriving meanwhile.

The backup is taken from a real `tipline serve` while tipsters keep texting it over HTTP, restored
into a new installation (new data directory, new database, the same master key), and every tip in
it must open. The backup file itself must hold nothing a tipster sent, nor the master key.
"""

from __future__ import annotations

import base64
import html
import os
import resource
import secrets
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from alembic import command
from alembic.script import ScriptDirectory
from argon2 import PasswordHasher
from sqlalchemy import func, inspect, select

from tests.support.anonymity import phone_formats, scan_files
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import CARRIER_CITY, REPLY, inbound_form, make_harness, reference_of, sign
from tests.support.processes import TIPLINE, environment, free_port, run, spawn, wait_until_serving, workdir
from tests.support.scratch import PG_URL, scratch_database
from tipline.config import load_settings
from tipline.core.vocabulary import TipStatus
from tipline.runtime import build_runtime
from tipline.services import backup, review
from tipline.storage import db, records
from tipline.storage.models import AuditEntry, ConsoleSession, ProcessBeat, Tip, User, utcnow

WORDS = "CANARY-BACKUP a blue van unloads stolen tyres behind the bus depot"
needs_postgres = pytest.mark.skipif(not PG_URL, reason="needs TIPLINE_TEST_DATABASE_URL (PostgreSQL)")


def migrations() -> ScriptDirectory:
    """This code's Alembic migrations."""
    return ScriptDirectory.from_config(db.alembic_config(""))


def master_key_of(env: dict[str, str]) -> str:
    """The base64 master key `tipline init` wrote into the data directory."""
    return (Path(env["TIPLINE_DATA_DIR"]) / "master.key").read_text().strip()


@pytest.fixture
def fresh_database() -> Iterator[str]:
    """A second database nobody uses ("" for SQLite: the new data directory's own)."""
    with scratch_database(PG_URL) as url:
        yield url


def new_installation(tmp_path: Path, database_url: str, master_key: str, base: dict[str, str]) -> dict[str, str]:
    """Settings of another machine: its own data directory and database, the same master key."""
    home = tmp_path / f"machine-{secrets.token_hex(3)}"
    home.mkdir()
    env = {k: v for k, v in base.items() if k not in ("TIPLINE_DATABASE_URL", "TIPLINE_DATA_DIR")}
    env |= {"TIPLINE_DATA_DIR": str(home / "var"), "TIPLINE_MASTER_KEY": master_key}
    if database_url:
        env["TIPLINE_DATABASE_URL"] = database_url
    return env


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    return result.stdout


def refused(result: subprocess.CompletedProcess[str], *words: str) -> str:
    """A refusal: exit 2 and one line `tipline: ...` that contains `words`."""
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if " INFO " not in line]  # log lines aside
    assert len(lines) == 1 and lines[0].startswith("tipline: "), result.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def tips_in(env: dict[str, str]) -> dict[str, str | None]:
    """Every tip of an installation, opened: reference -> description. A submitted tip is opened as a
    detective opens it, whole thread included; a draft (still the tipster's, which no detective sees)
    through its data key."""
    runtime = build_runtime(load_settings(env))
    try:
        with runtime.factory() as session:
            tips = list(session.scalars(select(Tip)))
        opened: dict[str, str | None] = {}
        for tip in tips:
            try:
                opened[tip.reference] = review.read_tip(runtime.ctx, tip.reference, mark_read=False).what
            except review.TipNotFound:
                assert tip.status == TipStatus.DRAFT
                opened[tip.reference] = records.read_tip_field(tip, records.tip_dek(runtime.ctx.keyring, tip), "what")
        return opened
    finally:
        runtime.close()


def count(env: dict[str, str], model: type) -> int:
    runtime = build_runtime(load_settings(env))
    try:
        with runtime.factory() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)
    finally:
        runtime.close()


class Tipsters(threading.Thread):
    """Tipsters texting a real server one after another until stopped, each a whole tip (what, SKIP, SKIP)."""

    def __init__(self, base: str):
        super().__init__(daemon=True)
        self.base = base
        self.stop = threading.Event()
        self.receipts: dict[str, str] = {}  # reference -> description, once the tipster got the receipt
        self.senders: list[str] = []
        self.error: BaseException | None = None

    def say(self, sender: str, body: str) -> list[str]:
        form = inbound_form(body, sender)
        signature = sign("/webhooks/twilio/sms", form, base=self.base)
        response = requests.post(
            self.base + "/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature}, timeout=30
        )
        assert response.status_code == 200, response.text
        return [html.unescape(m) for m in REPLY.findall(response.text)]

    def run(self) -> None:
        try:
            number = 2000
            while not self.stop.is_set():
                sender, what = f"+1555555{number}", f"{WORDS} number {number}"
                self.senders.append(sender)
                self.say(sender, what)
                self.say(sender, "skip")
                self.receipts[reference_of(self.say(sender, "skip")[0])] = what
                number += 1
        except BaseException as error:  # noqa: BLE001 - reported by the test
            self.error = error

    def wait_for(self, tips: int) -> None:
        deadline = time.monotonic() + 60
        while len(self.receipts) < tips and self.error is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.error is None, repr(self.error)
        assert len(self.receipts) >= tips, "the server took no tips"

    def finish(self) -> None:
        self.stop.set()
        self.join(timeout=60)
        assert self.error is None, repr(self.error)


@pytest.fixture
def served(env: dict[str, str]) -> Iterator[tuple[str, dict[str, str]]]:
    """`tipline serve` as a real process on a free port, with the SMS channel (stand-in Twilio)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env, "TIPLINE_PUBLIC_URL": base}
    ok(run(env, "init"))
    with (workdir(env) / "serve.log").open("w") as out:
        process = spawn(env, "serve", "--port", str(port), output=out)
    try:
        wait_until_serving(base)
        yield base, env
    finally:
        process.terminate()
        process.wait(timeout=20)


def sign_in_session(env: dict[str, str]) -> None:
    """A console session in the database, as a signed-in admin leaves one."""
    runtime = build_runtime(load_settings(env))
    try:
        with runtime.factory.begin() as session:
            admin = session.scalars(select(User)).first()
            assert admin is not None
            now = utcnow()
            session.add(
                ConsoleSession(
                    id=secrets.token_hex(32),
                    user_id=admin.id,
                    stage="full",
                    csrf_token=secrets.token_hex(16),
                    created_at=now,
                    last_seen_at=now,
                )
            )
    finally:
        runtime.close()


def test_a_backup_taken_under_load_restores_into_a_new_machine_and_every_tip_opens(
    served: tuple[str, dict[str, str]],
    fresh_database: str,
    tmp_path: Path,
    twilio_server: FakeTwilio,
    log_file: Path,
) -> None:
    base, env = served
    sign_in_session(env)
    # Given tipsters texting the running server without pause
    tipsters = Tipsters(base)
    tipsters.start()
    try:
        tipsters.wait_for(4)
        before = dict(tipsters.receipts)
        # When the operator backs up meanwhile
        file = tmp_path / "backups" / "tipline-backup.db"
        file.parent.mkdir()
        summary = ok(run(env, "backup", str(file)))
        tipsters.wait_for(len(tipsters.receipts) + 2)  # and tips kept arriving during and after it
    finally:
        tipsters.finish()
    assert file.stat().st_mode & 0o777 == 0o600
    assert os.listdir(file.parent) == [file.name], "a partial or journal file was left beside the backup"
    backed_up = backup.describe(file).tips
    assert f"tips: {backed_up}, schema: {migrations().get_current_head()}" in summary
    assert backed_up >= len(before)

    # Then it restores into another machine that has only the master key
    machine = new_installation(tmp_path, fresh_database, master_key_of(env), env)
    restored = ok(run(machine, "restore", str(file)))
    assert f"{backed_up} tips" in restored
    opened = tips_in(machine)
    assert len(opened) == backed_up
    for reference, what in before.items():  # every tip receipted before the backup began is there
        assert opened[reference] == what
    sent = set(tipsters.receipts.values()) | {f"{WORDS} number {n}" for n in range(2000, 2000 + len(tipsters.senders))}
    assert set(opened.values()) <= sent  # and every tip opens to what a tipster sent
    # Nobody is signed in, no process is taken for running; the audit chain goes on, intact
    assert count(machine, ConsoleSession) == 0
    assert count(machine, ProcessBeat) == 0
    assert "audit log intact" in ok(run(machine, "audit", "verify"))
    for installation, action in ((env, "backup.create"), (machine, "backup.restore")):
        runtime = build_runtime(load_settings(installation))
        try:
            with runtime.factory() as session:
                assert (
                    session.scalars(select(AuditEntry.detail).where(AuditEntry.action == action)).one().startswith('{"')
                )
        finally:
            runtime.close()

    # And the restored tip line works on: a known tipster is recognised, a new one gets a new tip
    harness = make_harness({**machine, "TIPLINE_PUBLIC_URL": base}, twilio_server, log_file)
    try:
        reference, what = next(iter(before.items()))
        sender = tipsters.senders[list(tipsters.receipts).index(reference)]
        assert reference in harness.say("the van came back tonight", sender=sender)[0]
        new = harness.submit_tip("a second van, a red one", sender="+15555553999")
        assert new not in opened
    finally:
        harness.runtime.close()

    # And the file holds no word, number or place a tipster sent, and not the master key
    master = master_key_of(env)
    needles: list[str | bytes] = [WORDS, "stolen tyres", CARRIER_CITY, master]
    needles.append(base64.b64decode(master))
    for number in tipsters.senders:
        needles += phone_formats(number)
    assert scan_files(file.parent, needles) == []


@pytest.fixture
def installed(cli_env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    """An initialised installation with one tip, and a backup of it."""
    ok(run(cli_env, "init"))
    runtime = build_runtime(load_settings(cli_env))
    try:
        from tipline.core.channels import InboundMessage

        for body in (WORDS, "skip", "skip"):
            runtime.intake.receive(InboundMessage("sms", "+15555552999", secrets.token_hex(8), body))
    finally:
        runtime.close()
    file = tmp_path / "backup.db"
    ok(run(cli_env, "backup", str(file)))
    return cli_env, file


def nothing_written(env: dict[str, str]) -> None:
    """The installation has no database yet (SQLite) or no table in its schema (PostgreSQL)."""
    settings = load_settings(env)
    if settings.sqlite_path is not None:
        assert not settings.sqlite_path.exists()
        return
    engine = db.make_engine(settings.database_url)
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_backup_refuses_to_replace_a_file_without_force(installed: tuple[dict[str, str], Path]) -> None:
    env, file = installed
    precious = file.with_name("precious.db")
    precious.write_bytes(b"last week's backup")
    refused(run(env, "backup", str(precious)), "exists", "--force")
    assert precious.read_bytes() == b"last week's backup"
    ok(run(env, "backup", "--force", str(precious)))
    assert backup.describe(precious).tips == 1
    refused(run(env, "backup", str(file.parent / "no-such-dir" / "b.db")), "not a directory")


def test_restore_refuses_an_installation_that_is_not_empty(installed: tuple[dict[str, str], Path]) -> None:
    env, file = installed
    # Given the installation the backup came from (init ran: keys, an admin, a tip)
    line = refused(run(env, "restore", str(file)), "not empty", "new", "do not run `tipline init`")
    assert "key_versions" in line
    assert count(env, Tip) == 1


def test_restore_refuses_a_wrong_master_key_and_writes_nothing(
    installed: tuple[dict[str, str], Path], fresh_database: str, tmp_path: Path
) -> None:
    env, file = installed
    wrong = base64.b64encode(os.urandom(32)).decode()
    machine = new_installation(tmp_path, fresh_database, wrong, env)
    refused(run(machine, "restore", str(file)), "does not open", "ORIGINAL master key", "offline copy")
    nothing_written(machine)
    # No master key at all: never a new one, the message says where to put the original
    machine.pop("TIPLINE_MASTER_KEY")
    refused(run(machine, "restore", str(file)), "no master key", "master.key")
    nothing_written(machine)
    assert not Path(machine["TIPLINE_DATA_DIR"], "master.key").exists()


def test_restore_refuses_what_is_not_a_backup(
    installed: tuple[dict[str, str], Path], fresh_database: str, tmp_path: Path
) -> None:
    env, file = installed
    machine = new_installation(tmp_path, fresh_database, master_key_of(env), env)
    noise = tmp_path / "noise.db"
    noise.write_bytes(os.urandom(5000))
    plain = tmp_path / "plain.db"
    sqlite3.connect(plain).execute("CREATE TABLE t (x)").connection.close()
    for path in (noise, plain, tmp_path / "missing.db"):
        refused(run(machine, "restore", str(path)), str(path))
        nothing_written(machine)
    # A backup from a newer tipline (a schema revision this code does not know)
    newer = tmp_path / "newer.db"
    newer.write_bytes(file.read_bytes())
    with sqlite3.connect(newer) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
        connection.execute("UPDATE tipline_backup SET value = '9999' WHERE key = 'revision'")
    connection.close()
    refused(run(machine, "restore", str(newer)), "newer tipline", "9999")
    nothing_written(machine)
    # The real one goes in
    ok(run(machine, "restore", str(file)))
    assert list(tips_in(machine).values()) == [WORDS]


def altered_copies(file: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """Copies of a genuine backup, each altered as someone holding the file (not the master key) can."""
    hasher = PasswordHasher()
    alterations: dict[str, str | Callable[[sqlite3.Connection], None]] = {
        # The review's attack: a detective account whose password the attacker knows, without 2fa
        "an added detective": "INSERT INTO users (username, password_hash, roles, disabled, must_change_password, "
        "totp_secret_ct, totp_last_step, failed_logins, created_at, alerts) VALUES ('eve', '"
        + hasher.hash("eve knows this password")
        + "', 'detective', 0, 0, NULL, 0, 0, '2026-12-01 10:00:00', 'urgent')",
        "one byte of a ciphertext": flip_a_ciphertext_byte,
        "an audit entry deleted": "DELETE FROM audit_log WHERE id = (SELECT max(id) FROM audit_log)",
        "a trigger added": "CREATE TRIGGER t AFTER INSERT ON tips BEGIN DELETE FROM audit_log; END",
        "a table added": "CREATE TABLE extra (x)",
        "its tag removed": "DELETE FROM tipline_backup WHERE key = 'authentication'",
    }
    for name, statement in alterations.items():
        copy = tmp_path / f"altered-{secrets.token_hex(3)}.db"
        copy.write_bytes(file.read_bytes())
        with sqlite3.connect(copy, isolation_level=None) as connection:
            if callable(statement):
                statement(connection)
            else:
                connection.execute(statement)
            assert connection.total_changes or "CREATE" in str(statement), name
        connection.close()
        yield name, copy


def flip_a_ciphertext_byte(connection: sqlite3.Connection) -> None:
    """One bit of the tip's encrypted description, in the middle of its ciphertext."""
    tip_id, blob = connection.execute("SELECT id, what_ct FROM tips WHERE what_ct IS NOT NULL").fetchone()
    flipped = bytearray(blob)
    flipped[len(flipped) // 2] ^= 0x01
    connection.execute("UPDATE tips SET what_ct = ? WHERE id = ?", (bytes(flipped), tip_id))


def test_restore_refuses_an_altered_backup_and_writes_nothing(
    installed: tuple[dict[str, str], Path], fresh_database: str, tmp_path: Path
) -> None:
    env, file = installed
    machine = new_installation(tmp_path, fresh_database, master_key_of(env), env)
    for name, altered in altered_copies(file, tmp_path):
        line = refused(run(machine, "restore", str(altered)), "altered", "another master key", "nothing")
        assert "Traceback" not in line, name
        nothing_written(machine)
    # A backup authenticated under another master key (its keys open under this one): refused too
    foreign = tmp_path / "foreign.db"
    foreign.write_bytes(file.read_bytes())
    backup.authenticate(foreign, os.urandom(32))
    refused(run(machine, "restore", str(foreign)), "altered", "another master key")
    nothing_written(machine)
    # The genuine backup goes in, and the operator sees who can sign in
    restored = ok(run(machine, "restore", str(file)))
    assert "accounts restored" in restored
    assert [line.split()[:2] for line in restored.splitlines() if line.startswith("  ")] == [["admin", "admin"]]
    assert "2fa not enrolled" in restored
    assert "$argon2" not in restored
    assert "eve" not in ok(run(machine, "users", "list"))


def test_a_backup_never_writes_through_a_link_planted_beside_it(
    installed: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """Whoever can write the backups' directory plants links where a backup writes its work."""
    env, _ = installed
    shared = tmp_path / "shared"
    shared.mkdir()
    victim = tmp_path / "victim.db"
    victim.write_bytes(b"the live database")
    victim.chmod(0o644)
    (shared / "b.db.partial").symlink_to(victim)
    others = tmp_path / "others"  # a link named like what a killed backup leaves, to someone's directory
    others.mkdir()
    (others / "keep").write_bytes(b"keep me")
    (shared / ".b.db.partial-planted").symlink_to(others)
    ok(run(env, "backup", str(shared / "b.db")))
    assert victim.read_bytes() == b"the live database"
    assert victim.stat().st_mode & 0o777 == 0o644
    assert (others / "keep").read_bytes() == b"keep me"
    assert backup.describe(shared / "b.db").tips == 1
    assert sorted(os.listdir(shared)) == [".b.db.partial-planted", "b.db", "b.db.partial"]


def run_limited(env: dict[str, str], *args: str, file_size: int) -> subprocess.CompletedProcess[str]:
    """`tipline ARGS` with the kernel refusing to let it write any file past `file_size` bytes: a disk
    that fills up in the middle of the work."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size, file_size))

    return subprocess.run(
        [*TIPLINE, *args],
        env=environment(env),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir(env),
        preexec_fn=limit,
    )


def test_a_backup_that_fails_midway_leaves_no_file(installed: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, file = installed
    target = tmp_path / "shelf" / "tonight.db"
    target.parent.mkdir()
    # When the disk fills up part of the way into the copy (the file would need ~280 kB)
    result = run_limited(env, "backup", str(target), file_size=64 * 1024)
    refused(result, "backup failed", "nothing was written")
    # Then neither the backup nor a piece of it is there, and the next backup works
    assert os.listdir(target.parent) == []
    # (and clears what a backup killed earlier left: its private directory, a piece of file in it)
    leftover = target.parent / f".{target.name}.partial-killed"
    leftover.mkdir(mode=0o700)
    (leftover / target.name).write_bytes(b"SQLite format 3\0 half a copy")
    ok(run(env, "backup", str(target)))
    assert os.listdir(target.parent) == [target.name]


@needs_postgres
def test_a_backup_killed_midway_leaves_no_file(installed: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    """SIGKILL while the copy waits for a table another session holds locked (PostgreSQL: the copy
    reads table by table inside its snapshot, so it stops half-way). SQLite's backup API copies in
    one step that is too quick to catch; its failure path is tested above."""
    import psycopg
    from sqlalchemy.engine import make_url

    env, _ = installed
    target = tmp_path / "shelf" / "tonight.db"
    target.parent.mkdir()
    url = make_url(env["TIPLINE_DATABASE_URL"])
    schema = url.query["options"].split("=", 1)[1]
    conninfo = url.set(drivername="postgresql", query={}).render_as_string(hide_password=False)
    with psycopg.connect(conninfo) as locker:
        locker.execute(f"SET search_path TO {schema}")
        locker.execute("LOCK TABLE tips IN ACCESS EXCLUSIVE MODE")
        process = spawn(env, "backup", str(target))
        deadline = time.monotonic() + 60
        while not (partial := list(target.parent.glob(f".{target.name}.partial-*/{target.name}"))):
            assert time.monotonic() < deadline, "the backup never started its file"
            time.sleep(0.05)
        time.sleep(1.0)  # the copy has reached the locked table and waits there
        assert process.poll() is None, "the backup did not wait for the locked table"
        assert partial[0].stat().st_size > 0  # some tables are already in the file
        assert partial[0].parent.stat().st_mode & 0o777 == 0o700  # in a directory nobody else can enter
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        locker.rollback()
    assert not target.exists()
    ok(run(env, "backup", str(target)))
    assert os.listdir(target.parent) == [target.name]


@needs_postgres
def test_a_postgresql_backup_restores_into_sqlite(installed: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, file = installed
    assert backup.describe(file).source == "postgresql"
    machine = new_installation(tmp_path, "", master_key_of(env), env)
    ok(run(machine, "restore", str(file)))
    assert load_settings(machine).sqlite_path is not None
    assert list(tips_in(machine).values()) == [WORDS]
    assert "audit log intact" in ok(run(machine, "audit", "verify"))


def test_a_backup_from_an_older_release_is_upgraded_as_it_is_restored(
    installed: tuple[dict[str, str], Path], fresh_database: str, tmp_path: Path
) -> None:
    env, file = installed
    # Given a backup at the previous schema revision (this one, migrated one step down)
    scripts = migrations()
    head = scripts.get_current_head()
    previous = scripts.get_revision(head).down_revision
    assert isinstance(previous, str)
    older = tmp_path / "older.db"
    older.write_bytes(file.read_bytes())
    command.downgrade(db.alembic_config(f"sqlite:///{older}"), previous)
    with sqlite3.connect(older, isolation_level=None) as connection:
        connection.execute("PRAGMA journal_mode=DELETE")
        connection.execute("UPDATE tipline_backup SET value = ? WHERE key = 'revision'", (previous,))
    connection.close()
    backup.authenticate(older, base64.b64decode(master_key_of(env)))  # as that release sealed it
    # When it is restored, Then the schema is upgraded to this release's, and the tip opens
    machine = new_installation(tmp_path, fresh_database, master_key_of(env), env)
    assert f"schema: {previous}, upgraded to {head}" in ok(run(machine, "restore", str(older)))
    assert list(tips_in(machine).values()) == [WORDS]


@pytest.mark.skipif(
    bool(PG_URL), reason="the disk that fills up is the SQLite database's own (PostgreSQL's is the server's)"
)
def test_a_restore_that_failed_midway_can_run_again(installed: tuple[dict[str, str], Path], tmp_path: Path) -> None:
    env, file = installed
    machine = new_installation(tmp_path, "", master_key_of(env), env)
    # Given a restore that the disk stopped part of the way (the database needs ~300 kB)
    failed = run_limited(machine, "restore", str(file), file_size=200 * 1024)
    refused(failed, "restore failed", "run it again")
    # When it runs again, Then it finishes, and the tip opens
    ok(run(machine, "restore", str(file)))
    assert list(tips_in(machine).values()) == [WORDS]
    assert "audit log intact" in ok(run(machine, "audit", "verify"))


def test_a_site_takes_a_backup_on_its_old_schema_before_it_upgrades(
    installed: tuple[dict[str, str], Path], fresh_database: str, tmp_path: Path
) -> None:
    env, _ = installed
    # Given an installation still at an older release's schema (its tip written, `init` not yet run)
    older = "0012"
    command.downgrade(db.alembic_config(load_settings(env).database_url), older)
    refused(run(env, "dispatch", "--once"), "run `tipline init` to upgrade")  # the code will not run on it
    # When the administrator takes the backup the README's "Upgrading" starts with
    file = tmp_path / "pre-upgrade.db"
    assert f"schema: {older}" in ok(run(env, "backup", str(file)))
    # Then it restores into a new machine (upgraded as it is restored), and the tip opens
    machine = new_installation(tmp_path, fresh_database, master_key_of(env), env)
    assert f"schema: {older}, upgraded to {migrations().get_current_head()}" in ok(run(machine, "restore", str(file)))
    assert list(tips_in(machine).values()) == [WORDS]
    # And the old installation itself still upgrades with `init` afterwards
    ok(run(env, "init"))
    assert list(tips_in(env).values()) == [WORDS]
