"""The Alembic migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from tests.support.harness import Harness
from tipline.config import load_settings
from tipline.setup import initialise
from tipline.storage.models import Base

pytestmark = pytest.mark.real_migrations  # every other test copies a database these migrations built once


def test_migrations_match_the_models(tipline: Harness) -> None:
    with tipline.runtime.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        assert compare_metadata(context, Base.metadata) == []


def test_init_twice_changes_nothing(tipline: Harness, env: dict[str, str]) -> None:
    report = initialise(load_settings(env))
    assert report.keys_created == ()
    assert report.admin_password is None
