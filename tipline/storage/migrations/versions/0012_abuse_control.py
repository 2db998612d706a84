"""abuse_control: mute a sender, bound a sender's replies, count new senders per hour

Tips gain `sender_muted` (a detective muted the sender from that tip; shown on that tip only, so
that the mute links no tips together), contacts `muted` (true while any of their tips is muted) and a reply window (`window_started_at`, to
the minute, and `window_messages`). `new_senders` holds one mark per sender who wrote for the first
time, with the hour and channel only: no link to any contact.

Revision ID: 0012
Revises: 0011
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contacts") as batch:
        batch.add_column(
            sa.Column(
                "muted",
                sa.Boolean(),
                nullable=False,
                server_default="0",
                comment="true while any tip of this sender is muted",
            )
        )
        batch.add_column(sa.Column("window_started_at", sa.DateTime(), nullable=True, comment="to the minute"))
        batch.add_column(sa.Column("window_messages", sa.Integer(), nullable=False, server_default="0"))
    with op.batch_alter_table("tips") as batch:
        batch.add_column(
            sa.Column(
                "sender_muted",
                sa.Boolean(),
                nullable=False,
                server_default="0",
                comment="a detective muted the sender from this tip; shown on this tip only (abuse.py)",
            )
        )
    op.create_table(
        "new_senders",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("hour", sa.DateTime(), nullable=False, comment="to the hour"),
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_new_senders")),
    )
    op.create_index(op.f("ix_new_senders_hour"), "new_senders", ["hour"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_new_senders_hour"), table_name="new_senders")
    op.drop_table("new_senders")
    with op.batch_alter_table("tips") as batch:
        batch.drop_column("sender_muted")
    with op.batch_alter_table("contacts") as batch:
        batch.drop_column("window_messages")
        batch.drop_column("window_started_at")
        batch.drop_column("muted")
