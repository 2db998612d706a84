"""process_beats and data_upgrades: which tip line processes are running (for commands that must
not surprise them), and which one-time data upgrades `tipline init` has carried out

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "process_beats",
        sa.Column("id", sa.String(length=32), nullable=False, comment="random per process start"),
        sa.Column("kind", sa.String(length=16), nullable=False, comment="serve, dispatch or poll"),
        sa.Column("follows_master_file", sa.Boolean(), nullable=False, comment="re-reads master.key when it changes"),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("seen_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_process_beats")),
    )
    op.create_index(op.f("ix_process_beats_seen_at"), "process_beats", ["seen_at"])
    op.create_table(
        "data_upgrades",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("done_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_data_upgrades")),
    )


def downgrade() -> None:
    op.drop_table("data_upgrades")
    op.drop_index(op.f("ix_process_beats_seen_at"), table_name="process_beats")
    op.drop_table("process_beats")
