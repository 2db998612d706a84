"""Alembic environment: runs migrations against TIPLINE's engine (with its SQLite pragmas)."""

from alembic import context

from tipline.storage.db import make_engine
from tipline.storage.models import Base

config = context.config


def run() -> None:
    url = config.get_main_option("sqlalchemy.url")
    assert url is not None, "tipline.storage.db.alembic_config sets the URL"
    engine = make_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


run()
