"""Threat: hostile text in the sign-in, enrolment and password forms breaks the console.

The attack: anyone, signed in or not, posts odd text (non-ASCII CSRF tokens such as `¿'"(` or an
emoji, NUL bytes, invalid UTF-8, digits of other scripts, very long values) into any field. A
non-ASCII CSRF token made `secrets.compare_digest` raise, so the console answered 500 before anyone
signed in; a code in Arabic-Indic digits with the right password answered 500 where a wrong password
answers 401, which told the attacker the password was right, and the attempt was neither counted
toward the lock nor audited.

What must hold: every such request is answered below 500; a CSRF token that is not the right one is
a 400; a code that is not six ASCII digits is a wrong code like any other: 401 with the same message
as every failed sign-in, counted toward the lock and audited.
"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from tests.support.console import SECRET, Person, csrf_of, person
from tests.support.harness import Harness
from tests.support.sign_in import CHEAP, attempt, client_at, post_form, use_hasher
from tipline.services import auth
from tipline.storage.models import AuditEntry, User

HOSTILE: dict[str, str | bytes] = {
    "spanish quote": "¿'\"(",
    "emoji": "🙂🔑",
    "arabic-indic digits": "١٢٣٤٥٦",
    "fullwidth digits": "１２３４５６",
    "nul": "\x00",
    "nul inside": "dana\x00",
    "right-to-left override": "\u202edana",
    "markup and sql": "<script>' OR '1'='1' --",
    "empty": "",
    "very long": "9" * 5000,
    "invalid utf-8": b"\xff\xfe\xed\xa0\x80",
    "latin-1 bytes": b"caf\xe9",
}
OTHER_DIGITS = ["١٢٣٤٥٦", "۱۲۳۴۵۶", "１２３４５６", "¹²³⁴⁵⁶", "١٢٣ ٤٥٦"]


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_hasher(monkeypatch, CHEAP)


def at_stage(tipline: Harness, username: str, stage: str, must_change: bool = False) -> Person:
    """A new account signed in up to `stage` ("enrol" or "password"), its page loaded."""
    someone = person(tipline.app, tipline.runtime.ctx, username, must_change=must_change)
    page = someone.client.get("/console/login")
    form = {"csrf_token": csrf_of(page), "username": username, "password": someone.password, "ack": "1"}
    response = someone.client.post("/console/login", data=form)
    assert response.location.endswith("/console/enrol")
    if stage == "password":
        enrol = someone.client.get("/console/enrol")
        someone.secret = SECRET.search(enrol.get_data(as_text=True)).group(1)
        response = someone.client.post(
            "/console/enrol", data={"csrf_token": csrf_of(enrol), "code": someone.next_code()}
        )
        assert response.location.endswith("/console/password")
    someone.csrf = csrf_of(someone.client.get(f"/console/{stage}"))
    return someone


def test_a_hostile_csrf_token_on_the_sign_in_form_is_a_400(tipline: Harness) -> None:
    answers = {}
    for n, (name, value) in enumerate(HOSTILE.items()):
        client = client_at(tipline.app, f"192.0.2.{100 + n}")
        client.get("/console/login")
        fields = {"csrf_token": value, "username": "dana", "password": "not the password!", "code": "1", "ack": "1"}
        answers[name] = post_form(client, "/console/login", fields).status_code
    assert answers == dict.fromkeys(HOSTILE, 400)


@pytest.mark.parametrize("cookie", ["¿'\"(", "🙂", "١٢٣٤٥٦", "x" * 4000], ids=["quote", "emoji", "digits", "long"])
def test_a_hostile_sign_in_csrf_cookie_is_a_400(tipline: Harness, cookie: str) -> None:
    client = client_at(tipline.app, "192.0.2.11")
    client.set_cookie("tipline_login_csrf", cookie, path="/console")
    fields = {"csrf_token": cookie, "username": "dana", "password": "not the password!", "code": "1", "ack": "1"}
    assert post_form(client, "/console/login", fields).status_code in (400, 401)


@pytest.mark.parametrize("field", ["username", "password", "code"])
def test_hostile_sign_in_fields_are_a_failed_sign_in(tipline: Harness, field: str) -> None:
    # One enrolled account and one client address per hostile value, so that no budget or lock
    # answers in the place of the check under test.
    answers = {}
    for n, (name, value) in enumerate(HOSTILE.items()):
        someone = person(tipline.app, tipline.runtime.ctx, f"dana{n}")
        assert someone.sign_in().location.endswith("/console/")
        fields: dict[str, str | bytes] = {
            "username": someone.username,
            "password": someone.password,
            "code": someone.next_code(),
        }
        fields[field] = value
        response = attempt(tipline.app, **fields, address=f"198.51.100.{n + 1}")
        answers[name] = (response.status_code, auth.SIGN_IN_FAILED in response.get_data(as_text=True))
    assert answers == dict.fromkeys(HOSTILE, (401, True))


@pytest.mark.parametrize("code", OTHER_DIGITS)
def test_a_code_in_other_digits_is_a_wrong_code_counted_and_audited(tipline: Harness, dana: Person, code: str) -> None:
    # Given the right password, a code of digits from another script is refused like any wrong code
    right_password = attempt(tipline.app, "dana", dana.password, code)
    wrong_password = attempt(tipline.app, "dana", "not the password!", dana.next_code())
    assert right_password.status_code == wrong_password.status_code == 401
    assert auth.SIGN_IN_FAILED in right_password.get_data(as_text=True)
    # ... counted toward the lock, and audited with its reason
    with tipline.runtime.factory() as session:
        assert session.scalars(select(User.failed_logins).where(User.username == "dana")).one() == 2
        failures = session.scalars(
            select(AuditEntry.detail)
            .where(AuditEntry.action == "auth.sign_in", AuditEntry.actor == "dana", AuditEntry.outcome == "failed")
            .order_by(AuditEntry.id)
        ).all()
    assert failures == ['{"reason":"wrong or reused code"}', '{"reason":"wrong password"}']


def test_five_codes_in_other_digits_lock_the_account(tipline: Harness, dana: Person) -> None:
    for _ in range(5):
        assert attempt(tipline.app, "dana", dana.password, "١٢٣٤٥٦").status_code == 401
    assert attempt(tipline.app, "dana", dana.password, dana.next_code()).status_code == 401  # locked
    with tipline.runtime.factory() as session:
        assert session.scalars(select(User.locked_until).where(User.username == "dana")).one() is not None


@pytest.mark.parametrize("field", ["code", "csrf_token"])
def test_hostile_enrolment_fields_never_break_the_console(tipline: Harness, field: str) -> None:
    answers = {}
    for n, (name, value) in enumerate(HOSTILE.items()):
        erin = at_stage(tipline, f"erin{n}", "enrol")
        fields: dict[str, str | bytes] = {"csrf_token": erin.csrf, "code": "000000"}
        fields[field] = value
        response = post_form(erin.client, "/console/enrol", fields)
        refused = response.status_code if field == "csrf_token" else "error=1" in response.location
        still_enrolling = erin.client.get("/console/enrol").status_code  # nothing broke
        answers[name] = (refused, still_enrolling)
    expected = (400, 200) if field == "csrf_token" else (True, 200)
    assert answers == dict.fromkeys(HOSTILE, expected)


@pytest.mark.parametrize("field", ["new_password", "both", "csrf_token"])
def test_hostile_password_change_fields_never_break_the_console(tipline: Harness, field: str) -> None:
    answers = {}
    for n, (name, value) in enumerate(HOSTILE.items()):
        erin = at_stage(tipline, f"erin{n}", "password", must_change=True)
        mine = "a password of my own"
        fields: dict[str, str | bytes] = {"csrf_token": erin.csrf, "new_password": mine, "new_password_again": mine}
        if field == "both":
            fields["new_password"] = fields["new_password_again"] = value
        else:
            fields[field] = value
        answers[name] = post_form(erin.client, "/console/password", fields).status_code
    if field == "csrf_token":
        assert answers == dict.fromkeys(HOSTILE, 400)
    else:
        assert {name: code for name, code in answers.items() if not 300 <= code < 500} == {}


def test_a_hostile_csrf_token_on_a_signed_in_form_is_a_400(tipline: Harness, dana: Person) -> None:
    answers = {
        name: post_form(dana.client, "/console/logout", {"csrf_token": value}).status_code
        for name, value in HOSTILE.items()
    }
    assert answers == dict.fromkeys(HOSTILE, 400)
    assert dana.get("/console/").status_code == 200  # still signed in


@pytest.mark.parametrize("token", ["¿'\"(", "🙂", "\x00", "x" * 1000], ids=["quote", "emoji", "nul", "long"])
def test_a_hostile_session_cookie_is_no_session(tipline: Harness, token: str) -> None:
    client = client_at(tipline.app, "192.0.2.12")
    client.set_cookie("tipline_console", token, path="/console")
    assert client.get("/console/").status_code == 302
    assert post_form(client, "/console/logout", {"csrf_token": "¿"}).status_code < 500
