"""`tipline init` as a function: schema, data directory, keys and first admin, idempotently."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from tipline.services import audit
from tipline.storage import db
from tipline.storage.keystore import secret_key
from tipline.config import Settings
from tipline.storage.keystore import ensure_keys, load_keyring, load_master_key
from tipline.storage.models import KeyVersion
from tipline.services.accounts import add_user, any_users, generate_password


@dataclass(frozen=True)
class InitReport:
    keys_created: tuple[str, ...]
    admin_password: str | None  # the first admin's one-time password, when one was created


def initialise(settings: Settings) -> InitReport:
    """Create or upgrade everything `tipline serve` needs. Raises KeyStoreError on a key mismatch."""
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    db.upgrade(settings.database_url)
    engine = db.make_engine(settings.database_url)
    factory = db.make_sessionmaker(engine)
    try:
        with factory.begin() as session:
            has_keys = (session.scalar(select(func.count()).select_from(KeyVersion)) or 0) > 0
            # Never mint a master key for a database that already has keys: it would open nothing.
            master = load_master_key(settings, create=not has_keys)
            created = ensure_keys(session, master)
            needs_admin = not any_users(session)
        secret_key(settings, create=True)
        password = None
        if needs_admin:
            password = generate_password()
            add_user(factory, "admin", "admin", password, must_change=True)
            with factory.begin() as session:
                audit.record(session, load_keyring(session, master), "user.create", actor="init",
                             object_type="user", object_id="admin", detail={"roles": ["admin"]})
        return InitReport(tuple(created), password)
    finally:
        engine.dispose()
