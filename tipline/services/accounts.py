"""Console accounts: detectives and administrators, passwords hashed with argon2id.

Each action takes an `actor` (who asked for it: a console username, "cli" or "init"); with one, the
action and its audit entry commit together.

Who may give access to tips: only someone with a shell on the server. The console's `*_from_console`
functions refuse (and audit) whatever would let one admin reach tips: creating an account with the
detective role, or resetting a detective's authenticator (the next sign-in would enrol a new one).
Otherwise an admin who is not a detective could make a detective account, read its one-time
password and sign in as it. For the same reason the console may not grant the detective role to an
existing account, nor reset a detective's password (it may remove the role). The command line and
the Python API act as the shell they run in. But an admin may reset an admin-only account's
password and authenticator in the console, so granting the detective role to an existing account
renews its credentials too: whoever knew them keeps no way in to the tips (`set_roles`).

Whatever changes an account's credentials or roles ends its sessions at once, and nothing leaves
the installation without an active (enabled) administrator: the last one cannot be disabled or lose
the admin role, from the console or the command line.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from argon2 import PasswordHasher
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from tipline.core.vocabulary import Role
from tipline.services import audit
from tipline.services.context import ServiceContext
from tipline.storage.db import rowcount
from tipline.storage.models import ConsoleSession, User

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-")
# The audit log's actors for the command line and for `tipline init`: no account may look like them.
RESERVED_USERNAMES = frozenset({"cli", "init"})
SHELL_ONLY = (
    "Granting the detective role, and resetting a detective's password or authenticator, happen only on "
    "the server's command line, so that no single console account can give itself access to tips"
)
LAST_ADMIN = "the installation would have no active administrator left: give another account the admin role first"

hasher = PasswordHasher()  # argon2id, argon2-cffi's defaults (t=3, m=64 MiB, p=4): above ASVS minimums


class UserError(ValueError):
    pass


class ShellOnly(UserError):
    """Refused in the console: it would hand tips to whoever asked. `command` is the way that works."""

    def __init__(self, command: str):
        super().__init__(f"{SHELL_ONLY}. Someone with a shell on the server runs: {command}")
        self.command = command


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
    username = checked_username(username)
    role_list = normalise_roles(roles)
    check_password(password)
    password_hash = hasher.hash(password)  # before the transaction: argon2 must never hold the write lock
    with ctx.factory.begin() as session:
        if session.scalar(select(User.id).where(User.username == username)) is not None:
            raise UserError(f"user {username} already exists")
        user = User(
            username=username,
            roles=" ".join(role_list),
            password_hash=password_hash,
            disabled=False,
            must_change_password=must_change,
            totp_last_step=0,
            failed_logins=0,
        )
        session.add(user)
        _audit(session, ctx, "user.create", actor, username, {"roles": sorted(role_list)})
        return user


def checked_username(username: str) -> str:
    """The username normalised; UserError if it cannot be one."""
    username = normalise_username(username)
    if not username or not set(username) <= USERNAME_CHARS or len(username) > 64:
        raise UserError("usernames use a-z, 0-9, '.', '_' and '-' (at most 64)")
    if username in RESERVED_USERNAMES:
        raise UserError(f"{username!r} is how the audit log names the command line or setup; choose another username")
    return username


def add_user_from_console(
    ctx: ServiceContext, username: str, roles: str | Iterable[str], password: str, *, actor: str
) -> User:
    """`add_user` as the console may: admin accounts only, with a one-time password.

    An account with the detective role is refused with ShellOnly, and the refusal audited.
    """
    username = checked_username(username)
    role_list = normalise_roles(roles)
    if Role.DETECTIVE in role_list:
        audit.log_event(
            ctx,
            "user.create",
            actor=actor,
            object_type="user",
            object_id=username,
            outcome="refused",
            detail={"roles": sorted(role_list)},
        )
        raise ShellOnly(f"tipline users add {username} " + " ".join(f"--role {role}" for role in role_list))
    return add_user(ctx, username, role_list, password, must_change=True, actor=actor)


def list_users(ctx: ServiceContext) -> list[User]:
    with ctx.factory() as session:
        return list(session.scalars(select(User).order_by(User.username)))


def set_disabled(ctx: ServiceContext, username: str, disabled: bool = True, *, actor: str | None = None) -> None:
    """Disable (or enable again) an account; disabling ends its sessions at once, not at the next sign-in."""
    with ctx.factory.begin() as session:
        user = _user(session, username)
        if disabled:
            _keep_an_admin(session, user, stays_admin=False)
        user.disabled = disabled
        if disabled:
            end_sessions(session, user.id)
        _audit(session, ctx, "user.disable" if disabled else "user.enable", actor, user.username)


def reset_password(
    ctx: ServiceContext, username: str, password: str, must_change: bool = True, *, actor: str | None = None
) -> User:
    """Give an account a new password and end all its sessions at once.

    `must_change` when `password` is a one-time password someone else read: the person replaces it
    at the next sign-in. A lock after failed sign-ins is released too, since the guessing it held
    back was aimed at the old password. The authenticator stays as it is (`reset_2fa` for that).
    """
    check_password(password)
    password_hash = hasher.hash(password)  # before the transaction: argon2 must never hold the write lock
    with ctx.factory.begin() as session:
        user = _user(session, username)
        _reset_password(session, ctx, user, password_hash, must_change, actor)
        return user


def reset_password_from_console(ctx: ServiceContext, username: str, password: str, *, actor: str) -> User:
    """`reset_password` with a one-time password, as the console may: not for a detective (ShellOnly,
    and the refusal audited), since the admin reads the password the account signs in with."""
    password_hash = hasher.hash(password)
    with ctx.factory.begin() as session:
        user = _user(session, username)
        refused = Role.DETECTIVE in user.role_set
        if refused:
            _audit(session, ctx, "user.reset-password", actor, user.username, outcome="refused")
        else:
            _reset_password(session, ctx, user, password_hash, True, actor)
    if refused:
        raise ShellOnly(f"tipline users reset-password {user.username}")
    return user


def _reset_password(
    session: Session, ctx: ServiceContext, user: User, password_hash: str, must_change: bool, actor: str | None
) -> None:
    user.password_hash = password_hash
    user.must_change_password = must_change
    user.failed_logins = 0
    user.locked_until = None
    ended = end_sessions(session, user.id)
    detail: dict[str, object] = {"must_change": must_change, "sessions_ended": ended}
    _audit(session, ctx, "user.reset-password", actor, user.username, detail)


@dataclass(frozen=True)
class RoleChange:
    """What `set_roles` did: the account, and the one-time password it now signs in with when its
    credentials were renewed (None when they were not)."""

    user: User
    one_time_password: str | None = None


def set_roles(
    ctx: ServiceContext, username: str, roles: str | Iterable[str], *, actor: str | None = None
) -> RoleChange:
    """Replace an account's roles; a change ends its sessions at once (the account signs in again
    and holds the new roles from then on). Refused if it would leave no active administrator.

    Granting the detective role to an account that did not hold it also renews its credentials: a
    new one-time password (returned, for whoever runs this to hand to the person) and no
    authenticator (the person enrols a new one). Until then an admin may have reset the account's
    password and authenticator in the console, read the one and enrolled the other; without the
    renewal that admin would sign in as a detective the moment the shell grants the role.
    """
    wanted = normalise_roles(roles)
    password = generate_password() if Role.DETECTIVE in wanted else None
    password_hash = hasher.hash(password) if password else None  # before the transaction (argon2)
    with ctx.factory.begin() as session:
        user = _user(session, username)
        before = normalise_roles(user.role_set)
        if wanted == before:
            return RoleChange(user)
        _keep_an_admin(session, user, stays_admin=Role.ADMIN in wanted)
        _change_roles(session, ctx, user, before, wanted, actor)
        if password_hash is None or Role.DETECTIVE in before:
            return RoleChange(user)
        _reset_password(session, ctx, user, password_hash, True, actor)
        _reset_2fa(session, ctx, user, actor)
        return RoleChange(user, password)


def grant_role_from_console(ctx: ServiceContext, username: str, role: Role, *, actor: str) -> None:
    """Add `role` to an account, as the console may: not the detective role (ShellOnly, and the
    refusal audited), which would hand tips to an account the admin may control."""
    with ctx.factory.begin() as session:
        user = _user(session, username)
        before = normalise_roles(user.role_set)
        after = normalise_roles({*before, role})
        refused = role == Role.DETECTIVE and after != before
        if refused:
            detail: dict[str, object] = {"before": list(before), "after": list(after)}
            _audit(session, ctx, "user.roles", actor, user.username, detail, outcome="refused")
        elif after != before:
            _change_roles(session, ctx, user, before, after, actor)
    if refused:
        raise ShellOnly(f"tipline users set {user.username} " + " ".join(f"--role {r}" for r in after))


def remove_role_from_console(ctx: ServiceContext, username: str, role: Role, *, actor: str) -> None:
    """Take `role` from an account (any role: taking access away hands nothing to anyone). An
    account keeps at least one role; one that should not sign in at all is disabled instead."""
    with ctx.factory.begin() as session:
        user = _user(session, username)
        before = normalise_roles(user.role_set)
        after = [r for r in before if r != role]
        if not after:
            raise UserError(f"{user.username} has no other role: disable the account instead")
        if after != before:
            _keep_an_admin(session, user, stays_admin=Role.ADMIN in after)
            _change_roles(session, ctx, user, before, after, actor)


def _change_roles(
    session: Session, ctx: ServiceContext, user: User, before: list[Role], after: list[Role], actor: str | None
) -> None:
    user.roles = " ".join(after)
    end_sessions(session, user.id)  # a session must not keep what the account no longer holds
    detail: dict[str, object] = {"before": list(before), "after": list(after)}
    _audit(session, ctx, "user.roles", actor, user.username, detail)


def _keep_an_admin(session: Session, user: User, stays_admin: bool) -> None:
    """UserError if `user` is the last active administrator and would stop being one (disabled,
    or without the admin role). The enabled accounts are locked and read afresh, so that two
    administrators demoting each other at the same time on PostgreSQL cannot both pass (SQLite's
    writers take turns anyway)."""
    if stays_admin or user.disabled or Role.ADMIN not in user.role_set:
        return
    enabled = select(User).where(User.disabled.is_(False)).with_for_update()
    active = session.scalars(enabled.execution_options(populate_existing=True)).all()
    if not any(other.id != user.id and Role.ADMIN in other.role_set for other in active):
        raise UserError(LAST_ADMIN)


def reset_2fa(ctx: ServiceContext, username: str, *, actor: str | None = None) -> None:
    """Forget the TOTP secret (the account enrols again at next sign-in) and end its sessions."""
    with ctx.factory.begin() as session:
        _reset_2fa(session, ctx, _user(session, username), actor)


def reset_2fa_from_console(ctx: ServiceContext, username: str, *, actor: str) -> None:
    """`reset_2fa` as the console may: not for a detective (ShellOnly, and the refusal audited).

    Whoever resets an authenticator decides who enrols the next one, so for an account that reads
    tips it takes the server's shell.
    """
    with ctx.factory.begin() as session:
        user = _user(session, username)
        name, refused = user.username, Role.DETECTIVE in user.role_set
        if refused:
            _audit(session, ctx, "user.reset-2fa", actor, name, outcome="refused")
        else:
            _reset_2fa(session, ctx, user, actor)
    if refused:
        raise ShellOnly(f"tipline users reset-2fa {name}")


def _reset_2fa(session: Session, ctx: ServiceContext, user: User, actor: str | None) -> None:
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


def end_sessions(session: Session, user_id: int) -> int:
    """End every console session of the account at once; how many there were."""
    return rowcount(session.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user_id)))


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
    outcome: str = "ok",
) -> None:
    if actor is not None:
        audit.record(
            session,
            ctx.keyring,
            action,
            actor=actor,
            object_type="user",
            object_id=username,
            outcome=outcome,
            detail=detail,
            now=ctx.now(),
        )
