"""reconcile_marks: how far Twilio's Messages log has been reconciled (issue 12)

One row per provider log; `mark` is the sending time of the newest message already taken in, to
the minute (see tipline/services/reconcile.py).

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reconcile_marks",
        sa.Column("log", sa.String(length=32), nullable=False, comment="which log, e.g. sms"),
        sa.Column("mark", sa.DateTime(), nullable=False, comment="to the minute, UTC"),
        sa.PrimaryKeyConstraint("log", name=op.f("pk_reconcile_marks")),
    )


def downgrade() -> None:
    op.drop_table("reconcile_marks")
