"""Upgrades and start-up as an agency's IT person meets them: `tipline --version`, a schema behind
(or ahead of) the code, a lost or wrong master key, an unreachable PostgreSQL, where the data
directory is, and what `make run` installs. Every case drives the real `tipline` command: a
refusal is exit status 2 and one line that says what to do, never a traceback."""

from __future__ import annotations

import base64
import os
import re
import secrets
import subprocess
import time
import tomllib
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path

import pytest
import requests
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from sqlalchemy import text

from tests.support.processes import TIPLINE, environment, free_port, run, spawn, wait_until_serving, workdir
from tests.support.scratch import PG_URL
from tipline.config import load_settings
from tipline.storage import db

ROOT = Path(__file__).resolve().parent.parent
OLD_REVISION = "0012"  # a release's schema from before 0.3 (migrations are never removed)
CANARY_PASSWORD = "canary-pw-" + secrets.token_hex(4)  # must never appear in any message


@pytest.fixture
def operator_env(cli_env: dict[str, str]) -> dict[str, str]:
    """An operator's settings for `serve`: no sandbox, so nothing but the start-up checks can refuse."""
    return {**cli_env, "TIPLINE_SANDBOX": "0", "TIPLINE_PUBLIC_URL": "http://127.0.0.1:8000"}


def refusal(result: subprocess.CompletedProcess[str], status: int = 2) -> str:
    """The one `tipline:` line a refused command printed (alembic may log above it), checked for form.

    2 is a refusal a person must act on; 75 (EX_TEMPFAIL) a database that could not be reached,
    which systemd's units try again (deploy/*.service: RestartPreventExitStatus=2)."""
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("tipline: ")]
    assert len(lines) == 1, result.stderr
    return lines[0]


def set_revision(env: dict[str, str], revision: str) -> None:
    engine = db.make_engine(load_settings(env).database_url)
    try:
        with engine.begin() as connection:
            connection.execute(text("UPDATE alembic_version SET version_num = :r"), {"r": revision})
    finally:
        engine.dispose()


def revision_of(env: dict[str, str]) -> str | None:
    engine = db.make_engine(load_settings(env).database_url)
    try:
        return db.schema_state(engine).current
    finally:
        engine.dispose()


