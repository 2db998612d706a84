"""Getting people back in, as the agency's IT person does it: on the server's command line (the real
`tipline` command) and in the console's accounts page (over HTTP).

What must hold: a reset password is a one-time password the person replaces at the next sign-in,
and every session the account had ends at once; a role change ends the account's sessions, so a
demoted detective loses the tips at the very next request, and the detective role granted again
comes with a new password and authenticator; the console may take the detective role
away or reset an admin-only account's password, never grant the role or reset a detective's
password (refused and audited); the installation always keeps an active administrator; a password
change ends the account's other sessions and not the one that made it. And a client cannot get
past the sign-in throttle by changing address within its IPv6 /64.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from sqlalchemy import select

from tests.attacks import test_proxy_spoofing as proxied
from tests.support.console import Person, csrf_of, person
from tests.support.harness import Harness
from tests.support.processes import run
from tests.support.sign_in import CHEAP, attempt, client_at, use_hasher
from tipline.services import auth
from tipline.setup import FIRST_ADMIN
from tipline.storage.models import AuditEntry, User

ONE_TIME = re.compile(r"one-time password: (\S+)")
ONE_TIME_ON_PAGE = re.compile(r'class="one-time-password">([^<]+)<')
SHELL_ONLY = "only on the server's command line"
NEW_PASSWORD = "a passphrase of my very own"


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_hasher(monkeypatch, CHEAP)


def another_browser(tipline: Harness, someone: Person, password: str, address: str = "192.0.2.80") -> Person:
    """`someone` in a browser of their own, with their authenticator and `password`."""
    return Person(client_at(tipline.app, address), someone.username, password, someone.secret, someone.last_step)


def password_step(someone: Person) -> str:
    """Sign in with password and code, without following the console: where it sends the browser."""
    page = someone.client.get("/console/login")
    form = {
        "csrf_token": csrf_of(page),
        "username": someone.username,
        "password": someone.password,
        "code": someone.next_code(),
        "ack": "1",
    }
    response = someone.client.post("/console/login", data=form)
    assert response.status_code == 302, response.status_code
    return str(response.location)


def change_password(someone: Person, new: str = NEW_PASSWORD) -> str:
    """Replace a one-time password on the console's password page: where it sends the browser."""
    page = someone.client.get("/console/password")
    assert page.status_code == 200
    form = {"csrf_token": csrf_of(page), "new_password": new, "new_password_again": new}
    response = someone.client.post("/console/password", data=form)
    assert response.status_code == 302, response.get_data(as_text=True)
    someone.password = new
    return str(response.location)


def signed_out(someone: Person, path: str = "/console/") -> bool:
    """Whether the console sends this browser back to the sign-in page (its session is gone)."""
    response = someone.client.get(path)
    return response.status_code == 302 and response.location.split("?")[0].endswith("/console/login")


def audited(tipline: Harness, action: str) -> list[tuple[str | None, str | None, str, dict[str, object]]]:
    """(actor, account, outcome, detail) of each audit entry of `action`, oldest first."""
    with tipline.runtime.factory() as session:
        entries = session.scalars(select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id))
        return [(e.actor, e.object_id, e.outcome, json.loads(e.detail or "{}")) for e in entries]


def account(tipline: Harness, username: str) -> User:
    with tipline.runtime.factory() as session:
        return session.scalars(select(User).where(User.username == username)).one()


