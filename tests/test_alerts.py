"""Alerts reach detectives through a real SMTP server (aiosmtpd, in the test) and carry no content.

Each test runs the tip line with TIPLINE_SMTP_URL pointed at an aiosmtpd server on a free port,
texts it as a tipster would, runs the dispatcher, and reads what the server received: the envelope
(MAIL FROM, RCPT TO) and the message with its headers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import email
import email.policy
import ipaddress
import re
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from tests.support.anonymity import phone_formats, scan_database, scan_files
from tests.support.console import Person, person
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import TIPSTER, Harness, make_harness, reference_of
from tests.support.processes import run
from tipline.config import ConfigError, load_settings
from tipline.core.alerting import AlertChoice
from tipline.runtime import build_runtime
from tipline.services import alerts, review
from tipline.storage.models import Alert, AuditEntry, Tip, User, utcnow

MAIL_FROM = "tipline@police.example"
URGENT_WORDS = "someone is bleeding behind the Elm St laundromat right now"
PLAIN_WORDS = "A grey van parks by the school gate every night"


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes


@dataclass
class Mailbox:
    """What the test SMTP server accepted, in order."""

    received: list[Received] = field(default_factory=list)
    secure: list[bool] = field(default_factory=list)  # was each message's session under TLS

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        self.received.append(Received(str(envelope.mail_from), list(envelope.rcpt_tos), message, raw))
        self.secure.append(session.ssl is not None)
        return "250 OK"

    def to(self, address: str) -> list[Received]:
        return [r for r in self.received if address in r.rcpt_tos]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_smtp(port: int, mailbox: Mailbox, tls: Any = None) -> Controller:
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, tls_context=tls, ready_timeout=10)
    controller.start()
    return controller


@pytest.fixture
def mailbox() -> Mailbox:
    return Mailbox()


@pytest.fixture
def smtp_port(mailbox: Mailbox) -> Iterator[int]:
    """A plain SMTP server (no STARTTLS offered) on a free port."""
    port = free_port()
    controller = start_smtp(port, mailbox)
    yield port
    controller.stop()


def alerting(env: dict[str, str], twilio: FakeTwilio, log_file: Path, port: int, **extra: str) -> Harness:
    """The tip line sending alerts to the SMTP server on `port`."""
    values = {**env, "TIPLINE_SMTP_URL": f"smtp://127.0.0.1:{port}", "TIPLINE_MAIL_FROM": MAIL_FROM, **extra}
    return make_harness(values, twilio, log_file)


@pytest.fixture
def tipline_alerts(env: dict[str, str], twilio_server: FakeTwilio, log_file: Path, smtp_port: int) -> Iterator[Harness]:
    harness = alerting(env, twilio_server, log_file, smtp_port)
    yield harness
    harness.runtime.close()


def detective(harness: Harness, name: str, choice: str, roles: tuple[str, ...] = ("detective",)) -> str:
    """A console account with an email address and an alert choice; returns the address."""
    person(harness.app, harness.runtime.ctx, name, roles)
    address = f"{name}@police.example"
    alerts.set_preferences(harness.runtime.ctx, name, email=address, choice=choice, actor="cli")
    return address


def later(harness: Harness, minutes: float) -> None:
    """Move the alert worker's and the dispatcher's clocks forward."""
    moment = utcnow() + dt.timedelta(minutes=minutes)
    harness.runtime.alerts.clock = lambda: moment
    harness.runtime.dispatcher.clock = lambda: moment


def words_of(received: Received) -> str:
    body = received.message.get_body(("plain",))
    assert body is not None
    return f"{received.message['Subject']}\n{body.get_content()}"


def assert_content_free(harness: Harness, received: Received, reference: str, *tip_words: str) -> None:
    text = words_of(received)
    raw = received.raw.decode("utf-8", "replace")
    assert reference in received.message["Subject"]
    assert f"https://tips.example.org/console/tips/{reference}" in text
    assert "Example City Police" in text
    for words in tip_words:
        for word in words.split():
            if len(word) > 4:
                assert word.lower() not in raw.lower(), word
    for number in phone_formats(TIPSTER):
        assert number not in raw
    assert "sms" not in raw.lower()  # the channel
    assert "telegram" not in raw.lower()
    assert review.alias_of(harness.runtime.ctx, reference) not in raw  # "Tipster 4F2A"
    assert not re.search(r"\b\d{1,2}:\d{2}\b", text), "a time in the alert's words"
    assert received.message["Date"].datetime.second == 0  # the Date header, to the minute


def signed_in(harness: Harness, name: str) -> Person:
    someone = Person(harness.app.test_client(), name)
    assert someone.sign_in().status_code == 302
    return someone


def test_an_urgent_first_message_mails_who_chose_urgent_and_nobody_who_chose_none(
    tipline_alerts: Harness, mailbox: Mailbox
) -> None:
    # Given a detective who wants urgent tips, one who wants none, and an admin-only account
    ana = detective(tipline_alerts, "ana", "urgent")
    ned = detective(tipline_alerts, "ned", "none")
    root = detective(tipline_alerts, "root", "new", roles=("admin",))
    # When a tipster's first message is urgent and the dispatcher runs
    replies = tipline_alerts.say(URGENT_WORDS)
    assert any("911" in r for r in replies)
    tipline_alerts.dispatch()
    # Then one email reached Ana, none Ned or the admin, and it says where to look and nothing else
    assert [r.rcpt_tos for r in mailbox.received] == [[ana]]
    got = mailbox.received[0]
    assert got.mail_from == MAIL_FROM
    assert got.message["From"] == MAIL_FROM
    assert got.message["To"] == ana
    assert got.message["Auto-Submitted"] == "auto-generated"
    reference = reference_of(got.message["Subject"])
    assert got.message["Subject"] == f"Urgent tip {reference} · Example City Police"
    assert got.message["Message-ID"].startswith("<alert-")
    assert got.message["Message-ID"].endswith("@police.example>")
    assert_content_free(tipline_alerts, got, reference, URGENT_WORDS)
    assert not mailbox.to(ned) and not mailbox.to(root)
    # And a second pass sends nothing again
    tipline_alerts.dispatch()
    assert len(mailbox.received) == 1


def test_new_gets_every_submitted_tip_and_mine_gets_follow_ups_on_its_tips(
    tipline_alerts: Harness, mailbox: Mailbox
) -> None:
    ctx = tipline_alerts.runtime.ctx
    nora = detective(tipline_alerts, "nora", "new")
    ana = detective(tipline_alerts, "ana", "urgent")
    max_ = detective(tipline_alerts, "max", "mine")
    reference = tipline_alerts.submit_tip(PLAIN_WORDS)
    tipline_alerts.dispatch()
    assert [r.rcpt_tos for r in mailbox.received] == [[nora]]
    assert mailbox.received[0].message["Subject"] == f"New tip {reference} · Example City Police"
    assert_content_free(tipline_alerts, mailbox.received[0], reference, PLAIN_WORDS)
    assert not mailbox.to(ana) and not mailbox.to(max_)

    # Given the tip is assigned to Max, when the tipster writes again, then Max (only) hears of it
    with ctx.factory() as session:
        max_id = session.scalar(select(User.id).where(User.username == "max"))
    review.triage(ctx, reference, assignee_id=max_id, actor="ana")
    tipline_alerts.say("The van has a broken tail light")
    tipline_alerts.dispatch()
    assert [r.rcpt_tos for r in mailbox.received] == [[nora], [max_]]
    follow_up = mailbox.received[1]
    assert follow_up.message["Subject"] == f"New message on your tip {reference} · Example City Police"
    assert_content_free(tipline_alerts, follow_up, reference, PLAIN_WORDS, "broken tail light")
    # Without a new message nothing more comes; once Max has read it, the next message alerts again
    tipline_alerts.dispatch()
    assert len(mailbox.received) == 2
    review.read_tip(ctx, reference, actor="max")
    tipline_alerts.say("It was there again tonight")
    tipline_alerts.dispatch()
    assert [r.rcpt_tos for r in mailbox.received] == [[nora], [max_], [max_]]


def test_an_urgent_tip_nobody_opens_escalates_to_every_detective_but_none(
    tipline_alerts: Harness, mailbox: Mailbox
) -> None:
    ana = detective(tipline_alerts, "ana", "urgent")
    nora = detective(tipline_alerts, "nora", "new")
    max_ = detective(tipline_alerts, "max", "mine")
    ned = detective(tipline_alerts, "ned", "none")
    tipline_alerts.say(URGENT_WORDS)
    tipline_alerts.dispatch()
    assert sorted(r.rcpt_tos[0] for r in mailbox.received) == sorted([ana, nora])
    later(tipline_alerts, 9)  # not yet
    tipline_alerts.dispatch()
    assert len(mailbox.received) == 2
    # Past TIPLINE_ESCALATE_MINUTES (10) with nobody opening it: everyone but Ned, once
    later(tipline_alerts, 11)
    tipline_alerts.dispatch()
    tipline_alerts.dispatch()
    escalations = mailbox.received[2:]
    assert sorted(r.rcpt_tos[0] for r in escalations) == sorted([ana, nora, max_])
    assert not mailbox.to(ned)
    reference = reference_of(escalations[0].message["Subject"])
    assert escalations[0].message["Subject"] == f"Urgent tip not yet opened {reference} · Example City Police"
    for got in escalations:
        assert_content_free(tipline_alerts, got, reference, URGENT_WORDS)


def test_an_urgent_tip_opened_in_time_does_not_escalate(tipline_alerts: Harness, mailbox: Mailbox) -> None:
    detective(tipline_alerts, "ana", "urgent")
    tipline_alerts.say(URGENT_WORDS)
    tipline_alerts.dispatch()
    reference = reference_of(mailbox.received[0].message["Subject"])
    ana = signed_in(tipline_alerts, "ana")
    assert ana.get(f"/console/tips/{reference}").status_code == 200  # the tip page, in the console
    later(tipline_alerts, 30)
    tipline_alerts.dispatch()
    assert len(mailbox.received) == 1


def test_smtp_down_is_retried_and_delivered_once_when_it_comes_back(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path, mailbox: Mailbox
) -> None:
    port = free_port()  # nothing listens there yet
    harness = alerting(env, twilio_server, log_file, port)
    try:
        ana = detective(harness, "ana", "urgent")
        harness.say(URGENT_WORDS)
        harness.dispatch()  # intake was not held up; the alert waits
        with harness.runtime.factory() as session:
            (row,) = session.scalars(select(Alert)).all()
            assert (row.status, row.attempts, row.last_error) == ("pending", 1, "smtp-ConnectionRefusedError")
        controller = start_smtp(port, mailbox)
        try:
            harness.dispatch()
            assert mailbox.received == []  # not due yet: backoff
            later(harness, 1)
            harness.dispatch()
            later(harness, 5)
            harness.dispatch()
        finally:
            controller.stop()
        assert [r.rcpt_tos for r in mailbox.received] == [[ana]]
        with harness.runtime.factory() as session:
            (row,) = session.scalars(select(Alert)).all()
            assert (row.status, row.attempts) == ("sent", 2)
    finally:
        harness.runtime.close()


def test_a_mail_server_that_hangs_holds_up_one_alert_per_pass_not_every_one(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dispatcher also sends tipsters' messages: a hung mail server must not make it wait out a
    timeout for each of many alerts."""
    monkeypatch.setattr(alerts, "SMTP_TIMEOUT", 1.0)
    with socket.socket() as silent:  # accepts connections (the kernel does) and never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        harness = alerting(env, twilio_server, log_file, silent.getsockname()[1])
        try:
            for name in ("ana", "ben", "cat", "dan", "eve"):
                detective(harness, name, "urgent")
            harness.say(URGENT_WORDS)
            started = time.monotonic()
            harness.dispatch()
            took = time.monotonic() - started
            with harness.runtime.factory() as session:
                rows = session.scalars(select(Alert)).all()
            assert sorted((row.status, row.attempts) for row in rows) == [("pending", 0)] * 4 + [("pending", 1)]
            assert took < 4, f"one pass took {took:.1f} s"
        finally:
            harness.runtime.close()


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA of our own and a server certificate it signed for 127.0.0.1: (ca.pem, cert.pem, key.pem)."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Example City Police internal CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "cert.pem", directory / "key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return paths


