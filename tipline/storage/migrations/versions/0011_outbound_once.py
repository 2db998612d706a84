"""outbound_once: an outbox row remembers that an attempt to send it began (issue 12)

`attempt_started_at` (to the minute) is written in its own transaction before the provider is
called and cleared once the row is settled. A row claimed again with it set, but with no
`provider_ref`, is one whose dispatcher died (or whose database failed) between the provider and
the bookkeeping: the dispatcher asks the provider whether the message went before sending it again
(see tipline/services/outbox.py).

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(
            sa.Column(
                "attempt_started_at",
                sa.DateTime(),
                nullable=True,
                comment="to the minute: a send began and its result is not recorded yet",
            )
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("attempt_started_at")
