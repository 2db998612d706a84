"""The review console over HTTP: sign-in, roles, CSRF, sessions, triage, replies, audit, anonymity."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import select, update

from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.console import PASSWORD, Person, person
from tests.support.harness import CARRIER_CITY, CARRIER_ZIP, REFERENCE, TIPSTER, Harness, new_sid
from tipline.services import audit, auth
from tipline.storage.models import AuditEntry, ConsoleSession, Tip, User

CONSOLE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def submit_tip(tipline: Harness, text: str = "A man sells stolen bikes from a blue garage on Birch Rd", sender: str = TIPSTER) -> str:
    tipline.say(text, sender=sender)
    tipline.say("skip", sender=sender)
    return REFERENCE.search(tipline.say("skip", sender=sender)[0]).group(0)


@pytest.fixture
def detective(tipline: Harness) -> Person:
    dana = person(tipline.app, tipline.runtime.factory, "dana")
    assert dana.sign_in().location.endswith("/console/")
    return dana


@pytest.fixture
def admin(tipline: Harness) -> Person:
    alex = person(tipline.app, tipline.runtime.factory, "alex", roles=("admin",))
    assert alex.sign_in().location.endswith("/console/admin/users")
    return alex


def console_routes(tipline: Harness) -> list[tuple[str, str]]:
    routes = []
    for rule in tipline.app.url_map.iter_rules():
        if rule.rule.startswith("/console") and rule.endpoint not in ("console.login", "console.login_submit", "console.logout", "console.root"):
            path = re.sub(r"<[^>]+>", "x", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.append((method, path))
    return routes


def test_every_console_route_requires_a_session(tipline: Harness) -> None:
    routes = console_routes(tipline)
    assert len(routes) >= 15
    for method, path in routes:
        response = tipline.client.open(path, method=method)
        if path.startswith("/console/api/"):
            assert response.status_code == 401, (method, path)
        else:
            assert response.status_code == 302 and response.location.endswith("/console/login"), (method, path)


def test_every_console_route_declares_its_role(tipline: Harness) -> None:
    for rule in tipline.app.url_map.iter_rules():
        if rule.endpoint.startswith("console.") and rule.endpoint not in (
            "console.login", "console.login_submit", "console.logout", "console.root", "console.static"
        ):
            view = tipline.app.view_functions[rule.endpoint]
            assert hasattr(view, "console_role"), rule.endpoint
            if "/admin/" in rule.rule:
                assert view.console_role == "admin", rule.endpoint
            elif rule.rule.startswith(("/console/tips", "/console/api", "/console/")) and rule.rule not in (
                "/console/enrol", "/console/password"
            ):
                assert view.console_role == "detective", rule.endpoint


def test_first_sign_in_enrols_totp_and_shows_the_secret_as_text(tipline: Harness) -> None:
    dana = person(tipline.app, tipline.runtime.factory, "dana", must_change=True)
    response = dana.sign_in()
    assert response.location.endswith("/console/")
    assert dana.secret and len(dana.secret) >= 32
    with tipline.runtime.factory() as session:
        user = session.scalars(select(User).where(User.username == "dana")).one()
        assert user.totp_secret_ct and dana.secret.encode() not in user.totp_secret_ct
        assert not user.must_change_password and user.password_hash.startswith("$argon2id$")


def test_a_correct_password_without_the_code_is_refused_once_enrolled(tipline: Harness, detective: Person) -> None:
    fresh = Person(tipline.app.test_client(), "dana", password=detective.password)
    response = fresh.sign_in(code="")
    assert response.status_code == 401 and "Check your username, password and code" in response.get_data(as_text=True)


def test_a_totp_code_is_accepted_once(tipline: Harness, detective: Person) -> None:
    code = detective.next_code()
    first = Person(tipline.app.test_client(), "dana", password=detective.password)
    assert first.sign_in(code=code).status_code == 302
    second = Person(tipline.app.test_client(), "dana", password=detective.password)
    assert second.sign_in(code=code).status_code == 401


def test_errors_never_say_which_factor_was_wrong(tipline: Harness, detective: Person) -> None:
    wrong_password = Person(tipline.app.test_client(), "dana").sign_in(code=detective.next_code(), password="not the password!")
    wrong_code = Person(tipline.app.test_client(), "dana", password=detective.password).sign_in(code="000000")
    unknown = Person(tipline.app.test_client(), "nobody").sign_in(code="123456")
    bodies = {r.get_data(as_text=True).split("<main>")[1].split('name="csrf_token"')[0] for r in (wrong_password, wrong_code, unknown)}
    assert len(bodies) == 1 and {r.status_code for r in (wrong_password, wrong_code, unknown)} == {401}


def test_five_failures_lock_the_account_before_any_hashing(tipline: Harness, detective: Person, admin: Person,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for _ in range(5):
        assert Person(tipline.app.test_client(), "dana").sign_in(code="000000", password="wrong password!!").status_code == 401
    hashes = []
    real_verify = auth._verify_password
    monkeypatch.setattr(auth, "_verify_password", lambda *a: hashes.append(1) or real_verify(*a))
    locked = Person(tipline.app.test_client(), "dana", password=detective.password, secret=detective.secret,
                    last_step=detective.last_step)
    assert locked.sign_in().status_code == 401
    assert hashes == []  # refused before argon2 ran
    detective.last_step = locked.last_step
    admin.get("/console/admin/users")
    assert admin.post("/console/admin/users/dana/unlock").status_code == 302
    assert Person(tipline.app.test_client(), "dana", password=detective.password, secret=detective.secret,
                  last_step=detective.last_step).sign_in().status_code == 302


def test_sign_in_attempts_are_budgeted_per_client(tipline: Harness) -> None:
    statuses = [Person(tipline.app.test_client(), "nobody").sign_in(code="1", password="x" * 12).status_code for _ in range(21)]
    assert statuses[:20] == [401] * 20 and statuses[20] == 429


def test_a_post_without_the_csrf_token_is_refused(tipline: Harness, detective: Person) -> None:
    reference = submit_tip(tipline)
    detective.get(f"/console/tips/{reference}")
    assert detective.post(f"/console/tips/{reference}/note", {"text": "forged"}, csrf=False).status_code == 400
    assert detective.post(f"/console/tips/{reference}/note", {"text": "forged", "csrf_token": "x" * 43}, csrf=False).status_code == 400
    login_page = tipline.client.get("/console/login")
    assert login_page.status_code == 200
    forged_login = tipline.app.test_client().post("/console/login", data={"username": "dana", "password": "x", "ack": "1"})
    assert forged_login.status_code == 400


def test_roles_are_enforced(tipline: Harness, detective: Person, admin: Person) -> None:
    reference = submit_tip(tipline)
    for path in ("/console/admin/users", "/console/admin/keys", "/console/admin/audit"):
        assert detective.get(path).status_code == 403
    assert detective.post("/console/admin/users/dana/disable").status_code == 403
    for path in ("/console/", f"/console/tips/{reference}", f"/console/api/tips/{reference}/thread", "/console/api/changes"):
        assert admin.get(path).status_code == 403, path


def idle(tipline: Harness, minutes: int) -> None:
    """Pretend every console session has been idle for `minutes` more."""
    with tipline.runtime.factory.begin() as session:
        for record in session.scalars(select(ConsoleSession)):
            record.last_seen_at -= dt.timedelta(minutes=minutes)


def test_idle_sessions_end(tipline: Harness, detective: Person) -> None:
    assert detective.get("/console/").status_code == 200
    idle(tipline, minutes=16)
    response = detective.get("/console/")
    assert response.status_code == 302 and "expired=1" in response.location
    assert "inactivity" in detective.client.get(response.location).get_data(as_text=True)


def test_polling_does_not_keep_an_idle_session_alive(tipline: Harness, detective: Person) -> None:
    idle(tipline, minutes=10)
    assert detective.get("/console/api/changes").status_code == 200
    idle(tipline, minutes=6)
    assert detective.get("/console/").status_code == 302


def test_sessions_end_after_their_lifetime_even_when_busy(tipline: Harness, detective: Person) -> None:
    with tipline.runtime.factory.begin() as session:
        for record in session.scalars(select(ConsoleSession)):
            record.created_at -= dt.timedelta(hours=12, seconds=1)
    assert detective.get("/console/").status_code == 302


def test_sign_out_ends_the_session_for_good(tipline: Harness, detective: Person) -> None:
    detective.get("/console/")
    cookie = detective.client.get_cookie("tipline_console", path="/console").value
    assert detective.post("/console/logout").location.endswith("/console/login")
    replay = tipline.app.test_client()
    replay.set_cookie("tipline_console", cookie, path="/console")
    assert replay.get("/console/").status_code == 302


def test_disabling_an_account_ends_its_sessions_at_once(tipline: Harness, detective: Person, admin: Person) -> None:
    assert detective.get("/console/").status_code == 200
    admin.get("/console/admin/users")
    admin.post("/console/admin/users/dana/disable")
    assert detective.get("/console/").status_code == 302


def test_a_detective_reads_triages_replies_and_notes(tipline: Harness, detective: Person) -> None:
    reference = submit_tip(tipline)
    tipline.say("They come back every night around midnight")
    listing = detective.get("/console/").get_data(as_text=True)
    assert reference in listing and "1 new" in listing and "Tipster " in listing
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "A man sells stolen bikes" in page and "They come back every night" in page
    assert "1 new" not in detective.get("/console/").get_data(as_text=True)  # reading clears the count

    detective.get(f"/console/tips/{reference}")
    with tipline.runtime.factory() as session:
        dana_id = session.scalars(select(User.id).where(User.username == "dana")).one()
    response = detective.post(f"/console/tips/{reference}/triage", {"status": "in_review", "category": "property", "assignee": str(dana_id)})
    assert "Saved" in detective.get(response.location).get_data(as_text=True)
    with tipline.runtime.factory() as session:
        tip = session.scalars(select(Tip)).one()
        assert (tip.status, tip.category, tip.assignee_id) == ("in_review", "property", dana_id)
    assert reference in detective.get(f"/console/?assignee={dana_id}").get_data(as_text=True)
    assert reference not in detective.get("/console/?assignee=none").get_data(as_text=True)
    assert reference in detective.get("/console/?status=in_review&category=property").get_data(as_text=True)
    assert reference not in detective.get("/console/?status=closed").get_data(as_text=True)

    detective.get(f"/console/tips/{reference}")
    detective.post(f"/console/tips/{reference}/reply", {"text": "Which garage number is it?"})
    detective.get(f"/console/tips/{reference}")
    detective.post(f"/console/tips/{reference}/note", {"text": "Check against burglary case 24-1187"})
    tipline.dispatch()
    assert tipline.twilio.sent[-1]["Body"] == "Example City Police: Which garage number is it?"
    assert tipline.twilio.sent[-1]["To"] == TIPSTER
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "Reply by dana" in page and "Internal note by dana" in page and ">sent<" in page
    assert tipline.status_callback(tipline.twilio.sent[-1]["_sid"], "delivered").status_code == 200
    assert ">delivered<" in detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert len(tipline.twilio.sent) == 1  # the note was never sent


def test_replies_impossible_are_said_plainly(tipline: Harness, detective: Person) -> None:
    reference = submit_tip(tipline)
    tipline.say("STOP")
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "Replies are impossible: the tipster opted out" in page and 'name="text" rows="3"' not in page
    response = detective.post(f"/console/tips/{reference}/reply", {"text": "hello?"})
    assert "Not sent: the tipster opted out" in detective.get(response.location).get_data(as_text=True)


def test_live_updates_deliver_new_messages_as_data(tipline: Harness, detective: Person) -> None:
    reference = submit_tip(tipline)
    before = detective.get("/console/api/changes").get_json()
    tipline.say("<b>one more</b> detail")
    after = detective.get("/console/api/changes").get_json()
    assert after["messages"] > before["messages"]
    thread = detective.get(f"/console/api/tips/{reference}/thread?after=3").get_json()
    assert [e["text"] for e in thread["entries"] if e["kind"] == "tipster"] == ["<b>one more</b> detail"]


def test_tipster_text_is_escaped(tipline: Harness, detective: Person) -> None:
    reference = submit_tip(tipline, "<img src=x onerror=alert(1)><script>alert(2)</script>")
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "<script>alert(2)</script>" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_every_console_page_sends_the_security_headers(tipline: Harness, detective: Person, admin: Person) -> None:
    reference = submit_tip(tipline)
    responses = [tipline.client.get("/console/login"), detective.get("/console/"), detective.get(f"/console/tips/{reference}"),
                 admin.get("/console/admin/users"), admin.get("/console/admin/keys"), admin.get("/console/admin/audit"),
                 detective.get("/console/admin/users")]
    for response in responses:
        for name, value in CONSOLE_HEADERS.items():
            assert response.headers[name] == value
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "unsafe-inline" not in csp
        assert "<script>" not in response.get_data(as_text=True)  # no inline script anywhere


def test_admin_manages_accounts_and_sees_keys(tipline: Harness, admin: Person) -> None:
    admin.get("/console/admin/users")
    created = admin.post("/console/admin/users", {"username": "sam", "roles": "detective"})
    page = created.get_data(as_text=True)
    password = re.search(r'class="one-time-password">([^<]+)<', page).group(1)
    sam = Person(tipline.app.test_client(), "sam", password=password)
    assert sam.sign_in().location.endswith("/console/")  # enrols, then sets a password of their own
    admin.get("/console/admin/users")
    admin.post("/console/admin/users/sam/reset-2fa")
    with tipline.runtime.factory() as session:
        assert session.scalars(select(User).where(User.username == "sam")).one().totp_secret_ct is None
    keys = admin.get("/console/admin/keys").get_data(as_text=True)
    for purpose in ("tips", "contacts", "pseudonym", "accounts", "audit"):
        assert f"<td>{purpose}</td>" in keys


def test_the_audit_log_records_who_did_what_and_detects_tampering(tipline: Harness, detective: Person, admin: Person) -> None:
    reference = submit_tip(tipline)
    detective.get(f"/console/tips/{reference}")
    detective.post(f"/console/tips/{reference}/note", {"text": "internal"})
    Person(tipline.app.test_client(), "dana").sign_in(code="000000", password="wrong password!!")
    with tipline.runtime.factory() as session:
        events = [(e.actor, e.action, e.outcome) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    assert ("dana", "auth.sign_in", "ok") in events and ("dana", "tip.view", "ok") in events
    assert ("dana", "tip.note", "ok") in events and ("dana", "auth.sign_in", "failed") in events
    assert audit.verify(tipline.runtime.factory, tipline.runtime.keys.keyring).intact
    assert 'data-intact="1"' in admin.get("/console/admin/audit").get_data(as_text=True)

    # Someone with database access rewrites history: who viewed the tip
    with tipline.runtime.factory.begin() as session:
        session.execute(update(AuditEntry).where(AuditEntry.action == "tip.view").values(actor="alex"))
    verdict = audit.verify(tipline.runtime.factory, tipline.runtime.keys.keyring)
    assert not verdict.intact and "altered" in verdict.reason
    assert "TAMPERING DETECTED" in admin.get("/console/admin/audit").get_data(as_text=True)


def test_deleting_an_audit_entry_is_detected(tipline: Harness, detective: Person) -> None:
    reference = submit_tip(tipline)
    detective.get(f"/console/tips/{reference}")
    detective.get(f"/console/tips/{reference}")
    with tipline.runtime.factory.begin() as session:
        first_view = session.scalars(select(AuditEntry).where(AuditEntry.action == "tip.view")).first()
        session.delete(first_view)
    verdict = audit.verify(tipline.runtime.factory, tipline.runtime.keys.keyring)
    assert not verdict.intact and "deleted" in verdict.reason


def test_nothing_identifying_reaches_any_console_page_or_the_audit_log(tipline: Harness, detective: Person, admin: Person) -> None:
    sid = new_sid()
    tipline.sms("Stolen catalytic converters sold behind the diner", sid=sid)
    tipline.say("skip")
    reference = REFERENCE.search(tipline.say("skip")[0]).group(0)
    pages = [detective.get("/console/").get_data(as_text=True), detective.get(f"/console/tips/{reference}").get_data(as_text=True),
             str(detective.get(f"/console/api/tips/{reference}/thread").get_json()), str(detective.get("/console/api/changes").get_json()),
             admin.get("/console/admin/audit").get_data(as_text=True), admin.get("/console/admin/users").get_data(as_text=True),
             admin.get("/console/admin/keys").get_data(as_text=True)]
    needles = [*phone_formats(TIPSTER), CARRIER_CITY, CARRIER_ZIP, sid]
    for page in pages:
        for needle in needles:
            assert needle not in page
    with tipline.runtime.factory() as session:
        audit_text = " ".join(f"{e.actor} {e.action} {e.object_id} {e.detail}" for e in session.scalars(select(AuditEntry)))
    assert "catalytic" not in audit_text and all(n not in audit_text for n in needles)
    assert scan_files(tipline.data_dir, [*needles, "catalytic"], [tipline.log_file]) == []
    assert scan_database(tipline.runtime.engine, [*needles, "catalytic", PASSWORD]) == []


def test_expired_sessions_are_purged_and_https_pages_demand_https(tipline: Harness, detective: Person) -> None:
    from tipline.services.maintenance import purge

    idle(tipline, minutes=16)
    report = purge(tipline.runtime.intake, retention_days=90)
    assert report.console_sessions_ended == 1
    with tipline.runtime.factory() as session:
        assert session.scalars(select(ConsoleSession)).all() == []
    assert tipline.client.get("/console/login").headers["Strict-Transport-Security"] == "max-age=31536000"
