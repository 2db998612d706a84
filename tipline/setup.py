"""`tipline init` as a function: schema, data directory, keys and first admin, idempotently."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from tipline.config import Settings
from tipline.core.vocabulary import Role
from tipline.services import accounts, search
from tipline.services.context import ServiceContext
from tipline.storage import db, records
from tipline.storage.keystore import KeyStore, ensure_keys, load_keyring, load_master_key, secret_key
from tipline.storage.models import KeyVersion, utcnow

FIRST_ADMIN = "admin"


@dataclass(frozen=True)
class InitReport:
    keys_created: tuple[str, ...]
    admin_password: str | None  # the first admin's one-time password, when one was created
    messages_resealed: int = 0  # thread entries bound to their kind and author by this run (upgrade to 0.2)
    messages_unreadable: int = 0  # entries that opened under no binding (altered): left to fail closed


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
            needs_admin = not accounts.any_users(session)
        with factory.begin() as session:
            resealed, unreadable = records.upgrade_message_seals(session, load_keyring(session, master), utcnow())
        with factory.begin() as session:
            search.index_existing_tips(session, load_keyring(session, master), utcnow())  # upgrade to 0.3
        secret_key(settings, create=True)
        password = None
        if needs_admin:
            password = accounts.generate_password()
            ctx = ServiceContext(factory, KeyStore(factory, master), settings)
            accounts.add_user(ctx, FIRST_ADMIN, [Role.ADMIN], password, must_change=True, actor="init")
        return InitReport(tuple(created), password, resealed, unreadable)
    finally:
        engine.dispose()
