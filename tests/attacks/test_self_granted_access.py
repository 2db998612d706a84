"""Threat: one administrator gives themselves access to tips.

An admin who is not a detective cannot read tips, by design. But the console let that admin create
a detective account, showed its one-time password, and so let them sign in as a detective. What
must hold: in the console an admin creates and manages admin accounts only. Nothing in the console
grants the detective role or hands over a detective account (a new account with that role, a reset
of a detective's authenticator): each attempt is refused with a plain message and audited, and no
new detective can sign in. Granting the detective role takes a shell on the server
(`tipline users add NAME --role detective`), audited with the actor "cli".
"""

from __future__ import annotations

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


@pytest.fixture
def alex(tipline: Harness) -> Person:
    admin = person(tipline.app, tipline.runtime.ctx, "alex", roles=("admin",))
    assert admin.sign_in().location.endswith("/console/admin/users")
    admin.get("/console/admin/users")
    return admin


@pytest.fixture
def dana(tipline: Harness) -> Person:
    detective = person(tipline.app, tipline.runtime.ctx, "dana")
    assert detective.sign_in().location.endswith("/console/")
    return detective


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
    for action in ("roles", "grant", "add-role", "reset-password", "password", "promote", "impersonate"):
        assert alex.post(f"/console/admin/users/dana/{action}", {"role": "detective"}).status_code == 404, action
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
