"""Fixtures: a fresh database (SQLite, or a PostgreSQL schema when TIPLINE_TEST_DATABASE_URL is
set), a stand-in Twilio server, and the tip line initialised and served through its WSGI app
(`tipline`; `tg` with Telegram too). The helpers they use live in tests/support."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import fake_telegram, fake_twilio
from tests.support.console import Person, person
from tests.support.harness import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    LINE_NUMBER,
    PUBLIC_URL,
    Harness,
    make_harness,
    telegram_harness,
)
from tests.support.scratch import PG_URL, scratch_database
from tests.support.sign_in import CHEAP, use_hasher
from tests.support.template import Templates, templates
from tipline.services import rotation
from tipline.storage import db


def pytest_report_header() -> str:
    return f"tipline database: {'PostgreSQL (' + PG_URL + ')' if PG_URL else 'SQLite'}"


@pytest.fixture
def database_url() -> Iterator[str]:
    """A database nobody else uses: SQLite in the data directory (""), or a fresh PostgreSQL schema."""
    with scratch_database(PG_URL) as url:
        yield url


@pytest.fixture
def twilio_server() -> Iterator[fake_twilio.FakeTwilio]:
    fake, server = fake_twilio.start(ACCOUNT_SID, AUTH_TOKEN)
    yield fake
    server.shutdown()
    server.server_close()


@pytest.fixture
def env(
    tmp_path: Path, database_url: str, twilio_server: fake_twilio.FakeTwilio, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    for name in ("TWILIO_REGION", "TWILIO_EDGE"):
        monkeypatch.delenv(name, raising=False)
    values = {
        "TIPLINE_DATA_DIR": str(tmp_path / "var"),
        "TIPLINE_PUBLIC_URL": PUBLIC_URL,
        "TIPLINE_AGENCY_NAME": "Example City Police",
        "TIPLINE_NON_EMERGENCY_NUMBER": "555-0199",
        "TIPLINE_SANDBOX": "1",
        "TIPLINE_PROVIDER_DELETE_DELAY_SECONDS": "0",
        "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "TWILIO_FROM_NUMBER": LINE_NUMBER,
        "TWILIO_API_BASE_URL": twilio_server.url,
    }
    if database_url:
        values["TIPLINE_DATABASE_URL"] = database_url
    return values


@pytest.fixture
def cli_env(env: dict[str, str]) -> dict[str, str]:
    """The settings an operator's shell has for the `tipline` command (no Twilio account needed)."""
    return {k: v for k, v in env.items() if not k.startswith("TWILIO_")}


@pytest.fixture
def log_file(tmp_path: Path) -> Iterator[Path]:
    """Every log record of every logger, at every level, captured to a file for the anonymity scan."""
    path = tmp_path / "logs" / "all.log"
    path.parent.mkdir()
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield path
    root.removeHandler(handler)
    root.setLevel(previous)
    handler.close()


@pytest.fixture
def tg(
    env: dict[str, str], twilio_server: fake_twilio.FakeTwilio, log_file: Path
) -> Iterator[tuple[Harness, fake_telegram.FakeTelegram]]:
    with telegram_harness(env, twilio_server, log_file) as pair:
        yield pair


@pytest.fixture
def tipline(env: dict[str, str], twilio_server: fake_twilio.FakeTwilio, log_file: Path) -> Iterator[Harness]:
    harness = make_harness(env, twilio_server, log_file)
    yield harness
    harness.runtime.close()


@pytest.fixture
def dana(tipline: Harness) -> Person:
    """A detective, signed in in her own browser (her authenticator enrolled)."""
    detective = person(tipline.app, tipline.runtime.ctx, "dana")
    assert detective.sign_in().location.endswith("/console/")
    return detective


@pytest.fixture
def alex(tipline: Harness) -> Person:
    """An administrator who is not a detective, signed in on the accounts page."""
    admin = person(tipline.app, tipline.runtime.ctx, "alex", roles=("admin",))
    assert admin.sign_in().location.endswith("/console/admin/users")
    admin.get("/console/admin/users")
    return admin


@pytest.fixture(scope="session")
def migrated_template() -> Iterator[Templates]:
    with templates(db.upgrade) as made:
        yield made


@pytest.fixture(autouse=True)
def quick_init(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, migrated_template: Templates) -> None:
    """A test's `tipline init` copies a database the real migrations built once this session
    (tests/support/template.py) instead of running them again; `real_migrations` tests run them.
    Processes started by tests (`tipline init`) always run the migrations."""
    if request.node.get_closest_marker("real_migrations") is None:
        monkeypatch.setattr(db, "upgrade", migrated_template.upgrade)


@pytest.fixture(autouse=True)
def cheap_password_hashing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Console passwords are hashed in-process with argon2id at its smallest cost: what the tests
    check is which code runs, not how long it takes (tests that need another hasher set their own;
    processes started by tests keep the real parameters)."""
    use_hasher(monkeypatch, CHEAP)


@pytest.fixture(autouse=True)
def quick_key_propagation(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process rotations finish without waiting out the propagation window (5 s in production).

    The tests of that window set it back (tests/attacks/test_key_lifecycle.py); processes started
    by tests (`tipline keys rotate`) keep the real window.
    """
    monkeypatch.setattr(rotation, "PROPAGATION", dt.timedelta(0))
