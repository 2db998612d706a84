"""Threat: a session opened with a credential outlives the credential.

The attack: whoever else knew a password (the admin who read the one-time password, someone who
saw it typed) signs in with it and keeps that session after the owner replaces the password; or,
having signed in before the owner enrolled an authenticator, enrols one of their own over it.

What must hold: a password change ends every other session of the account at once, and so does
enrolling an authenticator; the session that made the change carries on.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from tests.support.console import Person, csrf_of, person
from tests.support.harness import Harness
from tests.support.sign_in import CHEAP, client_at, use_hasher
from tipline.storage.models import AuditEntry, ConsoleSession, User


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    use_hasher(monkeypatch, CHEAP)


def signed_in_sessions(tipline: Harness, username: str) -> int:
    with tipline.runtime.factory() as session:
        user_id = select(User.id).where(User.username == username).scalar_subquery()
        return session.scalar(select(func.count()).where(ConsoleSession.user_id == user_id)) or 0


def to_sign_in(response: TestResponse) -> bool:
    """Whether the console sent this browser back to the sign-in page (its session is gone)."""
    return response.status_code == 302 and response.location.split("?")[0].endswith("/console/login")


def open_session(person: Person) -> str:
    """Sign in with the password only (no authenticator yet): where the console sends the browser."""
    page = person.client.get("/console/login")
    form = {"csrf_token": csrf_of(page), "username": person.username, "password": person.password, "ack": "1"}
    return person.client.post("/console/login", data=form).location


def test_a_password_change_ends_the_accounts_other_sessions(tipline: Harness) -> None:
    # Given erin's one-time password, also read by someone else, who signs in with it on another machine
    erin = person(tipline.app, tipline.runtime.ctx, "erin", must_change=True)
    intruder = Person(client_at(tipline.app, "192.0.2.66"), "erin", password=erin.password)
    assert open_session(intruder).endswith("/console/enrol")
    # When erin signs in, enrols her authenticator and sets a password of her own
    assert erin.sign_in().location.endswith("/console/")
    # Then the intruder's session is gone and erin's carries on
    assert to_sign_in(intruder.client.get("/console/enrol"))
    assert to_sign_in(intruder.client.get("/console/password"))
    assert erin.get("/console/").status_code == 200
    assert signed_in_sessions(tipline, "erin") == 1
    with tipline.runtime.factory() as session:
        changes = session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "auth.password_change")).all()
    assert changes == ['{"other_sessions_ended":0}']  # the intruder's ended when erin enrolled, before


def test_a_password_change_ends_a_session_at_the_same_stage(tipline: Harness) -> None:
    # Given erin signed in on two machines, both past enrolment, both asked for a password of her own
    erin = person(tipline.app, tipline.runtime.ctx, "erin", must_change=True)
    office = Person(client_at(tipline.app, "192.0.2.67"), "erin", password=erin.password)
    assert open_session(office).endswith("/console/enrol")
    enrol = office.client.get("/console/enrol")
    office.secret = enrol.get_data(as_text=True).split('data-totp-secret="')[1].split('"')[0]
    response = office.client.post("/console/enrol", data={"csrf_token": csrf_of(enrol), "code": office.next_code()})
    assert response.location.endswith("/console/password")
    erin.secret, erin.last_step = office.secret, office.last_step
    # When she sets her password on the other machine
    assert erin.sign_in().location.endswith("/console/")
    # Then the office machine's session has ended
    assert to_sign_in(office.client.get("/console/password"))
    assert signed_in_sessions(tipline, "erin") == 1
    with tipline.runtime.factory() as session:
        changes = session.scalars(select(AuditEntry.detail).where(AuditEntry.action == "auth.password_change")).all()
    assert changes == ['{"other_sessions_ended":1}']


def test_a_session_opened_before_enrolment_cannot_enrol_over_it(tipline: Harness) -> None:
    # Given someone who knows dana's password signs in before she has enrolled her authenticator
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    intruder = Person(client_at(tipline.app, "192.0.2.68"), "dana")
    assert open_session(intruder).endswith("/console/enrol")
    enrol_page = intruder.client.get("/console/enrol")
    # When dana enrols hers
    assert dana.sign_in().location.endswith("/console/")
    # Then the intruder's session is gone: they cannot enrol an authenticator of their own over hers
    response = intruder.client.post("/console/enrol", data={"csrf_token": csrf_of(enrol_page), "code": "000000"})
    assert to_sign_in(response)
    assert signed_in_sessions(tipline, "dana") == 1
