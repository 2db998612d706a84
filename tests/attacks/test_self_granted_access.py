"""Threat: one administrator gives themselves access to tips.

An admin who is not a detective cannot read tips, by design. But the console let that admin create
a detective account, showed its one-time password, and so let them sign in as a detective. What
must hold: in the console an admin creates and manages admin accounts only. Nothing in the console
grants the detective role or hands over a detective account (a new account with that role, a reset
of a detective's authenticator): each attempt is refused with a plain message and audited, and no
new detective can sign in. Granting the detective role takes a shell on the server
(`tipline users add NAME --role detective`), audited with the actor "cli".

An admin may still reset an admin-only account's password and authenticator in the console (they
read the one-time password), and the console shows the command that makes such an account a
detective. So granting the role on the command line renews the account's credentials: whoever knew
them before keeps no way in to the tips.
"""

from __future__ import annotations

import html
import json
import re

import pytest
from sqlalchemy import select

from tests.support.console import Person, person
from tests.support.harness import Harness
from tests.support.processes import run
from tipline.storage.models import AuditEntry, User

SHELL_ONLY = "only on the server's command line"
ONE_TIME_PASSWORD = re.compile(r'class="one-time-password">([^<]+)<')
PRINTED_PASSWORD = re.compile(r"one-time password: (\S+)")


def audited(tipline: Harness, actor: str) -> list[tuple[str, str | None, str, dict[str, object]]]:
    with tipline.runtime.factory() as session:
        entries = session.scalars(
            select(AuditEntry)
            .where(AuditEntry.actor == actor, AuditEntry.action.like("user.%"))
            .order_by(AuditEntry.id)
        )
        return [(e.action, e.object_id, e.outcome, json.loads(e.detail)) for e in entries]


def usernames(tipline: Harness) -> set[str]:
    with tipline.runtime.factory() as session:
        return set(session.scalars(select(User.username)))


@pytest.mark.parametrize(
    "roles",
    [["detective"], ["admin", "detective"], ["detective", "admin"]],
    ids=["detective", "admin-and-detective", "detective-and-admin"],
)
def test_an_admin_cannot_create_a_detective_in_the_console(tipline: Harness, alex: Person, roles: list[str]) -> None:
    # When the admin asks the console for a new detective account
    response = alex.client.post(
        "/console/admin/users", data={"csrf_token": alex.csrf, "username": "mallory", "roles": roles}
    )
    # Then it is refused, plainly, and no one-time password is shown
    page = response.get_data(as_text=True)
    assert response.status_code == 403
    assert SHELL_ONLY in page
    assert "tipline users add mallory --role detective" in page
    assert ONE_TIME_PASSWORD.search(page) is None
    assert "mallory" not in usernames(tipline)
    # and the attempt is in the audit log
    assert audited(tipline, "alex") == [("user.create", "mallory", "refused", {"roles": sorted(roles)})]
    # and nobody signs in as that detective
    assert Person(tipline.app.test_client(), "mallory").sign_in().status_code == 401


def test_an_admin_cannot_reset_a_detectives_authenticator_in_the_console(
    tipline: Harness, alex: Person, dana: Person
) -> None:
    response = alex.post("/console/admin/users/dana/reset-2fa")
    assert response.status_code == 403
    assert SHELL_ONLY in response.get_data(as_text=True)
    assert "tipline users reset-2fa dana" in response.get_data(as_text=True)
    with tipline.runtime.factory() as session:
        assert session.scalars(select(User).where(User.username == "dana")).one().totp_secret_ct is not None
    assert audited(tipline, "alex") == [("user.reset-2fa", "dana", "refused", {})]
    # The detective's own session is untouched
    assert dana.get("/console/").status_code == 200


def test_no_other_console_route_hands_over_an_account(tipline: Harness, alex: Person, dana: Person) -> None:
    for action in ("roles", "grant", "add-role", "password", "promote", "impersonate"):
        assert alex.post(f"/console/admin/users/dana/{action}", {"role": "detective"}).status_code == 404, action
    # Resetting a detective's password is the command line's (the console refuses it, audited)
    assert alex.post("/console/admin/users/dana/reset-password").status_code == 403
    # The names the audit log gives the command line and setup cannot be taken by a console account
    for reserved in ("cli", "init"):
        refused = alex.post("/console/admin/users", {"username": reserved, "roles": "admin"})
        assert reserved not in usernames(tipline)
        assert refused.status_code in (302, 400)
    # What an admin may still do to a detective neither reveals nor resets a credential
    for action in ("unlock", "disable", "enable"):
        assert alex.post(f"/console/admin/users/dana/{action}").status_code == 302
    with tipline.runtime.factory() as session:
        user = session.scalars(select(User).where(User.username == "dana")).one()
        assert user.totp_secret_ct is not None
        assert user.roles == "detective"


def test_admins_still_create_admins_in_the_console(tipline: Harness, alex: Person) -> None:
    created = alex.post("/console/admin/users", {"username": "ops", "roles": "admin"})
    assert created.status_code == 200
    password = ONE_TIME_PASSWORD.search(created.get_data(as_text=True))
    assert password is not None
    ops = Person(tipline.app.test_client(), "ops", password=password.group(1))
    assert ops.sign_in().location.endswith("/console/admin/users")
    assert ops.get("/console/").status_code == 403  # an admin, not a detective
    assert audited(tipline, "alex") == [("user.create", "ops", "ok", {"roles": ["admin"]})]


