"""Threat: flooding the console's sign-in page stalls intake, and its answers tell usernames apart.

The attack: anyone who can reach the console posts sign-in attempts as fast as they can, for
unknown and for existing usernames. On SQLite every attempt held the database's write lock for the
whole argon2 check (~0.1 s), unknown names too, so every tipster's webhook queued behind it (p99 went
from 19 ms to ~470 ms). The attempt budget lived in each process's memory, so two processes gave
twice the attempts, and it was per address only. A locked account answered without hashing, so
the time of the answer told a locked account from others.

What must hold:
- no transaction is open while a password is verified, so a tipster's text is taken meanwhile;
- the budgets live in the database: every process counts the same attempts, per client address
  (20 a minute) and per username (10 a minute), and one attacker spends only the budgets of the
  addresses they use and the usernames they try;
- unknown, locked, disabled and existing accounts go through the same steps: exactly one password
  verification each, and the same answer;
- a flood from many addresses (which no budget stops) gets only a few verifications at a time, at a
  lower CPU priority than webhooks; the attempts beyond them are answered 503 at once.
"""

from __future__ import annotations

import itertools
import os
import random
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import select, update

from tests.support.console import PASSWORD, Person, person
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import Harness, inbound_form, make_harness, sign
from tests.support.sign_in import CHEAP, CountingHasher, attempt, client_at, use_hasher
from tipline.services import accounts, auth
from tipline.services.maintenance import purge
from tipline.storage.models import AuditEntry, SignInAttempt, Tip, User

PROBE_TIMEOUT = 5.0  # far longer than a webhook takes; a lock held across the hash makes it wait forever
SLOW = 2.0  # seconds each password verification is made to take in the flood test


def tipster(n: int) -> str:
    return f"+155555501{n % 100:02d}"


def deliver_text(tipline: Harness, body: str, sender: str) -> int:
    """An inbound SMS through the webhook, from a client of its own (safe from any thread)."""
    form = inbound_form(body, sender)
    signature = sign("/webhooks/twilio/sms", form, base=tipline.public_url)
    client = tipline.app.test_client()
    return client.post("/webhooks/twilio/sms", data=form, headers={"X-Twilio-Signature": signature}).status_code


def lock(tipline: Harness, username: str) -> None:
    with tipline.runtime.factory.begin() as session:
        session.execute(
            update(User).where(User.username == username).values(locked_until=auth.utcnow() + auth.Policy().lock)
        )


def message(response) -> str:  # type: ignore[no-untyped-def]
    """What a failed sign-in says (the page's main part, before its fresh CSRF token)."""
    return response.get_data(as_text=True).split("<main")[1].split('name="csrf_token"')[0]