def test_starttls_is_used_when_offered_and_the_agency_ca_verifies_it(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path, mailbox: Mailbox, tmp_path: Path
) -> None:
    ca, cert, key = make_certificates(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    port = free_port()
    controller = start_smtp(port, mailbox, tls=server_tls)
    try:
        # Without the agency's CA the certificate does not verify, and nothing goes in clear instead
        harness = alerting(env, twilio_server, log_file, port)
        try:
            detective(harness, "ana", "urgent")
            harness.say(URGENT_WORDS)
            harness.dispatch()
            assert mailbox.received == []
            with harness.runtime.factory() as session:
                assert session.scalars(select(Alert.last_error)).one() == "smtp-tls-verify"
        finally:
            harness.runtime.close()
        # With TIPLINE_SMTP_CA_FILE it verifies, and the message goes over TLS
        harness = alerting(env, twilio_server, log_file, port, TIPLINE_SMTP_CA_FILE=str(ca))
        try:
            later(harness, 1)
            harness.dispatch()
        finally:
            harness.runtime.close()
    finally:
        controller.stop()
    assert [r.rcpt_tos for r in mailbox.received] == [["ana@police.example"]]
    assert mailbox.secure == [True]


def test_the_on_call_sms_is_content_free(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path, smtp_port: int
) -> None:
    harness = alerting(env, twilio_server, log_file, smtp_port, TIPLINE_ALERT_SMS_TO="+15555550177")
    try:
        harness.say(URGENT_WORDS)
        harness.dispatch()
        to_on_call = [m for m in twilio_server.sent if m.get("To") == "+15555550177"]
        assert len(to_on_call) == 1
        body = to_on_call[0]["Body"]
        reference = reference_of(body)
        link = f"https://tips.example.org/console/tips/{reference}"
        assert body == f"Example City Police: urgent tip {reference}. {link} (Do not reply to this text.)"

        # An officer answering it anyway reaches the tip line's number: that is no tip, and their
        # number is stored nowhere.
        assert harness.say("on my way, ETA 5 min", sender="+15555550177") == []
        assert scan_database(harness.runtime.engine, [*phone_formats("+15555550177"), "ETA 5 min"]) == []
    finally:
        harness.runtime.close()


def test_sandbox_tips_alert_nobody(tipline_alerts: Harness, mailbox: Mailbox) -> None:
    """The public demonstrating the sandbox must not page every detective: a content-free alert
    could not even say it was a demonstration."""
    detective(tipline_alerts, "ana", "new")
    client = tipline_alerts.app.test_client()
    page = client.get("/sandbox")
    assert page.status_code == 200
    sent = client.post("/sandbox/messages", json={"text": URGENT_WORDS})
    assert sent.status_code == 200, sent.get_data(as_text=True)
    tipline_alerts.dispatch()
    later(tipline_alerts, 11)
    tipline_alerts.dispatch()
    assert mailbox.received == []
    # while the same words by SMS do alert
    tipline_alerts.say(URGENT_WORDS)
    tipline_alerts.dispatch()
    assert [r.message["Subject"].split(" T-")[0] for r in mailbox.received] == ["Urgent tip"]


def test_the_tab_count_includes_a_draft_older_than_the_tips_listed_when_it_turns_urgent(
    tipline_alerts: Harness,
) -> None:
    ctx = tipline_alerts.runtime.ctx
    tipline_alerts.say("A neighbour grows cannabis in his shed")  # a draft, begun first
    listed = tipline_alerts.submit_tip(PLAIN_WORDS, sender="+15555550143")  # submitted: in the list
    seen, fresh = alerts.fresh_since(ctx, 0)
    assert [f.reference for f in fresh] == [listed]
    # The first tipster's draft now turns urgent: it must be counted, though its id is older
    tipline_alerts.say(URGENT_WORDS)
    newest, fresh = alerts.fresh_since(ctx, seen)
    assert [(f.urgent, f.reference != listed) for f in fresh] == [(True, True)]
    # A tip already listed and marked urgent by hand counts again, as urgent
    review.set_urgent(ctx, listed, True, actor="ana")
    _, fresh = alerts.fresh_since(ctx, newest)
    assert [(f.reference, f.urgent) for f in fresh] == [(listed, True)]


def test_a_muted_sender_pages_nobody(tipline_alerts: Harness, mailbox: Mailbox) -> None:
    ana = detective(tipline_alerts, "ana", "urgent")
    tipline_alerts.say(URGENT_WORDS)
    tipline_alerts.dispatch()
    assert len(mailbox.to(ana)) == 1
    with tipline_alerts.runtime.factory() as session:
        (reference,) = [t.reference for t in session.scalars(select(Tip))]
    review.set_muted(tipline_alerts.runtime.ctx, reference, True, actor="ana")
    for _ in range(3):  # the same sender floods the line with "urgent" tips
        tipline_alerts.say("NEW")
        tipline_alerts.say("he has a gun right now")
    tipline_alerts.dispatch()
    assert len(mailbox.to(ana)) == 1


def test_an_alert_no_longer_true_when_mail_comes_back_is_not_sent(
    env: dict[str, str], twilio_server: FakeTwilio, log_file: Path, mailbox: Mailbox
) -> None:
    port = free_port()  # mail is down while the escalation is queued
    harness = alerting(env, twilio_server, log_file, port)
    try:
        ana = detective(harness, "ana", "urgent")
        harness.say(URGENT_WORDS)
        harness.dispatch()
        later(harness, 11)
        harness.dispatch()  # the urgent alert waits in backoff; the escalation is queued
        with harness.runtime.factory() as session:
            kinds = sorted(row.kind for row in session.scalars(select(Alert)))
        assert kinds == ["escalation", "urgent"]

        # A detective opens the tip before mail comes back
        with harness.runtime.factory() as session:
            (reference,) = [t.reference for t in session.scalars(select(Tip))]
        review.read_tip(harness.runtime.ctx, reference, actor="ana")
        controller = start_smtp(port, mailbox)
        try:
            later(harness, 120)
            harness.dispatch()
        finally:
            controller.stop()
        # The urgent alert still goes (it is true); "not yet opened" does not (it is not)
        assert [(r.rcpt_tos, r.message["Subject"].split(" T-")[0]) for r in mailbox.received] == [([ana], "Urgent tip")]
        with harness.runtime.factory() as session:
            escalation = session.scalars(select(Alert).where(Alert.kind == "escalation")).one()
            assert (escalation.status, escalation.last_error) == ("cancelled", "stale")
    finally:
        harness.runtime.close()


def test_nothing_identifying_is_written_anywhere(tipline_alerts: Harness, mailbox: Mailbox, log_file: Path) -> None:
    detective(tipline_alerts, "ana", "urgent")
    detective(tipline_alerts, "nora", "new")
    tipline_alerts.say(URGENT_WORDS)
    tipline_alerts.submit_tip(PLAIN_WORDS, sender="+15555550143")
    tipline_alerts.dispatch()
    later(tipline_alerts, 11)
    tipline_alerts.dispatch()
    assert len(mailbox.received) >= 3
    needles: list[str | bytes] = [*phone_formats(TIPSTER), *phone_formats("+15555550143"), "bleeding", "laundromat"]
    mail = tipline_alerts.data_dir.parent / "mail.eml"
    mail.write_bytes(b"\n".join(r.raw for r in mailbox.received))
    assert scan_files(tipline_alerts.data_dir, needles, [log_file, mail]) == []
    assert scan_database(tipline_alerts.runtime.engine, needles) == []


def test_preferences_are_checked(tipline_alerts: Harness) -> None:
    ctx = tipline_alerts.runtime.ctx
    person(tipline_alerts.app, ctx, "ana")
    assert alerts.preferences(ctx, "ana").choice == "urgent"  # the default for detectives
    with pytest.raises(alerts.PreferenceError):
        alerts.set_preferences(ctx, "ana", email="not an address", actor="ana")
    with pytest.raises(alerts.PreferenceError):
        alerts.set_preferences(ctx, "ana", choice="always", actor="ana")
    changed = alerts.set_preferences(ctx, "ana", email="ana@police.example", choice="mine", actor="ana")
    assert (changed.email, changed.choice) == ("ana@police.example", "mine")


BAD_SETTINGS = [
    ({"TIPLINE_SMTP_URL": "http://mail.example:25"}, "TIPLINE_SMTP_URL"),
    ({"TIPLINE_SMTP_URL": "smtp://bob:s3cretpw@mail.example:notaport"}, "TIPLINE_SMTP_URL"),
    ({"TIPLINE_SMTP_URL": "smtp://bob@mail.example:25"}, "TIPLINE_SMTP_URL"),
    ({"TIPLINE_SMTP_URL": "smtps://m.example", "TIPLINE_SMTP_CA_FILE": "/nonexistent/ca.pem"}, "TIPLINE_SMTP_CA_FILE"),
    ({"TIPLINE_ESCALATE_MINUTES": "0"}, "TIPLINE_ESCALATE_MINUTES"),
    ({"TIPLINE_ALERT_SMS_TO": "555-0177"}, "TIPLINE_ALERT_SMS_TO"),
    ({"TIPLINE_MAIL_FROM": "no at sign"}, "TIPLINE_MAIL_FROM"),
]


@pytest.mark.parametrize(("extra", "name"), BAD_SETTINGS)
def test_bad_alert_settings_name_the_variable_and_never_the_password(
    env: dict[str, str], extra: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**env, "TIPLINE_MAIL_FROM": MAIL_FROM, **extra})
    assert name in str(raised.value)
    assert "s3cretpw" not in str(raised.value)


