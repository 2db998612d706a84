"""Console accounts: detectives and administrators, passwords hashed with argon2id."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker

from tipline.storage.models import ConsoleSession, User

ROLES = ("detective", "admin")
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


def normalise_roles(roles: str | list[str] | tuple[str, ...] | set[str]) -> str:
    wanted = set(roles.split()) if isinstance(roles, str) else set(roles)
    if not wanted or not wanted <= set(ROLES):
        raise UserError(f"roles must be among {', '.join(ROLES)}")
    return " ".join(sorted(wanted, key=ROLES.index))


def add_user(
    factory: sessionmaker[Session], username: str, roles: str | list[str] | tuple[str, ...] | set[str], password: str,
    must_change: bool = False,
) -> User:
    username = username.strip().lower()
    if not username or not set(username) <= USERNAME_CHARS or len(username) > 64:
        raise UserError("usernames use a-z, 0-9, '.', '_' and '-' (at most 64)")
    role_text = normalise_roles(roles)
    check_password(password)
    with factory.begin() as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            raise UserError(f"user {username} already exists")
        user = User(
            username=username, roles=role_text, password_hash=hasher.hash(password),
            disabled=False, must_change_password=must_change, totp_last_step=0, failed_logins=0,
        )
        session.add(user)
        return user


def list_users(factory: sessionmaker[Session]) -> list[User]:
    with factory() as session:
        return list(session.scalars(select(User).order_by(User.username)))


def set_disabled(factory: sessionmaker[Session], username: str, disabled: bool = True) -> None:
    with factory.begin() as session:
        user = session.scalars(select(User).where(User.username == username.strip().lower())).first()
        if user is None:
            raise UserError(f"no user {username}")
        user.disabled = disabled
        if disabled:
            end_sessions(session, user.id)  # takes effect at once, not at the next sign-in


def reset_2fa(factory: sessionmaker[Session], username: str) -> None:
    """Forget the TOTP secret (the account enrols again at next sign-in) and end its sessions."""
    with factory.begin() as session:
        user = session.scalars(select(User).where(User.username == username.strip().lower())).first()
        if user is None:
            raise UserError(f"no user {username}")
        user.totp_secret_ct = None
        user.totp_kek_version = None
        end_sessions(session, user.id)


def unlock(factory: sessionmaker[Session], username: str) -> None:
    with factory.begin() as session:
        user = session.scalars(select(User).where(User.username == username.strip().lower())).first()
        if user is None:
            raise UserError(f"no user {username}")
        user.failed_logins = 0
        user.locked_until = None


def end_sessions(session: Session, user_id: int) -> None:
    session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id))


def any_users(session: Session) -> bool:
    return session.scalar(select(User.id).limit(1)) is not None
