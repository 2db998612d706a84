"""Console sign-in: argon2id passwords, mandatory single-use TOTP, lockout, server-side sessions.

A sign-in attempt runs in three steps, and the password hash (argon2, ~0.1 s) runs in none of the
transactions. On SQLite a write transaction holds every writer of the process, intake included, so:
  1. one short write counts the attempt against its budgets and reads the account;
  2. with no transaction open, the password is verified (exactly once, whatever the account's
     state: unknown and locked accounts are verified against a dummy hash, so that no one can tell
     them from a wrong password by the time the answer takes), then the code;
  3. one short write records the outcome (failure count, lock, session) with its audit entry,
     checking again what may have changed since step 1 (a lock, a code used meanwhile).

The budgets live in the database, so every process counts the same attempts: each client address
gets `Policy.per_address` attempts a minute, each username `Policy.per_username`, besides the lock
after `MAX_FAILURES` failures. They are counted before any hashing. A refusal costs one read; the
first refusal of each budget is recorded (so the count passes the limit) and audited, later ones
are not, so that a flood of refused attempts writes nothing. Counts are kept under keyed hashes of
the username and the address, never the address itself. An IPv6 client counts as its /64
(`address_budget_key`): it may use any address of it.

Password verifications run in a few threads of their own (`VERIFIERS`), at a lower CPU priority
than the threads answering webhooks, only as many at once as fill the cores (each runs on argon2's
lanes), with one more waiting per core: beyond that an attempt is answered Busy at once, before
anything is read or hashed.
A flood from many addresses (no budget stops a botnet) would otherwise take every server thread
and every core, and tipsters' webhooks would wait behind it.

Every refusal says the same thing, whichever factor was wrong. The console calls the functions
that take a `ctx` (sign_in, resume, enrol, change_password, sign_out); the others are their
building blocks.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import ipaddress
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyotp
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from tipline.config import Settings
from tipline.core import crypto
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import KeyPurpose, Role
from tipline.services import audit
from tipline.services.accounts import USERNAME_CHARS, UserError, check_password, hasher, normalise_username
from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.db import read_only, rowcount
from tipline.storage.models import ConsoleSession, SignInAttempt, User, utcnow

SIGN_IN_FAILED = "Sign-in failed. Check your username, password and code, then try again."
MAX_FAILURES = 5  # consecutive failures before the account locks (CJIS AC-7)
TOTP_PERIOD = 30
# A session's activity is recorded at most this often: it may end up to this much before its idle
# limit, never after (a request that changes nothing writes nothing).
TOUCH_EVERY = dt.timedelta(minutes=1)
COUNTED = ("wrong password", "wrong or reused code")  # the failures that count toward the lock
# A real hash to verify against when the account is unknown or locked, so every case costs the same.
_DUMMY_HASH = hasher.hash(secrets.token_urlsafe(16))


class Stage(enum.StrEnum):
    """How far a console session got: only FULL sessions reach tips and administration."""

    ENROL = "enrol"  # password checked; the authenticator app is not enrolled yet
    PASSWORD = "password"  # enrolled; a one-time password must still be replaced
    FULL = "full"


class SignInFailed(Exception):
    def __init__(self, reason: str):
        super().__init__(SIGN_IN_FAILED)
        self.reason = reason  # for the audit log only: never shown to the person signing in


class TooManyAttempts(Exception):
    """A sign-in budget (of the client address or of the username) is spent for now."""


class Busy(Exception):
    """Every password verifier is taken (a flood of attempts): refused at once, nothing read or hashed."""


class SessionEnded(Exception):
    """The console session ended (signed out elsewhere, disabled, expired) during the request."""


@dataclass(frozen=True)
class Policy:
    idle: dt.timedelta = dt.timedelta(minutes=15)
    lifetime: dt.timedelta = dt.timedelta(hours=12)
    lock: dt.timedelta = dt.timedelta(minutes=30)
    window: dt.timedelta = dt.timedelta(minutes=1)  # the sign-in budgets are per this sliding window
    per_address: int = 20
    per_username: int = 10

    @classmethod
    def of(cls, settings: Settings) -> Policy:
        return cls(
            idle=dt.timedelta(minutes=settings.console_idle_minutes),
            lifetime=dt.timedelta(hours=settings.console_session_hours),
            lock=dt.timedelta(minutes=settings.console_lock_minutes),
        )


@dataclass(frozen=True)
class Visit:
    """A live console session, as the console sees it during one request."""

    session_id: str
    csrf_token: str
    stage: Stage
    user_id: int
    username: str
    roles: frozenset[Role]


@dataclass(frozen=True)
class SignedIn:
    token: str  # for the cookie; only its hash is stored
    visit: Visit


def same_token(sent: str, expected: str) -> bool:
    """Compare a token someone sent with the expected one, in constant time, whatever text was sent
    (`secrets.compare_digest` raises on non-ASCII strings; bytes it takes)."""
    return secrets.compare_digest(sent.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def _stage_for(user: User) -> Stage:
    if user.totp_secret_ct is None:
        return Stage.ENROL
    if user.must_change_password:
        return Stage.PASSWORD
    return Stage.FULL


def totp_secret(keyring: Keyring, user: User) -> str:
    assert user.totp_secret_ct is not None and user.totp_kek_version is not None
    return keyring.open_with(
        KeyPurpose.ACCOUNTS, user.totp_kek_version, user.totp_secret_ct, records.USER_TOTP.aad(str(user.id))
    ).decode()


def accept_totp(secret: str, code: str, last_step: int, now: float | None = None) -> int | None:
    """The time step a code belongs to (now, or one step either side), if it is newer than
    `last_step`; None otherwise. Each code is accepted once (CJIS IA-2(8)). A code is six ASCII
    digits: digits of other scripts ("١٢٣٤٥٦") are a wrong code like any other."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isascii() and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_PERIOD)
    current = int((now if now is not None else time.time()) // TOTP_PERIOD)
    for step in (current - 1, current, current + 1):
        if step > last_step and secrets.compare_digest(totp.at(step * TOTP_PERIOD), code):
            return step
    return None


# Budgets ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    kind: str  # "username" or "address", for the audit entry
    key: str  # keyed hash of the username or of the client address
    limit: int


def budgets(keyring: Keyring, policy: Policy, username: str, client: str) -> tuple[Budget, Budget]:
    """The budgets an attempt for `username` from the address `client` counts against."""
    _, by_name = keyring.keyed_hash("console-sign-in-username", username)
    _, by_address = keyring.keyed_hash("console-sign-in-address", address_budget_key(client))
    return Budget("username", by_name, policy.per_username), Budget("address", by_address, policy.per_address)


def address_budget_key(client: str) -> str:
    """What the per-address budget counts for the address `client`.

    An IPv6 address counts as its /64: a subscriber is given a whole /64 and a machine picks any
    address in it at will (privacy addresses change by themselves), so counting each address would
    give one client millions of budgets. An IPv4 address counts as itself, also when written as
    IPv4-mapped IPv6 (::ffff:203.0.113.5, as a dual-stack socket reports it). Anything else (no
    address known) counts as the text it is.
    """
    try:
        address = ipaddress.ip_address(client.strip())
    except ValueError:
        return client
    if isinstance(address, ipaddress.IPv4Address):
        return str(address)
    if address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    return f"{ipaddress.IPv6Address(int(address) >> 64 << 64)}/64"  # without any %zone: the same network


def _counts(session: Session, spent: Sequence[Budget], since: dt.datetime) -> dict[str, int]:
    query = (
        select(SignInAttempt.key, func.count())
        .where(SignInAttempt.key.in_([b.key for b in spent]), SignInAttempt.at > since)
        .group_by(SignInAttempt.key)
    )
    counts = {b.key: 0 for b in spent}
    counts.update((key, count) for key, count in session.execute(query))
    return counts


def _refuse(ctx: ServiceContext, first: Sequence[Budget], now: dt.datetime) -> TooManyAttempts:
    """Record and audit the first refusal of each budget (later ones, while the count stays above
    the limit, cost a read and write nothing)."""
    if first:
        with ctx.factory.begin() as session:
            session.add_all(SignInAttempt(key=b.key, at=now) for b in first)
            detail: dict[str, object] = {"reason": "too many attempts", "budget": ", ".join(b.kind for b in first)}
            audit.record(session, ctx.keyring, "auth.sign_in", outcome="refused", detail=detail, now=now)
    return TooManyAttempts()


def _could_exist(username: str) -> bool:
    # Names accounts cannot have are not looked up (a NUL would not even reach PostgreSQL).
    return 0 < len(username) <= 64 and set(username) <= USERNAME_CHARS


def _admit(
    ctx: ServiceContext, policy: Policy, spent: Sequence[Budget], username: str, now: dt.datetime
) -> User | None:
    """Count the attempt against its budgets and read the account, in one short write (the
    account read is detached, for use outside the transaction). TooManyAttempts if a budget is spent."""
    since = now - policy.window
    with read_only(ctx.factory) as session:
        counts = _counts(session, spent, since)
    if any(counts[b.key] >= b.limit for b in spent):
        raise _refuse(ctx, [b for b in spent if counts[b.key] == b.limit], now)
    with ctx.factory.begin() as session:
        session.add_all(SignInAttempt(key=b.key, at=now) for b in spent)
        session.flush()
        counts = _counts(session, spent, since)
        user = (
            session.scalars(select(User).where(User.username == username)).first() if _could_exist(username) else None
        )
    if any(counts[b.key] > b.limit for b in spent):
        raise TooManyAttempts()  # attempts running at the same time took the last ones
    return user


def forget_attempts(session: Session, now: dt.datetime, policy: Policy = Policy()) -> int:
    """Drop attempts older than the budgets' window (run by the periodic upkeep)."""
    return rowcount(session.execute(delete(SignInAttempt).where(SignInAttempt.at <= now - policy.window)))


# Checking credentials -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checked:
    """What the credentials proved, found with no transaction open."""

    reason: str | None  # why the attempt fails; None when every factor was right
    step: int | None = None  # the TOTP step of the code, to be recorded as used
    rehashed: str | None = None  # the password hashed with today's parameters, when they changed


def _locked(user: User, now: dt.datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


def check(
    keyring: Keyring, user: User | None, password: str, code: str, now: dt.datetime, clock: float | None = None
) -> Checked:
    """Verify the password and then the code. Exactly one argon2 verification runs whatever the
    account's state, so unknown, locked and existing accounts take the same time. Call it with no
    transaction open: on SQLite one would hold every writer, intake included, for the whole hash."""
    usable = user if user is not None and not _locked(user, now) else None
    right = _verify_password(usable.password_hash if usable is not None else _DUMMY_HASH, password)
    if user is None:
        return Checked("unknown user")
    if usable is None:
        return Checked("account locked")
    if not right:
        return Checked("wrong password")
    step = None
    if usable.totp_secret_ct is not None:
        step = accept_totp(totp_secret(keyring, usable), code, usable.totp_last_step, clock)
        if step is None:
            return Checked("wrong or reused code")
    rehashed = hasher.hash(password) if hasher.check_needs_rehash(usable.password_hash) else None
    return Checked(None, step, rehashed)


VERIFIER_NICENESS = 10  # how much lower than the rest of the process the verifiers run (19 at most)


def _lower_priority() -> None:
    """Run this thread, and the threads argon2 starts from it for its lanes, at a lower CPU priority.

    Linux schedules each thread on its own and a new thread inherits its creator's niceness. Elsewhere
    the call would name a process, not this thread, so the verifiers keep the process's priority."""
    if sys.platform == "linux":
        thread = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, thread, min(19, os.getpriority(os.PRIO_PROCESS, thread) + VERIFIER_NICENESS))


class Verifiers:
    """Where sign-in passwords are verified: `workers` at a time in threads of lower priority, and
    at most `waiting` more attempts queued for them; any further attempt is refused with Busy."""

    def __init__(self, workers: int, waiting: int):
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers + waiting)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def slot(self) -> None:
        """Take a place, or raise Busy; give it back with `release`."""
        if not self._slots.acquire(blocking=False):
            raise Busy()

    def release(self) -> None:
        self._slots.release()

    def run(self, work: Callable[[], Checked]) -> Checked:
        """`work` in a verifier thread (the caller holds a slot); its result or its exception."""
        with self._lock:  # started on first use: a process forked before that gets threads of its own
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, "password-verifier", initializer=_lower_priority)
        return self._pool.submit(work).result()