def test_a_text_is_taken_while_a_password_is_being_verified(tipline: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    probes: list[bool] = []
    outcomes: list[int] = []
    stragglers: list[threading.Thread] = []

    def probe() -> None:
        # While a password is being verified, a tipster texts and an admin's change touches every account
        def work() -> None:
            outcomes.append(deliver_text(tipline, "A stolen van is parked behind the mill", tipster(len(probes))))
            with tipline.runtime.factory.begin() as session:
                session.execute(update(User).values(failed_logins=User.failed_logins))

        thread = threading.Thread(target=work, daemon=True)
        thread.start()
        thread.join(PROBE_TIMEOUT)
        probes.append(not thread.is_alive())
        stragglers.append(thread)

    person(tipline.app, tipline.runtime.ctx, "dana")
    person(tipline.app, tipline.runtime.ctx, "erin")
    lock(tipline, "erin")
    hasher = CountingHasher(CHEAP, during_verify=probe)
    use_hasher(monkeypatch, hasher)
    # An attacker tries unknown, existing and locked usernames
    tries = [("nobody", "guess-one"), ("dana", "guess-two"), ("erin", PASSWORD), ("dana", PASSWORD)]
    statuses = [
        attempt(tipline.app, name, pw, address=f"192.0.2.{i}").status_code for i, (name, pw) in enumerate(tries)
    ]
    for thread in stragglers:
        thread.join(60)
    assert probes == [True] * hasher.verifications, "a write waited for a password verification"
    assert outcomes == [200] * hasher.verifications
    assert statuses == [401, 401, 401, 302]
    assert hasher.verifications == len(tries)


def test_webhooks_stay_fast_while_the_sign_in_page_is_flooded(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each verification sleeps for SLOW seconds (no CPU taken), so that a lock held across it would show
    hasher = CountingHasher(CHEAP, during_verify=lambda: time.sleep(SLOW))
    use_hasher(monkeypatch, hasher)
    person(tipline.app, tipline.runtime.ctx, "dana")
    stop = threading.Event()
    flood_statuses: list[int] = []

    def flood() -> None:
        for i in itertools.count():
            if stop.is_set():
                return
            name = "dana" if i % 3 == 0 else f"nobody{i}"
            flood_statuses.append(attempt(tipline.app, name, address=f"198.51.100.{i % 250 + 1}").status_code)

    attacker = threading.Thread(target=flood, daemon=True)
    attacker.start()
    try:
        while hasher.verifications == 0:
            time.sleep(0.01)
        latencies = []
        for n in range(8):
            time.sleep(random.uniform(0.05, 0.3))
            started = time.monotonic()
            assert deliver_text(tipline, "Someone sells stolen phones at the bus station", tipster(n)) == 200
            latencies.append(time.monotonic() - started)
    finally:
        stop.set()
        attacker.join(30)
    assert set(flood_statuses) <= {401}
    assert max(latencies) < SLOW / 2, [f"{s:.3f}" for s in latencies]
    with tipline.runtime.factory() as session:
        assert len(session.scalars(select(Tip.id)).all()) == 8


def test_attempts_beyond_the_password_verifiers_are_refused_at_once(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A flood from many addresses passes every budget: what bounds it is how many verifications run at once
    release = threading.Event()
    hasher = CountingHasher(CHEAP, during_verify=lambda: release.wait(PROBE_TIMEOUT))
    use_hasher(monkeypatch, hasher)
    monkeypatch.setattr(auth, "VERIFIERS", auth.Verifiers(workers=1, waiting=0))
    statuses: list[int] = []
    first = threading.Thread(
        target=lambda: statuses.append(attempt(tipline.app, "nobody1", address="192.0.2.1").status_code)
    )
    first.start()
    try:
        while hasher.verifications == 0:
            time.sleep(0.01)
        refused = attempt(tipline.app, "nobody2", address="192.0.2.2")
    finally:
        release.set()
        first.join(60)
    assert refused.status_code == 503
    assert "Try again in a moment" in message(refused)
    assert statuses == [401]
    assert hasher.verifications == 1  # the refused attempt was neither hashed nor counted
    with tipline.runtime.factory() as session:
        assert len(session.scalars(select(SignInAttempt.key)).all()) == 2  # the first attempt's two budgets
    assert attempt(tipline.app, "nobody3", address="192.0.2.3").status_code == 401  # the verifier is free again


@pytest.mark.skipif(sys.platform != "linux", reason="threads have a priority of their own on Linux")
def test_passwords_are_verified_below_the_priority_of_webhooks(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    use_hasher(
        monkeypatch,
        CountingHasher(
            CHEAP, during_verify=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id()))
        ),
    )
    monkeypatch.setattr(auth, "VERIFIERS", auth.Verifiers(workers=1, waiting=0))  # fresh threads, made for this test
    assert attempt(tipline.app, "nobody").status_code == 401
    ours = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assert seen == [min(19, ours + auth.VERIFIER_NICENESS)]


def test_the_budget_of_a_client_address_is_shared_by_every_process(
    tipline: Harness,
    env: dict[str, str],
    twilio_server: FakeTwilio,
    log_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    use_hasher(monkeypatch, CHEAP)
    other = make_harness(env, twilio_server, log_file)  # a second process on the same database
    try:
        apps = itertools.cycle([tipline.app, other.app])
        statuses = [attempt(next(apps), f"nobody{i}", address="192.0.2.7").status_code for i in range(21)]
        assert statuses == [401] * 20 + [429]
        assert attempt(tipline.app, "somebody", address="192.0.2.7").status_code == 429
        assert attempt(other.app, "somebody", address="192.0.2.8").status_code == 401  # another address
    finally:
        other.runtime.close()


def test_one_attacker_spends_only_the_budgets_of_the_names_and_addresses_they_use(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_hasher(monkeypatch, CHEAP)
    for name in ("dana", "erin", "frank"):
        person(tipline.app, tipline.runtime.ctx, name)
    # An attacker guessing dana's password from ever new addresses is stopped by her username's budget
    on_dana = [attempt(tipline.app, "dana", address=f"192.0.2.{i}").status_code for i in range(1, 12)]
    assert on_dana == [401] * 10 + [429]
    # An attacker spraying usernames from one address is stopped by that address's budget
    sprayed = [attempt(tipline.app, f"user{i}", address="198.51.100.66").status_code for i in range(21)]
    assert sprayed == [401] * 20 + [429]
    for _ in range(5):  # refusals from then on cost a read each: nothing is written, nothing audited
        assert attempt(tipline.app, "user99", address="198.51.100.66").status_code == 429
    # Others, at their own addresses, are not affected
    erin = Person(client_at(tipline.app, "203.0.113.5"), "erin")
    assert erin.sign_in().location.endswith("/console/")
    assert attempt(tipline.app, "frank", address="203.0.113.6").status_code == 401  # wrong password, not 429
    with tipline.runtime.factory() as session:
        refusals = session.scalars(
            select(AuditEntry.detail).where(AuditEntry.outcome == "refused").order_by(AuditEntry.id)
        ).all()
    assert refusals == [
        '{"budget":"username","reason":"too many attempts"}',
        '{"budget":"address","reason":"too many attempts"}',
    ]


def test_unknown_locked_and_existing_accounts_take_the_same_path(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    hasher = CountingHasher(CHEAP)
    use_hasher(monkeypatch, hasher)
    dana = person(tipline.app, tipline.runtime.ctx, "dana")
    assert dana.sign_in().location.endswith("/console/")
    person(tipline.app, tipline.runtime.ctx, "erin")
    lock(tipline, "erin")
    person(tipline.app, tipline.runtime.ctx, "frank")
    accounts.set_disabled(tipline.runtime.ctx, "frank")
    cases = {
        "unknown": ("nobody", PASSWORD, "123456"),
        "impossible name": ("no body\x00", PASSWORD, "123456"),
        "locked, right password": ("erin", PASSWORD, ""),
        "disabled, right password": ("frank", PASSWORD, ""),
        "wrong password": ("dana", "not the password!", dana.next_code()),
        "wrong code": ("dana", dana.password, "000000"),
    }
    answers = {}
    for n, (case, (username, password, code)) in enumerate(cases.items()):
        before = hasher.verifications
        response = attempt(tipline.app, username, password, code, address=f"192.0.2.{n + 1}")
        assert hasher.verifications - before == 1, case
        assert response.status_code == 401, case
        answers[case] = message(response)
    assert len(set(answers.values())) == 1, answers
    before = hasher.verifications
    assert attempt(tipline.app, "dana", dana.password, dana.next_code(), address="192.0.2.99").status_code == 302
    assert hasher.verifications - before == 1


def test_the_budgets_keep_only_keyed_hashes_and_only_for_a_while(
    tipline: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_hasher(monkeypatch, CHEAP)
    attempt(tipline.app, "dana", address="192.0.2.77")
    with tipline.runtime.factory() as session:
        kept = session.scalars(select(SignInAttempt.key)).all()
    assert len(kept) == 2
    assert not any("192.0.2.77" in key or "dana" in key for key in kept)
    assert all(len(key) == 64 and int(key, 16) >= 0 for key in kept)
    # The periodic upkeep forgets them once they are older than the budgets' window
    purge(tipline.runtime.intake, tipline.runtime.settings.retention_days, now=auth.utcnow() + auth.Policy().window)
    with tipline.runtime.factory() as session:
        assert session.scalars(select(SignInAttempt.key)).all() == []