def start_serve(env: dict[str, str], out: Path, cwd: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`tipline serve` in the background (from `cwd`, else beside the data directory), answering HTTP;
    its output goes to `out`."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**env, "TIPLINE_PUBLIC_URL": base}
    with out.open("w") as output:
        if cwd is None:
            process = spawn(env, "serve", "--port", str(port), output=output)
        else:
            command = [*TIPLINE, "serve", "--port", str(port)]
            process = subprocess.Popen(command, env=environment(env), cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
    wait_until_serving(base, log=out, healthy=False, process=process)
    return process, base


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=20)


# --- the version and the schema it needs ------------------------------------------------------


def test_version_names_the_release_and_the_schema_revision_it_needs(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"tipline {version('tipline')} (schema {db.head_revision()})\n"


def test_the_installed_version_is_the_one_in_pyproject_and_the_changelog() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert version("tipline") == declared, "reinstall (`make` does it when pyproject.toml changes)"
    newest = re.search(r"^## (\d+\.\d+)", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    assert newest is not None
    assert declared.startswith(newest.group(1) + "."), (declared, newest.group(1))


# --- a schema behind or ahead of the code ----------------------------------------------------------


def test_serve_and_dispatch_refuse_a_schema_behind_the_code_until_init_upgrades_it(
    operator_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a database left at an older release's schema
    settings = load_settings(operator_env)
    settings.data_dir.mkdir(parents=True)
    db.upgrade(settings.database_url, OLD_REVISION)
    head = db.head_revision()
    expected = f"tipline: the database schema is at {OLD_REVISION} but this tipline needs {head}: run `tipline init`"
    # When the new code starts, it refuses, saying what to run
    for args in (("serve", "--port", str(free_port())), ("dispatch",), ("users", "list")):
        assert refusal(run(operator_env, *args)) == expected + " to upgrade"
    # Then `init` upgrades it and says so, and serve starts on it
    upgraded = run(operator_env, "init")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"schema: upgraded from {OLD_REVISION} to {head}" in upgraded.stdout
    assert revision_of(operator_env) == head
    process, base = start_serve(operator_env, tmp_path / "serve.log")
    try:
        assert requests.get(base + "/healthz", timeout=5).status_code in (200, 503)
    finally:
        stop(process)
    assert f"schema: {head}, up to date" in run(operator_env, "init").stdout


def test_a_database_from_a_newer_tipline_is_refused_and_left_untouched(operator_env: dict[str, str]) -> None:
    assert run(operator_env, "init").returncode == 0
    set_revision(operator_env, "9999")  # a migration this code does not have: a newer release ran `init`
    for args in (("serve", "--port", str(free_port())), ("dispatch",), ("init",)):
        line = refusal(run(operator_env, *args))
        assert "the database schema is at 9999" in line
        assert "this tipline is older than the database" in line
    assert revision_of(operator_env) == "9999"  # init did not try to "upgrade" it


# --- the master key ------------------------------------------------------------------------------


def test_init_says_where_the_master_key_is_and_to_keep_a_copy_offline(cli_env: dict[str, str]) -> None:
    first = run(cli_env, "init")
    assert first.returncode == 0, first.stderr
    key_file = Path(cli_env["TIPLINE_DATA_DIR"]) / "master.key"
    assert (
        f"master key: {key_file.resolve()} (keep a copy OFFLINE, apart from the database and its backups"
        in first.stdout
    )
    assert f"data directory: {Path(cli_env['TIPLINE_DATA_DIR']).resolve()}" in first.stdout
    from_env = {**cli_env, "TIPLINE_MASTER_KEY": key_file.read_text().strip()}
    again = run(from_env, "init")
    assert again.returncode == 0, again.stderr
    assert "master key: from TIPLINE_MASTER_KEY (keep a copy OFFLINE" in again.stdout


def test_a_missing_master_key_points_at_the_offline_backup_and_init_makes_no_new_one(
    operator_env: dict[str, str],
) -> None:
    # Given an installation whose master.key was lost (a new disk, a restored database alone)
    assert run(operator_env, "init").returncode == 0
    key_file = Path(operator_env["TIPLINE_DATA_DIR"]) / "master.key"
    kept = key_file.read_bytes()
    key_file.unlink()
    # When serve, dispatch and init start, each says the same thing: restore it; init will not mint one
    for args in (("serve", "--port", str(free_port())), ("dispatch",), ("init",)):
        line = refusal(run(operator_env, *args))
        assert "the master key is missing" in line
        assert "restore master.key (or TIPLINE_MASTER_KEY) from the OFFLINE backup" in line
        assert "`tipline init` will not make a new one" in line
    assert not key_file.exists()
    # Then putting the backup back is all it takes
    key_file.write_bytes(kept)
    key_file.chmod(0o600)
    assert run(operator_env, "users", "list").returncode == 0


def test_a_wrong_master_key_opens_nothing_and_says_so(operator_env: dict[str, str]) -> None:
    assert run(operator_env, "init").returncode == 0
    wrong = {**operator_env, "TIPLINE_MASTER_KEY": base64.b64encode(os.urandom(32)).decode()}
    for args in (("serve", "--port", str(free_port())), ("init",)):
        line = refusal(run(wrong, *args))
        assert "is not the key this database's keys are wrapped under, so nothing would open" in line
        assert "from the OFFLINE backup" in line


# --- an unreachable PostgreSQL ----------------------------------------------------------------------


def unreachable_cases() -> list[tuple[str, str]]:
    cases = [(f"postgresql+psycopg://postgres:{CANARY_PASSWORD}@127.0.0.1:{free_port()}/test", "Connection refused")]
    if PG_URL:  # the same server the tests use, under a database name it does not have
        server = PG_URL.split("://", 1)[1].split("@", 1)[1].split("/", 1)[0]
        missing = f"tipline_missing_{secrets.token_hex(3)}"
        cases.append(
            (
                f"postgresql+psycopg://postgres:{CANARY_PASSWORD}@{server}/{missing}",
                f'database "{missing}" does not exist',
            )
        )
    return cases


@pytest.mark.parametrize("url,cause", unreachable_cases())
def test_an_unreachable_postgresql_says_why_without_the_password(
    operator_env: dict[str, str], url: str, cause: str
) -> None:
    env = {**operator_env, "TIPLINE_DATABASE_URL": url}
    for args in (("init",), ("serve", "--port", str(free_port())), ("dispatch",)):
        result = run(env, *args)
        line = refusal(result, status=75)  # try again later: the database may come back by itself
        assert line.startswith("tipline: cannot reach the database: connection to server at"), line
        assert cause in line
        assert line.endswith("check TIPLINE_DATABASE_URL"), line
        assert CANARY_PASSWORD not in result.stderr + result.stdout


# --- the data directory ----------------------------------------------------------------------------


def tipline_in(cwd: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`tipline ARGS` run from `cwd`, as systemd runs it (from `/` unless the unit says otherwise)."""
    return subprocess.run([*TIPLINE, *args], env=environment(env), cwd=cwd, capture_output=True, text=True, timeout=120)


def test_the_data_directory_follows_systemds_state_directory_and_every_command_names_it(
    operator_env: dict[str, str], tmp_path: Path
) -> None:
    # Given a systemd unit with StateDirectory=tipline (and a second one), and no TIPLINE_DATA_DIR
    state, cwd = tmp_path / "state" / "tipline", tmp_path / "elsewhere"
    state.mkdir(parents=True, mode=0o700)
    cwd.mkdir()
    env = {k: v for k, v in operator_env.items() if k != "TIPLINE_DATA_DIR"}
    env["STATE_DIRECTORY"] = f"{state}:{tmp_path / 'state' / 'other'}"
    # When init runs from another directory, the keys go to the state directory, never ./var
    result = tipline_in(cwd, env, "init")
    assert result.returncode == 0, result.stderr
    assert f"data directory: {state}\n" in result.stdout
    assert (state / "master.key").exists()
    assert not (cwd / "var").exists()
    # Then dispatch and serve say the directory they use when they start
    log = tmp_path / "dispatch.log"
    with log.open("w") as out:
        dispatcher = subprocess.Popen(
            [*TIPLINE, "dispatch"], env=environment(env), cwd=cwd, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while "dispatching for channels" not in log.read_text() and time.monotonic() < deadline:
            assert dispatcher.poll() is None, log.read_text()
            time.sleep(0.1)
        assert f"data directory: {state}\n" in log.read_text()
    finally:
        stop(dispatcher)
    process, _ = start_serve(env, tmp_path / "serve.log", cwd=cwd)
    stop(process)
    assert f"data directory: {state}\n" in (tmp_path / "serve.log").read_text()


def test_tipline_data_dir_wins_over_the_state_directory(cli_env: dict[str, str], tmp_path: Path) -> None:
    env = {**cli_env, "STATE_DIRECTORY": str(tmp_path / "state")}
    result = run(env, "init")
    assert result.returncode == 0, result.stderr
    assert f"data directory: {Path(cli_env['TIPLINE_DATA_DIR']).resolve()}\n" in result.stdout
    assert not (tmp_path / "state").exists()
    assert workdir(cli_env) == tmp_path  # the fixture's layout, which the other assertions rely on


# --- what `make run` installs -----------------------------------------------------------------------


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every distribution `pip install -e .` brings, with its installed version (extras followed as asked)."""
    found: dict[str, str] = {}
    seen: set[tuple[str, frozenset[str]]] = set()
    pending = [(r, "") for r in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker is not None and not requirement.marker.evaluate({"extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        if (name, frozenset(requirement.extras)) in seen:
            continue
        seen.add((name, frozenset(requirement.extras)))
        try:
            installed = distribution(requirement.name)
        except PackageNotFoundError:
            pytest.fail(f"{requirement.name} is required but not installed")
        found[name] = installed.version
        for line in installed.requires or []:
            child = Requirement(line)
            for wanted in requirement.extras or {""}:
                pending.append((child, wanted))
    return found


def test_make_run_installs_no_test_or_lint_tool_and_meets_the_security_floors() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    main = [Requirement(line) for line in project["dependencies"]]
    installed = closure(main)
    for requirement in main:  # what is installed here meets every floor (waitress, requests, flask, pillow...)
        assert requirement.specifier.contains(installed[canonicalize_name(requirement.name)], prereleases=True), str(
            requirement
        )
    tools = {
        canonicalize_name(Requirement(line).name)
        for extra in ("test", "lint")
        for line in project["optional-dependencies"][extra]
    }
    tools |= {"pytest", "playwright", "aiosmtpd", "axe-playwright-python", "pypdf", "ruff", "mypy"}
    assert not tools & installed.keys(), tools & installed.keys()
    floors = {canonicalize_name(r.name): r.specifier for r in main}
    assert floors["waitress"].contains("3.0.2") and not floors["waitress"].contains("3.0.1")
    assert floors["requests"].contains("2.32.4") and not floors["requests"].contains("2.32.3")
    assert "click" in floors
    assert {"license": project["license"], "files": project["license-files"]} == {
        "license": "AGPL-3.0-or-later",
        "files": ["LICENSE"],
    }
    assert "GNU AFFERO GENERAL PUBLIC LICENSE" in (ROOT / "LICENSE").read_text()