def test_the_command_line_grants_the_detective_role_and_the_log_says_so(
    tipline: Harness, cli_env: dict[str, str]
) -> None:
    added = run(cli_env, "users", "add", "sam", "--role", "detective")
    assert added.returncode == 0, added.stderr
    password = re.search(r"one-time password: (\S+)", added.stdout)
    assert password is not None
    sam = Person(tipline.app.test_client(), "sam", password=password.group(1))
    assert sam.sign_in().location.endswith("/console/")
    assert sam.get("/console/").status_code == 200
    assert audited(tipline, "cli") == [("user.create", "sam", "ok", {"roles": ["detective"]})]
    reset = run(cli_env, "users", "reset-2fa", "sam")
    assert reset.returncode == 0, reset.stderr
    assert audited(tipline, "cli")[-1] == ("user.reset-2fa", "sam", "ok", {})


@pytest.mark.parametrize("start", ["admin-only", "detective-role-removed"])
def test_an_admin_who_took_over_an_account_loses_it_when_the_shell_makes_it_a_detective(
    tipline: Harness, cli_env: dict[str, str], alex: Person, start: str
) -> None:
    # Given bob, an admin-only account (or a chief whose detective role alex has just removed)
    bob = person(
        tipline.app, tipline.runtime.ctx, "bob", roles=("admin",) if start == "admin-only" else ("detective", "admin")
    )
    if start == "detective-role-removed":
        assert alex.post("/console/admin/users/bob/remove-detective").status_code == 302
    # When alex resets bob's authenticator and password in the console (allowed: bob reads no tips)
    assert alex.post("/console/admin/users/bob/reset-2fa").status_code == 302
    reset = alex.post("/console/admin/users/bob/reset-password")
    known = ONE_TIME_PASSWORD.search(reset.get_data(as_text=True))
    assert known is not None
    # and signs in as bob, enrolling an authenticator of their own and choosing bob's password
    as_bob = Person(tipline.app.test_client(), "bob", password=known.group(1))
    assert as_bob.sign_in().location.endswith("/console/admin/users")
    # and IT runs the command the accounts page shows for making bob a detective
    page = html.unescape(alex.get("/console/admin/users").get_data(as_text=True))
    command = re.search(r"<code>tipline (users set bob [^<]*)</code>", page)
    assert command is not None, page
    assert "renews their password and authenticator" in page
    granted = run(cli_env, *command.group(1).split())
    assert granted.returncode == 0, granted.stderr
    # Then the output says bob's credentials were renewed, and gives the new one-time password
    assert "bob now holds detective: their password and authenticator were reset" in granted.stdout
    renewed = PRINTED_PASSWORD.search(granted.stdout)
    assert renewed is not None, granted.stdout
    # And alex's session as bob has ended, and what alex knows no longer signs in as bob
    assert as_bob.client.get("/console/").status_code == 302
    assert as_bob.sign_in().status_code == 401
    assert Person(tipline.app.test_client(), "bob", password=known.group(1)).sign_in().status_code == 401
    # While the new one-time password does, with a new authenticator enrolled, and reads tips
    reference = tipline.submit_tip()
    bob = Person(tipline.app.test_client(), "bob", password=renewed.group(1))
    assert bob.sign_in().location.endswith("/console/")
    assert bob.secret is not None and bob.secret != as_bob.secret
    assert bob.get(f"/console/tips/{reference}").status_code == 200
    assert [entry[:3] for entry in audited(tipline, "cli")] == [
        ("user.roles", "bob", "ok"),
        ("user.reset-password", "bob", "ok"),
        ("user.reset-2fa", "bob", "ok"),
    ]


def test_giving_a_detective_the_admin_role_on_the_command_line_renews_nothing(
    tipline: Harness, cli_env: dict[str, str], dana: Person
) -> None:
    # A detective keeps the credentials nobody else saw: the grant is of the admin role only
    granted = run(cli_env, "users", "set", "dana", "--role", "detective", "--role", "admin")
    assert granted.returncode == 0, granted.stderr
    assert PRINTED_PASSWORD.search(granted.stdout) is None
    assert dana.sign_in().location.endswith("/console/")
    assert [entry[0] for entry in audited(tipline, "cli")] == ["user.roles"]


@pytest.mark.parametrize("action", ["reset-password", "remove-admin", "disable"])
def test_capital_letters_do_not_make_your_own_account_someone_elses(
    tipline: Harness, alex: Person, action: str
) -> None:
    person(tipline.app, tipline.runtime.ctx, "ops", roles=("admin",))  # so alex is not the last admin
    response = alex.post(f"/console/admin/users/ALEX/{action}")
    assert response.status_code == 302
    assert "your own" in alex.get(response.location).get_data(as_text=True)
    assert ONE_TIME_PASSWORD.search(response.get_data(as_text=True)) is None
    with tipline.runtime.factory() as session:
        user = session.scalars(select(User).where(User.username == "alex")).one()
        assert user.roles == "admin" and not user.disabled
    assert audited(tipline, "alex") == []
    assert alex.get("/console/admin/users").status_code == 200
