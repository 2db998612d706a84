"""Console accounts: detectives and administrators, passwords hashed with argon2id.

Each action takes an `actor` (who asked for it: a console username, "cli" or "init"); with one, the
action and its audit entry commit together.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable

from argon2 import PasswordHasher
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tipline.core.vocabulary import Role
from tipline.services import audit
from tipline.services.context import ServiceContext
from tipline.storage.models import ConsoleSession, User

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")

hasher = PasswordHasher()  # argon2id, argon2-cffi's defaults (t=3, m=64 MiB, p=4): above ASVS minimums


class UserError(ValueError):
    pass


def generate_password() -> str:
    """A one-time password: 20 URL-safe characters, about 120 bits."""
    return secrets.token_urlsafe(15)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise UserError(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise UserError(f"the password must be at most {MAX_PASSWORD_LENGTH} characters")


def normalise_roles(roles: str | Iterable[str]) -> list[Role]:
    """The roles named (a space-separated string or a collection), each once, in Role's order."""
    wanted = set(roles.split()) if isinstance(roles, str) else set(roles)
    if not wanted or not wanted <= set(Role):
        raise UserError(f"roles must be among {', '.join(Role)}")
    return [role for role in Role if role in wanted]


def normalise_username(username: str) -> str:
    return username.strip().lower()


def add_user(
    ctx: ServiceContext,
    username: str,
    roles: str | Iterable[str],
    password: str,
    must_change: bool = False,
    *,
    actor: str | None = None,
) -> User:
    """Create an account; `must_change` when `password` is a one-time password someone else will read."""
    username = normalise_username(username)
    if not username or not set(username) <= USERNAME_CHARS or len(username) > 64:
        raise UserError("usernames use a-z, 0-9, '.', '_' and '-' (at most 64)")
    role_list = normalise_roles(roles)
    check_password(password)
    with ctx.factory.begin() as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            raise UserError(f"user {username} already exists")
        user = User(
            username=username,
            roles=" ".join(role_list),
            password_hash=hasher.hash(password),
            disabled=False,
            must_change_password=must_change,
            totp_last_step=0,
            failed_logins=0,
        )
        session.add(user)
        _audit(session, ctx, "user.create", actor, username, {"roles": sorted(role_list)})
        return user


def list_users(ctx: ServiceContext) -> list[User]:
    with ctx.factory() as session:
        return list(session.scalars(select(User).order_by(User.username)))


def set_disabled(ctx: ServiceContext, username: str, disabled: bool = True, *, actor: str | None = None) -> None:
    """Disable (or enable again) an account; disabling ends its sessions at once, not at the next sign-in."""
    with ctx.factory.begin() as session:
        user = _user(session, username)
        user.disabled = disabled
        if disabled:
            end_sessions(session, user.id)
        _audit(session, ctx, "user.disable" if disabled else "user.enable", actor, user.username)


def reset_2fa(ctx: ServiceContext, username: str, *, actor: str | None = None) -> None:
    """Forget the TOTP secret (the account enrols again at next sign-in) and end its sessions."""
    with ctx.factory.begin() as session:
        user = _user(session, username)
        user.totp_secret_ct = None
        user.totp_kek_version = None
        end_sessions(session, user.id)
        _audit(session, ctx, "user.reset-2fa", actor, user.username)


def unlock(ctx: ServiceContext, username: str, *, actor: str | None = None) -> None:
    """Release an account locked after failed sign-ins."""
    with ctx.factory.begin() as session:
        user = _user(session, username)
        user.failed_logins = 0
        user.locked_until = None
        _audit(session, ctx, "user.unlock", actor, user.username)


def end_sessions(session: Session, user_id: int) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))


def any_users(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None


def _user(session: Session, username: str) -> User:
    user = session.scalars(select(User).where(User.username == normalise_username(username))).first()
    if user is None:
        raise UserError(f"no user {username}")
    return user


def _audit(
    session: Session,
    ctx: ServiceContext,
    action: str,
    actor: str | None,
    username: str,
    detail: dict[str, object] | None = None,
) -> None:
    if actor is not None:
        audit.record(
            session,
            ctx.keyring,
            action,
            actor=actor,
            object_type="user",
            object_id=username,
            detail=detail,
            now=ctx.now(),
        )
