"""Console sign-in: argon2id passwords, mandatory single-use TOTP, lockout, server-side sessions.

Order matters for cost: a locked account or a client over its attempt budget is refused before
any password hashing (argon2 costs ~0.1 s, so unthrottled guesses would saturate the server).
Every refusal says the same thing, whichever factor was wrong.

The console calls the functions that take a `ctx` (sign_in, resume, enrol, change_password,
sign_out): each is one transaction with its audit entry. The others work inside a caller's
transaction and are their building blocks.
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import secrets
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass

import pyotp
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tipline.config import Settings
from tipline.core import crypto
from tipline.core.crypto import Keyring
from tipline.core.vocabulary import KeyPurpose, Role
from tipline.services import audit
from tipline.services.accounts import UserError, check_password, hasher
from tipline.services.context import ServiceContext
from tipline.storage import records
from tipline.storage.models import ConsoleSession, User, utcnow

SIGN_IN_FAILED = "Sign-in failed. Check your username, password and code, then try again."
MAX_FAILURES = 5  # consecutive failures before the account locks (CJIS AC-7)
TOTP_PERIOD = 30
# A real hash to verify against when the username is unknown, so both cases cost the same.
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


class SessionEnded(Exception):
    """The console session ended (signed out elsewhere, disabled, expired) during the request."""


@dataclass(frozen=True)
class Policy:
    idle: dt.timedelta = dt.timedelta(minutes=15)
    lifetime: dt.timedelta = dt.timedelta(hours=12)
    lock: dt.timedelta = dt.timedelta(minutes=30)

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


class AttemptBudget:
    """At most `limit` sign-in attempts per client per minute, counted in memory before hashing."""

    def __init__(self, limit: int = 10, window: float = 60.0):
        self.limit = limit
        self.window = window
        self._attempts: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def allow(self, client: str) -> bool:
        now = time.monotonic()
        with self._lock:
            attempts = self._attempts[client]
            while attempts and attempts[0] < now - self.window:
                attempts.popleft()
            if len(attempts) >= self.limit:
                return False
            attempts.append(now)
            return True


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
    `last_step`; None otherwise. Each code is accepted once (CJIS IA-2(8))."""
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == 6):
        return None
    totp = pyotp.TOTP(secret, interval=TOTP_PERIOD)
    current = int((now if now is not None else time.time()) // TOTP_PERIOD)
    for step in (current - 1, current, current + 1):
        if step > last_step and secrets.compare_digest(totp.at(step * TOTP_PERIOD), code):
            return step
    return None


def authenticate(
    session: Session,
    keyring: Keyring,
    policy: Policy,
    username: str,
    password: str,
    code: str,
    now: dt.datetime | None = None,
    clock: float | None = None,
) -> User:
    """Check password and (once enrolled) TOTP code; raise SignInFailed with an audit reason."""
    now = now or utcnow()
    user = session.scalars(select(User).where(User.username == username.strip().lower()).with_for_update()).first()
    if user is None:
        _verify_password(_DUMMY_HASH, password)
        raise SignInFailed("unknown user")
    if user.locked_until is not None and user.locked_until > now:
        raise SignInFailed("account locked")  # refused before hashing
    ok = _verify_password(user.password_hash, password)
    reason = "wrong password"
    if ok and user.totp_secret_ct is not None:
        step = accept_totp(totp_secret(keyring, user), code, user.totp_last_step, clock)
        if step is None:
            ok, reason = False, "wrong or reused code"
        else:
            user.totp_last_step = step
    if not ok:
        user.failed_logins += 1
        if user.failed_logins >= MAX_FAILURES:
            user.locked_until = now + policy.lock
            user.failed_logins = 0
            reason += "; account locked"
        raise SignInFailed(reason)
    if user.disabled:
        raise SignInFailed("account disabled")
    user.failed_logins = 0
    user.locked_until = None
    if hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hasher.hash(password)
    return user


def _verify_password(stored: str, password: str) -> bool:
    try:
        return hasher.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False


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


def sign_in(ctx: ServiceContext, username: str, password: str, code: str, clock: float | None = None) -> SignedIn:
    """Check the credentials and start a session; the attempt is audited either way.

    Raises SignInFailed once the failure (its count, a lock, its audit entry) is committed.
    """
    failure: SignInFailed | None = None
    policy = Policy.of(ctx.settings)
    with ctx.factory.begin() as session:
        try:
            user = authenticate(session, ctx.keyring, policy, username, password, code, ctx.now(), clock)
        except SignInFailed as error:
            failure = error
            known = error.reason != "unknown user"
            audit.record(
                session,
                ctx.keyring,
                "auth.sign_in",
                actor=username.strip().lower() if known else None,
                outcome="failed",
                detail={"reason": error.reason},
            )
        else:
            token, record = start_session(session, user, ctx.now())
            audit.record(session, ctx.keyring, "auth.sign_in", actor=user.username, outcome="ok")
            signed_in = SignedIn(token, _visit(record, user))
    if failure is not None:
        raise failure
    return signed_in


def resume(ctx: ServiceContext, token: str | None, *, touch: bool = True) -> Visit | None:
    """The live session behind a cookie token, or None; `touch` counts this request as activity."""
    with ctx.factory.begin() as session:
        loaded = load_session(session, token, Policy.of(ctx.settings), ctx.now(), touch=touch)
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
        audit.record(session, ctx.keyring, "auth.enrol_totp", actor=visit.username, outcome="ok" if ok else "failed")
        return Stage(record.stage) if ok else None


def change_password(ctx: ServiceContext, visit: Visit, new: str, again: str) -> None:
    """Replace a one-time password with one of the person's own; UserError says what is wrong with it."""
    check_password(new)
    if new != again:
        raise UserError("the two passwords differ")
    with ctx.factory.begin() as session:
        record, user = _live(session, visit)
        if _verify_password(user.password_hash, new):
            raise UserError("choose a password you have not used here")
        user.password_hash = hasher.hash(new)
        user.must_change_password = False
        advance(record, user)
        audit.record(session, ctx.keyring, "auth.password_change", actor=visit.username)


def sign_out(ctx: ServiceContext, token: str | None, csrf_token: str) -> bool:
    """End the session behind `token`, audited. False (and nothing ends) when `csrf_token` is not
    the session's: a sign-out forged by another site must not end anyone's session."""
    with ctx.factory.begin() as session:
        loaded = load_session(session, token, Policy.of(ctx.settings), ctx.now(), touch=False)
        if loaded is not None:
            record, user = loaded
            if not secrets.compare_digest(csrf_token, record.csrf_token):
                return False
            audit.record(session, ctx.keyring, "auth.sign_out", actor=user.username)
        end_session(session, token)
    return True
