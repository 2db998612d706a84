"""provider_status: the provider's delivery reports get a column of their own

Until now a Twilio status callback overwrote `outbox.status`, the dispatcher's own lifecycle, with
Twilio's word ("delivered", "partially_delivered": 19 characters in a 12-character column, refused
by PostgreSQL). Reports now go into `outbox.provider_status`; thread entries show one of queued,
sent, delivered, read or failed.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

LIFECYCLE = ("pending", "sending", "sent", "done", "failed", "cancelled")
SHOWN = {  # a provider's word -> what a thread entry shows
    "undelivered": "failed", "canceled": "failed", "partially_delivered": "delivered",
    "accepted": "sent", "sending": "sent", "scheduled": "sent", "receiving": "sent", "received": "sent",
}


def upgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("provider_status", sa.String(length=24), nullable=True,
                                   comment="the provider's last delivery report (DeliveryStatus), for sends"))
    outbox = sa.table("outbox", sa.column("status", sa.String), sa.column("provider_status", sa.String))
    op.execute(
        outbox.update().where(outbox.c.status.not_in(LIFECYCLE))
        .values(provider_status=outbox.c.status, status="sent")
    )
    if op.get_bind().dialect.name == "postgresql":  # SQLite keeps no column comments
        op.alter_column("outbox", "status", existing_type=sa.String(length=12), existing_nullable=False,
                        comment="the dispatcher's lifecycle (OutboxStatus)")
        op.alter_column("messages", "delivery", existing_type=sa.String(length=12), existing_nullable=True,
                        comment="for texts sent to the tipster: queued, sent, delivered, read or failed")
    messages = sa.table("messages", sa.column("delivery", sa.String))
    for word, shown in SHOWN.items():
        op.execute(messages.update().where(messages.c.delivery == word).values(delivery=shown))


def downgrade() -> None:
    with op.batch_alter_table("outbox") as batch:
        batch.drop_column("provider_status")