def test_an_smtp_server_needs_a_sender(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="TIPLINE_MAIL_FROM"):
        load_settings({**env, "TIPLINE_SMTP_URL": "smtp://mail.example:25"})


def test_smtp_settings_parse_and_hide_the_password(env: dict[str, str]) -> None:
    settings = load_settings(
        {**env, "TIPLINE_SMTP_URL": "smtps://alerts%40pd:p%40ss@mail.example", "TIPLINE_MAIL_FROM": MAIL_FROM}
    )
    smtp = settings.smtp
    assert smtp is not None
    assert (smtp.implicit_tls, smtp.host, smtp.port, smtp.username, smtp.password) == (
        True,
        "mail.example",
        465,
        "alerts@pd",
        "p@ss",
    )
    assert "p@ss" not in repr(settings)


def test_users_add_and_set_take_an_email_and_an_alert_choice(cli_env: dict[str, str]) -> None:
    assert run(cli_env, "init").returncode == 0
    added = run(
        cli_env, "users", "add", "dana", "--role", "detective", "--email", "dana@police.example", "--alerts", "new"
    )
    assert added.returncode == 0, added.stderr
    refused = run(cli_env, "users", "add", "eve", "--role", "detective", "--email", "eve at police")
    assert refused.returncode == 2 and "does not look like an email address" in refused.stderr
    changed = run(cli_env, "users", "set", "dana", "--alerts", "mine")
    assert changed.stdout.strip() == "dana: alerts mine, an email address"
    cleared = run(cli_env, "users", "set", "dana", "--email", "")
    assert cleared.stdout.strip() == "dana: alerts mine, no email address"
    assert run(cli_env, "users", "set", "dana", "--alerts", "sometimes").returncode == 2
    runtime = build_runtime(load_settings(cli_env))
    try:
        assert alerts.preferences(runtime.ctx, "dana") == alerts.Preferences("dana", None, AlertChoice.MINE, True)
        with runtime.factory() as session:
            assert session.scalar(select(User.id).where(User.username == "eve")) is None  # nothing half-made
            entries = session.scalars(select(AuditEntry).where(AuditEntry.action == "user.alerts")).all()
        assert [(e.actor, e.object_id) for e in entries] == [("cli", "dana")] * 3
        assert all("police.example" not in e.detail for e in entries)  # the audit says "set", not the address
    finally:
        runtime.close()


