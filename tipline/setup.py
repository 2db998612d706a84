"""`tipline init` as a function: schema, data directory, keys and first admin, idempotently."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

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
    schema_before: str | None = None  # the database's revision before this run (None: a new database)
    schema: str = ""  # its revision now: the code's newest migration


def initialise(settings: Settings) -> InitReport:
    """Create or upgrade everything `tipline serve` needs.

    Raises KeyStoreError on a key mismatch, db.Unreachable when the database does not answer, and
    db.SchemaError for a database that a newer tipline migrated (this code cannot upgrade it).
    """
    settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = db.make_engine(settings.database_url)
    factory = db.make_sessionmaker(engine)
    try:
        try:
            state = db.schema_state(engine)
        except OperationalError as error:  # the first query: what fails here is the connection
            raise db.Unreachable(db.error_line(error, settings.database_url)) from None
        if not state.known:
            raise db.SchemaError(state.problem() or "")
        db.upgrade(settings.database_url)
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
        return InitReport(tuple(created), password, resealed, unreadable, state.current, state.head)
    finally:
        engine.dispose()
