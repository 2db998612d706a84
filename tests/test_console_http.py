"""The review console over HTTP: sign-in, roles, CSRF, sessions, triage, replies, audit, anonymity."""

from __future__ import annotations

import datetime as dt
import re
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.console import PASSWORD, Person, person
from tests.support.harness import CARRIER_CITY, CARRIER_ZIP, REFERENCE, TIPSTER, Harness, new_sid
from tipline.core.vocabulary import MessageKind, ReplyDelivery, Role, TipStatus
from tipline.services import audit, auth, review
from tipline.services.context import ServiceContext
from tipline.storage.models import AuditEntry, ConsoleSession, Tip, User

ROOT = Path(__file__).resolve().parent.parent
BIKES = "A man sells stolen bikes from a blue garage on Birch Rd"
CONSOLE_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
OPEN_ROUTES = ("console.login", "console.login_submit", "console.logout", "console.root")


@pytest.fixture
def detective(tipline: Harness) -> Person:
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    assert dana.sign_in().location.endswith("/console/")
    return dana


@pytest.fixture
def admin(tipline: Harness) -> Person:
    alex = person(tipline.app, tipline.runtime.ctx, "alex", roles=("admin",))
    assert alex.sign_in().location.endswith("/console/admin/users")
    return alex


def console_routes(tipline: Harness) -> list[tuple[str, str]]:
    routes = []
    for rule in tipline.app.url_map.iter_rules():
        if rule.rule.startswith("/console") and rule.endpoint not in OPEN_ROUTES:
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
            assert response.status_code == 302, (method, path)
            assert response.location.endswith("/console/login"), (method, path)


def test_every_console_route_declares_its_role(tipline: Harness) -> None:
    for rule in tipline.app.url_map.iter_rules():
        if rule.endpoint.startswith("console.") and rule.endpoint not in (*OPEN_ROUTES, "console.static"):
            view = tipline.app.view_functions[rule.endpoint]
            assert hasattr(view, "console_role"), rule.endpoint
            if "/admin/" in rule.rule:
                assert view.console_role == Role.ADMIN, rule.endpoint
            elif rule.rule.startswith(("/console/tips", "/console/api", "/console/")) and rule.rule not in (
                "/console/enrol",
                "/console/password",
            ):
                assert view.console_role == Role.DETECTIVE, rule.endpoint


def test_first_sign_in_enrols_totp_and_shows_the_secret_as_text(tipline: Harness) -> None:
    dana = person(tipline.app, tipline.runtime.ctx, "dana", must_change=True)
    response = dana.sign_in()
    assert response.location.endswith("/console/")
    assert dana.secret
    assert len(dana.secret) >= 32
    with tipline.runtime.factory() as session:
        user = session.scalars(select(User).where(User.username == "dana")).one()
        assert user.totp_secret_ct
        assert dana.secret.encode() not in user.totp_secret_ct
        assert not user.must_change_password
        assert user.password_hash.startswith("$argon2id$")


def test_a_correct_password_without_the_code_is_refused_once_enrolled(tipline: Harness, detective: Person) -> None:
    fresh = Person(tipline.app.test_client(), "dana", password=detective.password)
    response = fresh.sign_in(code="")
    assert response.status_code == 401
    assert "Check your username, password and code" in response.get_data(as_text=True)


def test_a_totp_code_is_accepted_once(tipline: Harness, detective: Person) -> None:
    code = detective.next_code()
    first = Person(tipline.app.test_client(), "dana", password=detective.password)
    assert first.sign_in(code=code).status_code == 302
    second = Person(tipline.app.test_client(), "dana", password=detective.password)
    assert second.sign_in(code=code).status_code == 401


def test_errors_never_say_which_factor_was_wrong(tipline: Harness, detective: Person) -> None:
    def stranger(username: str, password: str = PASSWORD) -> Person:
        return Person(tipline.app.test_client(), username, password=password)

    wrong_password = stranger("dana").sign_in(code=detective.next_code(), password="not the password!")
    wrong_code = stranger("dana", detective.password).sign_in(code="000000")
    unknown = stranger("nobody").sign_in(code="123456")
    failures = (wrong_password, wrong_code, unknown)
    messages = {r.get_data(as_text=True).split("<main")[1].split('name="csrf_token"')[0] for r in failures}
    assert len(messages) == 1
    assert {r.status_code for r in failures} == {401}