# One verification already runs on `parallelism` threads (argon2's lanes): as many at once as fill the cores.
VERIFIERS = Verifiers(workers=max(1, (os.cpu_count() or 1) // hasher.parallelism), waiting=os.cpu_count() or 1)


def _verify_password(stored: str, password: str) -> bool:
    try:
        return bool(hasher.verify(stored, password))
    except (VerificationError, InvalidHashError):
        return False


def _changed_since(fresh: User, seen: User, checked: Checked, now: dt.datetime) -> str | None:
    """Why an attempt whose credentials were right fails after all, given the account as it is now."""
    if _locked(fresh, now):
        return "account locked"
    if fresh.password_hash != seen.password_hash or fresh.totp_secret_ct != seen.totp_secret_ct:
        return "credentials changed during sign-in"
    if checked.step is not None and checked.step <= fresh.totp_last_step:
        return "wrong or reused code"  # the same code was accepted meanwhile
    if fresh.disabled:
        return "account disabled"
    return None


def _count_failure(user: User, policy: Policy, now: dt.datetime, reason: str) -> str:
    if reason not in COUNTED:
        return reason
    user.failed_logins += 1
    if user.failed_logins < MAX_FAILURES:
        return reason
    user.locked_until = now + policy.lock
    user.failed_logins = 0
    return reason + "; account locked"


def _settle(
    ctx: ServiceContext, policy: Policy, seen: User | None, checked: Checked, now: dt.datetime
) -> SignedIn | SignInFailed:
    """Record the outcome of an attempt in one short write, with its audit entry."""
    with ctx.factory.begin() as session:
        fresh = None if seen is None else session.get(User, seen.id, with_for_update=True)
        if seen is None or fresh is None:
            unknown = checked.reason or "unknown user"
            audit.record(session, ctx.keyring, "auth.sign_in", outcome="failed", detail={"reason": unknown}, now=now)
            return SignInFailed(unknown)
        why = checked.reason or _changed_since(fresh, seen, checked, now)
        if why is not None:
            why = _count_failure(fresh, policy, now, why)
            detail: dict[str, object] = {"reason": why}
            audit.record(
                session, ctx.keyring, "auth.sign_in", actor=fresh.username, outcome="failed", detail=detail, now=now
            )
            return SignInFailed(why)
        fresh.failed_logins = 0
        fresh.locked_until = None
        if checked.step is not None:
            fresh.totp_last_step = checked.step
        if checked.rehashed is not None:
            fresh.password_hash = checked.rehashed
        token, record = start_session(session, fresh, now)
        audit.record(session, ctx.keyring, "auth.sign_in", actor=fresh.username, outcome="ok", now=now)
        return SignedIn(token, _visit(record, fresh))


# Sessions -----------------------------------------------------------------------------------------


def _token_id(token: str) -> str:
    # Only the hash is stored: a copy of the database does not hand out live sessions.
    return hashlib.sha256(token.encode()).hexdigest()


def start_session(session: Session, user: User, now: dt.datetime | None = None) -> tuple[str, ConsoleSession]:
    """A new session (and cookie token) for a user who just proved who they are."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    record = ConsoleSession(
        id=_token_id(token),
        user_id=user.id,
        stage=_stage_for(user),
        csrf_token=secrets.token_urlsafe(32),
        created_at=now,
        last_seen_at=now,
    )
    session.add(record)
    return token, record


def load_session(
    session: Session,
    token: str | None,
    policy: Policy,
    now: dt.datetime | None = None,
    touch: bool = True,
) -> tuple[ConsoleSession, User] | None:
    """The live session behind a cookie token, or None (idle, expired, revoked or unknown)."""
    if not token or len(token) > 100:
        return None
    now = now or utcnow()
    record = session.get(ConsoleSession, _token_id(token))
    if record is None:
        return None
    user = session.get(User, record.user_id)
    expired = now - record.last_seen_at > policy.idle or now - record.created_at > policy.lifetime
    if user is None or user.disabled or expired:
        session.delete(record)
        return None
    if touch:
        record.last_seen_at = now
    return record, user


def end_session(session: Session, token: str | None) -> None:
    if token:
        session.execute(delete(ConsoleSession).where(ConsoleSession.id == _token_id(token)))


def advance(record: ConsoleSession, user: User) -> None:
    record.stage = _stage_for(user)


# Enrolment --------------------------------------------------------------------------------------------


def pending_secret(keyring: Keyring, record: ConsoleSession) -> str:
    """The TOTP secret being enrolled in this session (created on first use, kept encrypted)."""
    aad = records.SESSION_PENDING_TOTP.aad(record.id)
    if record.pending_totp_ct is None:
        secret = pyotp.random_base32(32)  # 160 bits
        _, record.pending_totp_ct = keyring.seal_with(KeyPurpose.ACCOUNTS, secret.encode(), aad)
        return secret
    version = keyring.primary_version(KeyPurpose.ACCOUNTS)
    try:
        return keyring.open_with(KeyPurpose.ACCOUNTS, version, record.pending_totp_ct, aad).decode()
    except (crypto.IntegrityError, crypto.MissingKeyError):
        record.pending_totp_ct = None  # the accounts key rotated mid-enrolment: start with a new secret
        return pending_secret(keyring, record)


def complete_enrolment(
    keyring: Keyring,
    record: ConsoleSession,
    user: User,
    code: str,
    clock: float | None = None,
) -> bool:
    secret = pending_secret(keyring, record)
    step = accept_totp(secret, code, 0, clock)
    if step is None:
        return False
    user.totp_kek_version, user.totp_secret_ct = keyring.seal_with(
        KeyPurpose.ACCOUNTS, secret.encode(), records.USER_TOTP.aad(str(user.id))
    )
    user.totp_last_step = step
    record.pending_totp_ct = None
    advance(record, user)
    return True


def provisioning_uri(secret: str, username: str, issuer: str) -> str:
    return pyotp.TOTP(secret, interval=TOTP_PERIOD).provisioning_uri(name=username, issuer_name=issuer)


# The console's entry points ---------------------------------------------------------------------


def _visit(record: ConsoleSession, user: User) -> Visit:
    return Visit(
        session_id=record.id,
        csrf_token=record.csrf_token,
        stage=Stage(record.stage),
        user_id=user.id,
        username=user.username,
        roles=frozenset(Role(role) for role in user.role_set),
    )


def _live(session: Session, visit: Visit) -> tuple[ConsoleSession, User]:
    record = session.get(ConsoleSession, visit.session_id)
    user = session.get(User, visit.user_id)
    if record is None or user is None:
        raise SessionEnded(visit.username)
    return record, user


def sign_in(
    ctx: ServiceContext, username: str, password: str, code: str, *, client: str, clock: float | None = None
) -> SignedIn:
    """Check the credentials of an attempt from the address `client` and start a session; the
    attempt is audited either way (see the module's docstring for the steps).

    Raises Busy at once when every password verifier is taken, TooManyAttempts before any hashing
    when a budget is spent, and SignInFailed once the failure (its count, a lock, its audit entry)
    is committed.
    """
    policy, now = Policy.of(ctx.settings), ctx.now()
    name = normalise_username(username)
    VERIFIERS.slot()
    try:
        user = _admit(ctx, policy, budgets(ctx.keyring, policy, name, client), name, now)
        checked = VERIFIERS.run(lambda: check(ctx.keyring, user, password, code, now, clock))
    finally:
        VERIFIERS.release()
    outcome = _settle(ctx, policy, user, checked, now)
    if isinstance(outcome, SignInFailed):
        raise outcome
    return outcome


def resume(ctx: ServiceContext, token: str | None, *, touch: bool = True) -> Visit | None:
    """The live session behind a cookie token, or None; `touch` counts this request as activity.

    A session is only read when nothing needs writing: for the console's polls (no `touch`) and for
    requests within TOUCH_EVERY of its last recorded activity. On SQLite a write transaction holds
    every writer, intake included, and each detective's console makes several requests a minute.
    A session found ended is deleted, as before."""
    policy, now = Policy.of(ctx.settings), ctx.now()
    with read_only(ctx.factory) as session:
        loaded = load_session(session, token, policy, now, touch=False)
        ended = bool(session.deleted)
    if loaded is not None and (not touch or now - loaded[0].last_seen_at < TOUCH_EVERY):
        return _visit(*loaded)
    if loaded is None and not ended:
        return None
    with ctx.factory.begin() as session:
        loaded = load_session(session, token, policy, now, touch=touch)
        return None if loaded is None else _visit(*loaded)


@dataclass(frozen=True)
class Enrolment:
    secret: str  # base32, shown as text beside the QR code
    uri: str  # otpauth:// URI for the QR code


def enrolment(ctx: ServiceContext, visit: Visit) -> Enrolment:
    """The authenticator secret this session is enrolling (the same one until it is confirmed)."""
    with ctx.factory.begin() as session:
        record, _ = _live(session, visit)
        secret = pending_secret(ctx.keyring, record)
    return Enrolment(secret, provisioning_uri(secret, visit.username, ctx.settings.agency_name))


def enrol(ctx: ServiceContext, visit: Visit, code: str, clock: float | None = None) -> Stage | None:
    """Confirm the authenticator with a code from it; the session's next stage, or None if the code
    did not match. Audited either way."""
    with ctx.factory.begin() as session:
        record, user = _live(session, visit)
        ok = complete_enrolment(ctx.keyring, record, user, code, clock)
        if ok:  # a session opened before (perhaps by someone else) cannot enrol an authenticator of its own over it
            _end_other_sessions(session, record)
        audit.record(session, ctx.keyring, "auth.enrol_totp", actor=visit.username, outcome="ok" if ok else "failed")
        return Stage(record.stage) if ok else None


def change_password(ctx: ServiceContext, visit: Visit, new: str, again: str) -> None:
    """Replace a one-time password with one of the person's own and end the account's other
    sessions (whoever else knew the old password is signed out); UserError says what is wrong.

    Both argon2 operations run with no transaction open (on SQLite one would hold intake)."""
    check_password(new)
    if new != again:
        raise UserError("the two passwords differ")
    with read_only(ctx.factory) as session:
        _, user = _live(session, visit)
    if _verify_password(user.password_hash, new):
        raise UserError("choose a password you have not used here")
    new_hash = hasher.hash(new)
    with ctx.factory.begin() as session:
        record, user = _live(session, visit)
        user.password_hash = new_hash
        user.must_change_password = False
        advance(record, user)
        ended = _end_other_sessions(session, record)
        detail: dict[str, object] = {"other_sessions_ended": ended}
        audit.record(session, ctx.keyring, "auth.password_change", actor=visit.username, detail=detail, now=ctx.now())


def _end_other_sessions(session: Session, record: ConsoleSession) -> int:
    """End every session of the account but `record`, after a change of its credentials."""
    others = delete(ConsoleSession).where(ConsoleSession.user_id == record.user_id, ConsoleSession.id != record.id)
    return rowcount(session.execute(others))


def sign_out(ctx: ServiceContext, token: str | None, csrf_token: str) -> bool:
    """End the session behind `token`, audited. False (and nothing ends) when `csrf_token` is not
    the session's: a sign-out forged by another site must not end anyone's session."""
    with ctx.factory.begin() as session:
        loaded = load_session(session, token, Policy.of(ctx.settings), ctx.now(), touch=False)
        if loaded is not None:
            record, user = loaded
            if not same_token(csrf_token, record.csrf_token):
                return False
            audit.record(session, ctx.keyring, "auth.sign_out", actor=user.username)
        end_session(session, token)
    return True