def tipline_ok(cli_env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    done = run(cli_env, *args, stdin=stdin)
    assert done.returncode == 0, done.stderr
    return done.stdout


# Resetting a password on the command line -----------------------------------------------------------


def test_a_reset_password_is_one_time_and_ends_every_session_at_once(
    tipline: Harness, cli_env: dict[str, str], dana: Person
) -> None:
    # Given dana signed in on two machines (each code is accepted once: the browsers share the count)
    office = another_browser(tipline, dana, dana.password)
    assert office.sign_in().location.endswith("/console/")
    reference = tipline.submit_tip()
    assert dana.get(f"/console/tips/{reference}").status_code == 200
    # When she forgets her password and the IT person resets it
    said = tipline_ok(cli_env, "users", "reset-password", "dana")
    one_time = ONE_TIME.search(said)
    assert one_time is not None, said
    assert "session" in said
    # Then both her sessions have ended at once
    assert signed_out(dana, f"/console/tips/{reference}")
    assert signed_out(office)
    # and her old password no longer signs in
    assert attempt(tipline.app, "dana", dana.password, address="192.0.2.81").status_code == 401
    # and the one-time password (with her authenticator, which stays) leads to the password page only
    back = another_browser(tipline, office, one_time.group(1), address="192.0.2.82")
    assert password_step(back).endswith("/console/password")
    assert back.client.get(f"/console/tips/{reference}").status_code == 302
    assert change_password(back).endswith("/console/")
    assert back.get(f"/console/tips/{reference}").status_code == 200
    assert not account(tipline, "dana").must_change_password
    assert audited(tipline, "user.reset-password") == [
        ("cli", "dana", "ok", {"must_change": True, "sessions_ended": 2})
    ]


def test_a_reset_releases_a_lock_and_takes_a_password_from_stdin(
    tipline: Harness, cli_env: dict[str, str], dana: Person
) -> None:
    # Given dana locked herself out with wrong passwords
    for _ in range(auth.MAX_FAILURES):
        attempt(tipline.app, "dana", "not her password at all", address="192.0.2.83")
    assert account(tipline, "dana").locked_until is not None
    # When the IT person sets a password she chose, read from standard input
    said = tipline_ok(cli_env, "users", "reset-password", "dana", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert ONE_TIME.search(said) is None
    # Then the lock is released and that password signs her straight in: nothing to replace
    back = another_browser(tipline, dana, NEW_PASSWORD, address="192.0.2.84")
    assert password_step(back).endswith("/console/")
    assert audited(tipline, "user.reset-password")[-1] == (
        "cli",
        "dana",
        "ok",
        {"must_change": False, "sessions_ended": 1},
    )


@pytest.mark.parametrize(
    ("args", "stdin", "says"),
    [
        (("users", "reset-password", "nobody"), None, "tipline: no user nobody"),
        (("users", "reset-password", "dana", "--password-stdin"), "short\n", "at least 12 characters"),
        (("users", "enable", "nobody"), None, "tipline: no user nobody"),
        (("users", "set", "dana"), None, "tipline: nothing to change"),
        (("users", "set", "dana", "--role", "chief"), None, "'chief' is not one of"),
    ],
    ids=["unknown-account", "short-password", "enable-unknown", "set-nothing", "unknown-role"],
)
def test_bad_account_commands_say_why_in_one_line(
    tipline: Harness, cli_env: dict[str, str], args: tuple[str, ...], stdin: str | None, says: str
) -> None:
    person(tipline.app, tipline.runtime.ctx, "dana")
    done = run(cli_env, *args, stdin=stdin)
    assert done.returncode == 2
    assert says in done.stderr
    assert "Traceback" not in done.stderr
    assert audited(tipline, "user.reset-password") == []


# Enabling an account again ---------------------------------------------------------------------------------


def test_a_disabled_account_is_enabled_on_the_command_line(
    tipline: Harness, cli_env: dict[str, str], dana: Person
) -> None:
    # Given dana's account disabled (her session ends with it), then her password reset
    tipline_ok(cli_env, "users", "disable", "dana")
    assert signed_out(dana)
    said = tipline_ok(cli_env, "users", "reset-password", "dana")
    assert "tipline users enable dana" in said  # the reset says the account still cannot sign in
    one_time = ONE_TIME.search(said)
    assert one_time is not None
    back = another_browser(tipline, dana, one_time.group(1), address="192.0.2.85")
    assert attempt(tipline.app, "dana", back.password, back.next_code(), client=back.client).status_code == 401
    # When the account is enabled
    assert tipline_ok(cli_env, "users", "enable", "dana").strip() == "enabled dana"
    # Then she signs in again
    assert password_step(back).endswith("/console/password")
    assert "dana" in tipline_ok(cli_env, "users", "list")
    assert [entry[:3] for entry in audited(tipline, "user.enable")] == [("cli", "dana", "ok")]


# Roles -------------------------------------------------------------------------------------------------------


def test_a_demoted_detective_loses_the_tips_at_the_next_request(tipline: Harness, cli_env: dict[str, str]) -> None:
    # Given dana, detective and admin, reading a tip
    dana = person(tipline.app, tipline.runtime.ctx, "dana", roles=("detective", "admin"))
    assert dana.sign_in().location.endswith("/console/")
    reference = tipline.submit_tip()
    assert dana.get(f"/console/tips/{reference}").status_code == 200
    # When the command line leaves her the admin role only
    said = tipline_ok(cli_env, "users", "set", "dana", "--role", "admin")
    assert said.startswith("dana: roles admin")
    # Then her open session ends at once, and signed in again she cannot read tips
    assert signed_out(dana, f"/console/tips/{reference}")
    assert dana.sign_in().location.endswith("/console/admin/users")
    assert dana.get(f"/console/tips/{reference}").status_code == 403
    assert dana.get("/console/").status_code == 403
    # And given the role back, on the command line only, with new credentials (whoever reset her
    # admin-only account's in the console meanwhile must not follow her in), she reads them again
    said = tipline_ok(cli_env, "users", "set", "dana", "--role", "detective", "--role", "admin", "--alerts", "none")
    one_time = ONE_TIME.search(said)
    assert one_time is not None, said
    assert signed_out(dana, "/console/admin/users")
    assert dana.sign_in().status_code == 401  # her old password and authenticator are gone
    back = Person(client_at(tipline.app, "192.0.2.89"), "dana", one_time.group(1))
    assert back.sign_in().location.endswith("/console/")  # after enrolling again and choosing a password
    assert back.get(f"/console/tips/{reference}").status_code == 200
    assert audited(tipline, "user.roles") == [
        ("cli", "dana", "ok", {"before": ["detective", "admin"], "after": ["admin"]}),
        ("cli", "dana", "ok", {"before": ["admin"], "after": ["detective", "admin"]}),
    ]
    assert [entry[:3] for entry in audited(tipline, "user.reset-password") + audited(tipline, "user.reset-2fa")] == [
        ("cli", "dana", "ok"),
        ("cli", "dana", "ok"),
    ]


def test_the_installation_keeps_an_active_administrator(tipline: Harness, cli_env: dict[str, str]) -> None:
    # Given the administrator `tipline init` made is the only one
    for command in (("users", "set", FIRST_ADMIN, "--role", "detective"), ("users", "disable", FIRST_ADMIN)):
        refused = run(cli_env, *command)
        assert refused.returncode == 2
        assert "no active administrator left" in refused.stderr
    assert account(tipline, FIRST_ADMIN).roles == "admin"
    assert not account(tipline, FIRST_ADMIN).disabled
    # A disabled admin does not count: with alex disabled, the first admin is still the last
    person(tipline.app, tipline.runtime.ctx, "alex", roles=("admin",))
    tipline_ok(cli_env, "users", "disable", "alex")
    assert run(cli_env, "users", "disable", FIRST_ADMIN).returncode == 2
    # With another active admin, either may go
    tipline_ok(cli_env, "users", "enable", "alex")
    tipline_ok(cli_env, "users", "set", FIRST_ADMIN, "--role", "detective")
    assert run(cli_env, "users", "set", "alex", "--role", "detective").returncode == 2
    assert audited(tipline, "user.roles") == [("cli", FIRST_ADMIN, "ok", {"before": ["admin"], "after": ["detective"]})]


# Roles in the console ---------------------------------------------------------------------------------------


def test_the_console_refuses_to_grant_the_detective_role_and_says_so(tipline: Harness, alex: Person) -> None:
    # Given sam, an admin-only account
    sam = person(tipline.app, tipline.runtime.ctx, "sam", roles=("admin",))
    page = alex.get("/console/admin/users").get_data(as_text=True)
    assert "/console/admin/users/sam/grant-detective" not in page  # nothing offers it
    assert "tipline users set sam --role detective --role admin" in page
    # When alex forges the request anyway
    response = alex.post("/console/admin/users/sam/grant-detective")
    # Then it is refused, plainly, and audited, and sam is no detective
    assert response.status_code == 403
    assert SHELL_ONLY in response.get_data(as_text=True)
    assert "tipline users set sam --role detective --role admin" in response.get_data(as_text=True)
    assert account(tipline, "sam").roles == "admin"
    assert audited(tipline, "user.roles") == [
        ("alex", "sam", "refused", {"before": ["admin"], "after": ["detective", "admin"]})
    ]
    assert sam.sign_in().location.endswith("/console/admin/users")
    assert sam.get("/console/").status_code == 403


def test_the_console_takes_the_detective_role_away_at_once(tipline: Harness, alex: Person) -> None:
    # Given dana, detective and admin, reading a tip
    dana = person(tipline.app, tipline.runtime.ctx, "dana", roles=("detective", "admin"))
    assert dana.sign_in().location.endswith("/console/")
    reference = tipline.submit_tip()
    assert dana.get(f"/console/tips/{reference}").status_code == 200
    # When alex removes her detective role (asked first, on a page of its own)
    users = alex.get("/console/admin/users").get_data(as_text=True)
    assert 'href="/console/admin/users/dana/remove-detective"' in users
    question = alex.get("/console/admin/users/dana/remove-detective")
    assert "Remove dana's detective role?" in html.unescape(question.get_data(as_text=True))
    done = alex.post("/console/admin/users/dana/remove-detective")
    assert done.status_code == 302
    said = html.unescape(alex.get(done.location).get_data(as_text=True))
    assert "dana is no longer a detective; their sessions ended." in said
    # Then her session has ended, and signed in again she cannot read tips
    assert signed_out(dana, f"/console/tips/{reference}")
    assert dana.sign_in().location.endswith("/console/admin/users")
    assert dana.get(f"/console/tips/{reference}").status_code == 403
    assert audited(tipline, "user.roles") == [
        ("alex", "dana", "ok", {"before": ["detective", "admin"], "after": ["admin"]})
    ]


def test_the_console_grants_and_removes_the_admin_role(tipline: Harness, alex: Person, dana: Person) -> None:
    # The admin role hands no tips to anyone: the console may grant it, to a detective too
    assert alex.post("/console/admin/users/dana/grant-admin").status_code == 302
    assert account(tipline, "dana").roles == "detective admin"
    assert signed_out(dana)
    assert dana.sign_in().location.endswith("/console/")
    assert dana.get("/console/admin/users").status_code == 200
    assert alex.post("/console/admin/users/dana/remove-admin").status_code == 302
    assert account(tipline, "dana").roles == "detective"
    assert signed_out(dana, "/console/admin/users")
    # An account keeps one role at least: one that should not sign in is disabled instead
    refused = alex.post("/console/admin/users/dana/remove-detective")
    assert "disable the account instead" in alex.get(refused.location).get_data(as_text=True)
    assert account(tipline, "dana").roles == "detective"
    assert [entry[3]["after"] for entry in audited(tipline, "user.roles")] == [["detective", "admin"], ["detective"]]


def test_an_admin_cannot_demote_or_disable_themselves_in_the_console(tipline: Harness, alex: Person) -> None:
    for action in ("remove-admin", "disable"):
        response = alex.post(f"/console/admin/users/alex/{action}")
        assert response.status_code == 302
        assert "your own" in alex.get(response.location).get_data(as_text=True)
    assert account(tipline, "alex").roles == "admin"
    assert not account(tipline, "alex").disabled
    assert alex.get("/console/admin/users").status_code == 200
    assert audited(tipline, "user.roles") == []


# Password changes -----------------------------------------------------------------------------------------


def test_a_password_change_ends_the_other_session_and_keeps_this_one(
    tipline: Harness, cli_env: dict[str, str], dana: Person
) -> None:
    # Given dana's password reset, and her signed in with the one-time password on two machines
    one_time = ONE_TIME.search(tipline_ok(cli_env, "users", "reset-password", "dana"))
    assert one_time is not None
    here = another_browser(tipline, dana, one_time.group(1), address="192.0.2.86")
    there = another_browser(tipline, dana, one_time.group(1), address="192.0.2.87")
    assert password_step(there).endswith("/console/password")
    here.last_step = there.last_step
    assert password_step(here).endswith("/console/password")
    there.last_step = here.last_step
    # When she chooses her own password here
    assert change_password(here).endswith("/console/")
    # Then the session there has ended, and this one carries on
    assert signed_out(there, "/console/password")
    assert here.get("/console/").status_code == 200
    assert audited(tipline, "auth.password_change")[-1][3] == {"other_sessions_ended": 1}


# Resetting a password in the console ------------------------------------------------------------------------


def test_the_console_resets_an_admins_password_and_shows_it_once(tipline: Harness, alex: Person) -> None:
    # Given ops, an admin-only account, signed in
    ops = person(tipline.app, tipline.runtime.ctx, "ops", roles=("admin",))
    assert ops.sign_in().location.endswith("/console/admin/users")
    # When alex resets ops's password (asked first)
    question = alex.get("/console/admin/users/ops/reset-password")
    assert "Reset ops's password?" in html.unescape(question.get_data(as_text=True))
    response = alex.post("/console/admin/users/ops/reset-password")
    # Then the page shows the one-time password, ops's session has ended, and it leads to the password page
    assert response.status_code == 200
    one_time = ONE_TIME_ON_PAGE.search(response.get_data(as_text=True))
    assert one_time is not None
    assert signed_out(ops, "/console/admin/users")
    back = another_browser(tipline, ops, one_time.group(1), address="192.0.2.88")
    assert password_step(back).endswith("/console/password")
    assert audited(tipline, "user.reset-password") == [
        ("alex", "ops", "ok", {"must_change": True, "sessions_ended": 1})
    ]
    # and the password is on that response only
    assert one_time.group(1) not in alex.get("/console/admin/users").get_data(as_text=True)


def test_the_console_refuses_to_reset_a_detectives_password(tipline: Harness, alex: Person, dana: Person) -> None:
    page = alex.get("/console/admin/users").get_data(as_text=True)
    assert "tipline users reset-password dana" in page
    assert 'href="/console/admin/users/dana/reset-password"' not in page
    before = account(tipline, "dana").password_hash
    response = alex.post("/console/admin/users/dana/reset-password")
    assert response.status_code == 403
    assert SHELL_ONLY in response.get_data(as_text=True)
    assert "tipline users reset-password dana" in response.get_data(as_text=True)
    assert ONE_TIME_ON_PAGE.search(response.get_data(as_text=True)) is None
    assert account(tipline, "dana").password_hash == before
    assert audited(tipline, "user.reset-password") == [("alex", "dana", "refused", {})]
    assert dana.get("/console/").status_code == 200  # her session is untouched
    # Nor may an admin reset their own here
    own = alex.post("/console/admin/users/alex/reset-password")
    assert "your own password" in alex.get(own.location).get_data(as_text=True)


# The sign-in throttle and IPv6 clients ---------------------------------------------------------------------


def test_an_ipv6_client_cannot_escape_the_sign_in_throttle_by_changing_address(cli_env: dict[str, str]) -> None:
    # An IPv6 client has a whole /64 to itself and picks any address in it at will: the throttle
    # (20 attempts a minute per client, tipline/services/auth.py) counts the /64, behind the proxy too
    with proxied.served(cli_env, trusted="127.0.0.1") as (base, admin_password):
        # Given a client failing sign-in from a new address of its /64 each time
        statuses = proxied.wrong_passwords_until_throttled(base, forwarded=lambda n: f"2001:db8:5:6::{n + 1:x}")
        # Then it is throttled after its 20 attempts all the same
        assert statuses[: proxied.BUDGET] == [401] * proxied.BUDGET and statuses[-1] == 429, statuses
        assert proxied.sign_in(base, "nobody", "x", forwarded="2001:db8:5:6:ffff:1:2:3") == 429
        # while a client in the next /64 signs in
        assert proxied.sign_in(base, "admin", admin_password, forwarded="2001:db8:5:7::1") == 302


def test_an_ipv4_address_written_as_ipv6_is_the_ipv4_client_it_names(tipline: Harness) -> None:
    # (waitress reads no such address from X-Forwarded-For, but a dual-stack socket reports them)
    def tries(client: str, n: int = 0) -> type[Exception]:
        """How a failed sign-in from `client` is refused (a new unknown name each time: no name's budget runs out)."""
        with pytest.raises((auth.SignInFailed, auth.TooManyAttempts)) as refused:
            auth.sign_in(tipline.runtime.ctx, f"nobody{n}", "not the password!", "", client=client)
        return refused.type

    budget = auth.Policy.per_address
    assert [tries("203.0.113.5", n) for n in range(budget)] == [auth.SignInFailed] * budget
    assert tries("::ffff:203.0.113.5") is auth.TooManyAttempts
    assert tries("::ffff:cb00:7105", 1) is auth.TooManyAttempts  # the same address in hexadecimal
    assert tries("203.0.113.6", 2) is auth.SignInFailed  # its neighbour is another client