def test_five_failures_lock_the_account(
    tipline: Harness,
    detective: Person,
    admin: Person,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for _ in range(5):
        guess = Person(tipline.app.test_client(), "dana").sign_in(code="000000", password="wrong password!!")
        assert guess.status_code == 401
    hashes = []
    real_verify = auth._verify_password
    monkeypatch.setattr(auth, "_verify_password", lambda *a: hashes.append(1) or real_verify(*a))
    locked = Person(
        tipline.app.test_client(),
        "dana",
        password=detective.password,
        secret=detective.secret,
        last_step=detective.last_step,
    )
    assert locked.sign_in().status_code == 401
    assert hashes == [1]  # the same one verification as any attempt: the lock does not show in the timing
    detective.last_step = locked.last_step
    admin.get("/console/admin/users")
    assert admin.post("/console/admin/users/dana/unlock").status_code == 302
    assert (
        Person(
            tipline.app.test_client(),
            "dana",
            password=detective.password,
            secret=detective.secret,
            last_step=detective.last_step,
        )
        .sign_in()
        .status_code
        == 302
    )


def test_sign_in_attempts_are_budgeted_per_client(tipline: Harness) -> None:
    statuses = [
        Person(tipline.app.test_client(), f"nobody{i}").sign_in(code="1", password="x" * 12).status_code
        for i in range(21)
    ]
    assert statuses[:20] == [401] * 20
    assert statuses[20] == 429


def test_a_post_without_the_csrf_token_is_refused(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(BIKES)
    note = f"/console/tips/{reference}/note"
    detective.get(f"/console/tips/{reference}")
    assert detective.post(note, {"text": "forged"}, csrf=False).status_code == 400
    assert detective.post(note, {"text": "forged", "csrf_token": "x" * 43}, csrf=False).status_code == 400
    login_page = tipline.client.get("/console/login")
    assert login_page.status_code == 200
    forged_login = tipline.app.test_client().post(
        "/console/login",
        data={"username": "dana", "password": "x", "ack": "1"},
    )
    assert forged_login.status_code == 400


def test_roles_are_enforced(tipline: Harness, detective: Person, admin: Person) -> None:
    reference = tipline.submit_tip(BIKES)
    for path in ("/console/admin/users", "/console/admin/keys", "/console/admin/audit"):
        assert detective.get(path).status_code == 403
    assert detective.post("/console/admin/users/dana/disable").status_code == 403
    detective_pages = (
        "/console/",
        f"/console/tips/{reference}",
        f"/console/api/tips/{reference}/thread",
        "/console/api/changes",
    )
    for path in detective_pages:
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
    assert response.status_code == 302
    assert "expired=1" in response.location
    assert "inactivity" in detective.client.get(response.location).get_data(as_text=True)


def test_polling_does_not_keep_an_idle_session_alive(tipline: Harness, detective: Person) -> None:
    idle(tipline, minutes=10)
    assert detective.get("/console/api/changes").status_code == 200
    idle(tipline, minutes=6)
    assert detective.get("/console/").status_code == 302


def test_a_session_records_activity_at_most_once_a_minute(tipline: Harness, detective: Person) -> None:
    # Each write would hold every writer on SQLite, intake included; a console makes many requests a minute
    def age(seconds: int) -> dt.datetime:
        with tipline.runtime.factory.begin() as session:
            record = session.scalars(select(ConsoleSession)).one()
            record.last_seen_at -= dt.timedelta(seconds=seconds)
            return record.last_seen_at

    assert detective.get("/console/").status_code == 200
    seen = age(30)
    assert detective.get("/console/").status_code == 200
    assert age(0) == seen  # nothing written within the minute
    age(40)
    assert detective.get("/console/").status_code == 200
    assert age(0) > seen  # recorded again once a minute has passed


def test_polls_go_through_while_another_writer_holds_the_database(tipline: Harness, detective: Person) -> None:
    assert detective.get("/console/").status_code == 200
    answers: list[int] = []

    def poll() -> None:
        answers.extend(
            detective.client.get(path).status_code for path in ("/console/api/changes", "/console/api/alerts/fresh")
        )

    with tipline.runtime.factory.begin() as session:
        session.execute(update(User).values(failed_logins=User.failed_logins))  # a write, held open meanwhile
        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        poller.join(5)
        waited = poller.is_alive()
    poller.join(60)
    assert not waited, "a poll waited for the write lock"
    assert answers == [200, 200]


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


def test_a_forged_sign_out_ends_nothing(tipline: Harness, detective: Person) -> None:
    detective.get("/console/")
    assert detective.post("/console/logout", {"csrf_token": "x" * 43}, csrf=False).status_code == 400
    assert detective.get("/console/").status_code == 200


def test_disabling_an_account_ends_its_sessions_at_once(tipline: Harness, detective: Person, admin: Person) -> None:
    assert detective.get("/console/").status_code == 200
    admin.get("/console/admin/users")
    admin.post("/console/admin/users/dana/disable")
    assert detective.get("/console/").status_code == 302


def test_a_detective_reads_triages_replies_and_notes(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(BIKES)
    tipline.say("They come back every night around midnight")
    listing = detective.get("/console/").get_data(as_text=True)
    assert reference in listing
    assert "1 new" in listing
    assert "Tipster " in listing
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "A man sells stolen bikes" in page
    assert "They come back every night" in page
    assert "1 new" not in detective.get("/console/").get_data(as_text=True)  # reading clears the count

    detective.get(f"/console/tips/{reference}")
    with tipline.runtime.factory() as session:
        dana_id = session.scalars(select(User.id).where(User.username == "dana")).one()
    triage = {"status": "in_review", "category": "property", "assignee": str(dana_id)}
    response = detective.post(f"/console/tips/{reference}/triage", triage)
    assert "Saved" in detective.get(response.location).get_data(as_text=True)
    with tipline.runtime.factory() as session:
        tip = session.scalars(select(Tip)).one()
        assert (tip.status, tip.category, tip.assignee_id) == (TipStatus.IN_REVIEW, "property", dana_id)
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
    assert "Reply by dana" in page
    assert "Internal note by dana" in page
    assert ">sent<" in page
    assert tipline.status_callback(tipline.twilio.sent[-1]["_sid"], "delivered").status_code == 200
    assert ">delivered<" in detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert len(tipline.twilio.sent) == 1  # the note was never sent


def test_triage_refuses_what_it_cannot_do_and_changes_nothing(tipline: Harness) -> None:
    reference = tipline.submit_tip(BIKES)
    ctx = tipline.runtime.ctx
    for wrong in ({"status": "draft"}, {"category": "parking"}, {"status": "closed", "assignee_id": 999}):
        with pytest.raises(ValueError):
            review.triage(ctx, reference, actor="dana", **wrong)
    assert review.read_tip(ctx, reference).summary.status == TipStatus.NEW
    assert review.triage(ctx, reference, status="closed", category="", clear_assignee=True) == {
        "status": (TipStatus.NEW, TipStatus.CLOSED),
    }


DETECTIVE_ACTIONS: dict[str, Callable[[ServiceContext, str], object]] = {
    "read_tip": lambda ctx, reference: review.read_tip(ctx, reference),
    "thread_since": lambda ctx, reference: review.thread_since(ctx, reference, 0),
    "read_photo": lambda ctx, reference: review.read_photo(ctx, reference, "0" * 32, actor="dana"),
    "reply": lambda ctx, reference: review.reply(ctx, reference, "Are you still there?"),
    "add_note": lambda ctx, reference: review.add_note(ctx, reference, "A note on a draft"),
    "triage": lambda ctx, reference: review.triage(ctx, reference, status="closed"),
    "set_urgent": lambda ctx, reference: review.set_urgent(ctx, reference, True, actor="dana"),
    "alias_of": lambda ctx, reference: review.alias_of(ctx, reference),
}


def test_a_draft_that_is_not_urgent_is_not_found_by_any_detective_action(tipline: Harness, detective: Person) -> None:
    # Given a tipster still writing their tip (a draft, with a reference they have not been told yet,
    # and nothing urgent in it: an urgent draft is shown at once, see test_urgent_at_once.py)
    tipline.say("A grey pickup unloads boxes behind Lincoln school every night")
    with tipline.runtime.factory() as session:
        draft = session.scalars(select(Tip).where(Tip.status == TipStatus.DRAFT)).one()
        reference, messages = draft.reference, draft.message_count

    # When a detective names that reference, in Python or in the console
    def found(action: Callable[[ServiceContext, str], object]) -> bool:
        try:
            action(tipline.runtime.ctx, reference)
        except review.TipNotFound:
            return False
        return True

    # Then no action finds it, and nothing was added to the tipster's draft
    assert [name for name, action in DETECTIVE_ACTIONS.items() if found(action)] == []
    detective.get("/console/")
    assert detective.post(f"/console/tips/{reference}/note", {"text": "A note on a draft"}).status_code == 404
    assert detective.get(f"/console/tips/{reference}").status_code == 404
    with tipline.runtime.factory() as session:
        draft = session.scalars(select(Tip).where(Tip.reference == reference)).one()
        assert (draft.status, draft.message_count) == (TipStatus.DRAFT, messages)


def test_replies_impossible_are_said_plainly(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(BIKES)
    tipline.say("STOP")
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "Replies are impossible: the tipster opted out" in page
    assert 'name="text" rows="3"' not in page
    response = detective.post(f"/console/tips/{reference}/reply", {"text": "hello?"})
    assert "Not sent: the tipster opted out" in detective.get(response.location).get_data(as_text=True)


def test_live_updates_deliver_new_messages_as_data(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(BIKES)
    before = detective.get("/console/api/changes").get_json()
    tipline.say("<b>one more</b> detail")
    after = detective.get("/console/api/changes").get_json()
    assert after["messages"] > before["messages"]
    thread = detective.get(f"/console/api/tips/{reference}/thread?after=3").get_json()
    assert [e["text"] for e in thread["entries"] if e["kind"] == MessageKind.TIPSTER] == ["<b>one more</b> detail"]


def test_tipster_text_is_escaped(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip("<img src=x onerror=alert(1)><script>alert(2)</script>")
    page = detective.get(f"/console/tips/{reference}").get_data(as_text=True)
    assert "<script>alert(2)</script>" not in page
    assert "<img src=x" not in page
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page


def test_every_console_page_sends_the_security_headers(tipline: Harness, detective: Person, admin: Person) -> None:
    reference = tipline.submit_tip(BIKES)
    responses = [
        tipline.client.get("/console/login"),
        detective.get("/console/"),
        detective.get(f"/console/tips/{reference}"),
        admin.get("/console/admin/users"),
        admin.get("/console/admin/keys"),
        admin.get("/console/admin/audit"),
        detective.get("/console/admin/users"),
    ]
    for response in responses:
        for name, value in CONSOLE_HEADERS.items():
            assert response.headers[name] == value
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "unsafe-inline" not in csp
        assert "<script>" not in response.get_data(as_text=True)  # no inline script anywhere


def test_admin_manages_accounts_and_sees_keys(tipline: Harness, admin: Person) -> None:
    admin.get("/console/admin/users")
    # Admins only: detectives are created on the server's command line (tests/attacks/test_self_granted_access.py)
    created = admin.post("/console/admin/users", {"username": "sam", "roles": "admin"})
    page = created.get_data(as_text=True)
    password = re.search(r'class="one-time-password">([^<]+)<', page).group(1)
    sam = Person(tipline.app.test_client(), "sam", password=password)
    assert sam.sign_in().location.endswith("/console/admin/users")  # enrols, then sets a password of their own
    admin.get("/console/admin/users")
    admin.post("/console/admin/users/sam/reset-2fa")
    with tipline.runtime.factory() as session:
        assert session.scalars(select(User).where(User.username == "sam")).one().totp_secret_ct is None
    keys = admin.get("/console/admin/keys").get_data(as_text=True)
    for purpose in ("tips", "contacts", "pseudonym", "accounts", "audit"):
        assert f"<td>{purpose}</td>" in keys


def test_account_actions_are_audited_with_who_and_whom(tipline: Harness, admin: Person) -> None:
    admin.get("/console/admin/users")
    admin.post("/console/admin/users", {"username": "Sam", "roles": "admin"})
    admin.get("/console/admin/users")
    admin.post("/console/admin/users/sam/disable")
    admin.get("/console/admin/users")
    admin.post("/console/admin/users/nobody/unlock")  # no such account: refused, nothing to audit
    by_alex = select(AuditEntry).where(AuditEntry.actor == "alex", AuditEntry.action.like("user.%"))
    with tipline.runtime.factory() as session:
        events = [(e.actor, e.action, e.object_id, e.detail) for e in session.scalars(by_alex.order_by(AuditEntry.id))]
    assert events == [
        ("alex", "user.create", "sam", '{"roles":["admin"]}'),
        ("alex", "user.disable", "sam", "{}"),
    ]


def test_the_audit_log_records_who_did_what_and_detects_tampering(
    tipline: Harness,
    detective: Person,
    admin: Person,
) -> None:
    reference = tipline.submit_tip(BIKES)
    detective.get(f"/console/tips/{reference}")
    detective.post(f"/console/tips/{reference}/note", {"text": "internal"})
    Person(tipline.app.test_client(), "dana").sign_in(code="000000", password="wrong password!!")
    with tipline.runtime.factory() as session:
        events = [(e.actor, e.action, e.outcome) for e in session.scalars(select(AuditEntry).order_by(AuditEntry.id))]
    for expected in [
        ("dana", "auth.sign_in", "ok"),
        ("dana", "tip.view", "ok"),
        ("dana", "tip.note", "ok"),
        ("dana", "auth.sign_in", "failed"),
    ]:
        assert expected in events
    assert audit.verify(tipline.runtime.ctx).intact
    assert 'data-intact="1"' in admin.get("/console/admin/audit").get_data(as_text=True)

    # Someone with database access rewrites history: who viewed the tip
    with tipline.runtime.factory.begin() as session:
        session.execute(update(AuditEntry).where(AuditEntry.action == "tip.view").values(actor="alex"))
    verdict = audit.verify(tipline.runtime.ctx)
    assert not verdict.intact
    assert "altered" in verdict.reason
    assert "TAMPERING DETECTED" in admin.get("/console/admin/audit").get_data(as_text=True)


def test_deleting_an_audit_entry_is_detected(tipline: Harness, detective: Person) -> None:
    reference = tipline.submit_tip(BIKES)
    detective.get(f"/console/tips/{reference}")
    detective.get(f"/console/tips/{reference}")
    with tipline.runtime.factory.begin() as session:
        first_view = session.scalars(select(AuditEntry).where(AuditEntry.action == "tip.view")).first()
        session.delete(first_view)
    verdict = audit.verify(tipline.runtime.ctx)
    assert not verdict.intact
    assert "deleted" in verdict.reason


def test_nothing_identifying_reaches_any_console_page_or_the_audit_log(
    tipline: Harness,
    detective: Person,
    admin: Person,
) -> None:
    sid = new_sid()
    tipline.sms("Stolen catalytic converters sold behind the diner", sid=sid)
    tipline.say("skip")
    reference = REFERENCE.search(tipline.say("skip")[0]).group(0)
    pages = [
        detective.get("/console/").get_data(as_text=True),
        detective.get(f"/console/tips/{reference}").get_data(as_text=True),
        str(detective.get(f"/console/api/tips/{reference}/thread").get_json()),
        str(detective.get("/console/api/changes").get_json()),
        admin.get("/console/admin/audit").get_data(as_text=True),
        admin.get("/console/admin/users").get_data(as_text=True),
        admin.get("/console/admin/keys").get_data(as_text=True),
    ]
    needles = [*phone_formats(TIPSTER), CARRIER_CITY, CARRIER_ZIP, sid]
    for page in pages:
        for needle in needles:
            assert needle not in page
    with tipline.runtime.factory() as session:
        entries = session.scalars(select(AuditEntry))
        audit_text = " ".join(f"{e.actor} {e.action} {e.object_id} {e.detail}" for e in entries)
    for needle in [*needles, "catalytic"]:
        assert needle not in audit_text
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


def test_the_readme_python_example_runs(
    tipline: Harness,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """README's "Detectives' actions from Python", run as written against this tip line."""
    section = (ROOT / "README.md").read_text().split("## Detectives' actions from Python", 1)[1]
    example = re.search(r"```python\n(.*?)```", section, re.S)
    assert example is not None, "no Python example in the README section"
    reference = tipline.submit_tip(BIKES)
    monkeypatch.chdir(tmp_path)  # no .env here: the settings come from the environment
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    exec(compile(example.group(1), "README.md", "exec"), {})

    detail = review.read_tip(tipline.runtime.ctx, reference)
    assert [(e.kind, e.text) for e in detail.thread[-2:]] == [
        (MessageKind.AGENCY, "Which car was it?"),
        (MessageKind.NOTE, "Matches case 24-1187"),
    ]
    assert detail.thread[-2].delivery == ReplyDelivery.QUEUED
    assert (detail.summary.status, detail.summary.category) == (TipStatus.IN_REVIEW, "property")


@pytest.mark.parametrize("value", ["²", "١", "9" * 40, "-1", " 1", "1e3"])
def test_odd_numbers_in_the_list_and_thread_queries_are_ignored_never_a_500(tipline: Harness, value: str) -> None:
    reference = tipline.submit_tip()
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    dana.sign_in()
    for query in (f"assignee={value}", f"page={value}"):
        assert dana.get(f"/console/?{query}").status_code == 200, query
    assert dana.get(f"/console/api/tips/{reference}/thread?after={value}").status_code == 400