def test_a_dispatcher_that_dies_mid_send_leaves_one_email(tipline_alerts: Harness, mailbox: Mailbox) -> None:
    ana = detective(tipline_alerts, "ana", "urgent")
    tipline_alerts.say(URGENT_WORDS)
    # Given a dispatcher that queued the alert, claimed it, began the attempt, and died before the send
    worker = tipline_alerts.runtime.alerts
    assert worker.derive() == 1
    (claimed,) = worker._claim()
    assert worker._load(claimed) is not None
    tipline_alerts.dispatch()
    assert mailbox.received == []  # its lease still holds
    # When the lease runs out, another pass sends it: once
    later(tipline_alerts, 2)
    tipline_alerts.dispatch()
    tipline_alerts.dispatch()
    assert [r.rcpt_tos for r in mailbox.received] == [[ana]]
    assert mailbox.received[0].message["Message-ID"] == f"<alert-{claimed}@police.example>"


def test_a_person_changes_their_own_alerts_in_the_console_and_it_is_audited(tipline_alerts: Harness) -> None:
    ctx = tipline_alerts.runtime.ctx
    person(tipline_alerts.app, ctx, "bo")
    dana = signed_in_new(tipline_alerts, "dana")
    page = dana.get("/console/alerts")
    assert page.status_code == 200 and 'value="urgent" checked' in page.get_data(as_text=True)
    # The username comes from the session: a form naming someone else changes only Dana's own
    saved = dana.post("/console/alerts", {"email": "dana@police.example", "alerts": "new", "username": "bo"})
    assert saved.status_code == 302
    assert alerts.preferences(ctx, "dana").choice == "new"
    assert alerts.preferences(ctx, "bo") == alerts.Preferences("bo", None, AlertChoice.URGENT, True)
    assert dana.post("/console/alerts", {"email": "x", "alerts": "new"}).status_code == 400
    assert dana.post("/console/alerts", {"email": "", "alerts": "new"}, csrf=False).status_code == 400  # CSRF
    with tipline_alerts.runtime.factory() as session:
        entry = session.scalars(select(AuditEntry).where(AuditEntry.action == "user.alerts")).one()
    assert (entry.actor, entry.object_id) == ("dana", "dana")


def signed_in_new(harness: Harness, name: str) -> Person:
    person(harness.app, harness.runtime.ctx, name)
    return signed_in(harness, name)


def test_settled_alerts_are_forgotten_after_thirty_days(tipline_alerts: Harness, mailbox: Mailbox) -> None:
    detective(tipline_alerts, "ana", "urgent")
    tipline_alerts.say(URGENT_WORDS)
    tipline_alerts.dispatch()
    assert len(mailbox.received) == 1
    runtime = tipline_alerts.runtime
    runtime.maintain()
    with runtime.factory() as session:
        assert len(session.scalars(select(Alert)).all()) == 1  # kept a while
    old = dataclasses.replace(runtime.ctx, clock=lambda: utcnow() + dt.timedelta(days=31))
    assert alerts.prune(old) == 1
    with runtime.factory() as session:
        assert session.scalars(select(Alert)).all() == []
