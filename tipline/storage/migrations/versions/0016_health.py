"""health: when each process's dispatcher last completed a pass, and a row /healthz writes

`process_beats.dispatched_at` is copied by a process's heartbeat from its dispatcher loop (NULL
for a process that runs none), so /healthz on any app server can tell whether replies still go
out, wherever the dispatcher runs. `health_probe` holds one row that /healthz updates to prove
the database can still be written (a full disk, a read-only file or a read-only replica fail that
write while reads still answer); nothing in either concerns a tipster.

Revision ID: 0016
Revises: 0015
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None

DISPATCHED_COMMENT = "when this process's dispatcher last completed a pass; NULL: it runs none"


def upgrade() -> None:
    with op.batch_alter_table("process_beats") as batch:
        batch.add_column(sa.Column("dispatched_at", sa.DateTime(), nullable=True, comment=DISPATCHED_COMMENT))
    probe = op.create_table(
        "health_probe",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False, comment="always 1: a single row"),
        sa.Column("probed_at", sa.DateTime(), nullable=False, comment="the last write /healthz made"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_health_probe")),
    )
    op.bulk_insert(probe, [{"id": 1, "probed_at": dt.datetime.now(dt.UTC).replace(tzinfo=None)}])


def downgrade() -> None:
    op.drop_table("health_probe")
    with op.batch_alter_table("process_beats") as batch:
        batch.drop_column("dispatched_at")
