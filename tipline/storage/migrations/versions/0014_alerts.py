"""alerts: content-free alerts to detectives (services/alerts.py)

Users gain an `email` and an alert choice (`alerts`, default urgent). Tips gain when a detective
first opened them (`opened_at`, to the minute) and what the dispatcher has already queued for them
(`alerted_new`, `urgent_alerted_at`, `escalated`, `alerted_unread`). Tips that exist before this
revision count as alerted, so that an upgrade does not mail every detective about old tips.
`alerts` is the queue of alerts to send.

Revision ID: 0014
Revises: 0013
"""

import datetime as dt

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch.add_column(
            sa.Column("alerts", sa.String(length=8), nullable=False, server_default="urgent", comment="AlertChoice")
        )
    with op.batch_alter_table("tips") as batch:
        batch.add_column(
            sa.Column(
                "opened_at",
                sa.DateTime(),
                nullable=True,
                comment="to the minute: a detective first viewed the tip page",
            )
        )
        batch.add_column(
            sa.Column(
                "alerted_new",
                sa.Boolean(),
                nullable=False,
                server_default="0",
                comment="the new-tip alerts are queued",
            )
        )
        batch.add_column(
            sa.Column(
                "urgent_alerted_at",
                sa.DateTime(),
                nullable=True,
                comment="to the minute: the urgent alerts were queued (escalation counts from here)",
            )
        )
        batch.add_column(
            sa.Column(
                "escalated",
                sa.Boolean(),
                nullable=False,
                server_default="0",
                comment="the escalation alerts are queued",
            )
        )
        batch.add_column(
            sa.Column(
                "alerted_unread",
                sa.Integer(),
                nullable=False,
                server_default="0",
                comment="the unread count the last follow-up alert covered",
            )
        )
        batch.add_column(
            sa.Column(
                "shown_seq",
                sa.Integer(),
                nullable=True,
                comment="order in which tips became visible or urgent; no time",
            )
        )
        batch.create_index(batch.f("ix_tips_alerted_new"), ["alerted_new"], unique=False)
        batch.create_index(batch.f("ix_tips_shown_seq"), ["shown_seq"], unique=False)
    tips = sa.table(
        "tips",
        sa.column("alerted_new", sa.Boolean()),
        sa.column("urgent_alerted_at", sa.DateTime()),
        sa.column("escalated", sa.Boolean()),
        sa.column("alerted_unread", sa.Integer()),
        sa.column("unread", sa.Integer()),
        sa.column("urgent", sa.Boolean()),
    )
    minute = dt.datetime.now(dt.UTC).replace(tzinfo=None, second=0, microsecond=0)
    op.execute(tips.update().values(alerted_new=True, escalated=True, alerted_unread=tips.c.unread))
    op.execute(tips.update().where(tips.c.urgent.is_(True)).values(urgent_alerted_at=minute))
    op.create_table(
        "alerts",
        sa.Column("id", sa.String(length=32), nullable=False, comment="random; also the email's Message-ID"),
        sa.Column("tip_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True, comment="NULL: the on-call number"),
        sa.Column("kind", sa.String(length=12), nullable=False, comment="AlertKind"),
        sa.Column("medium", sa.String(length=8), nullable=False, comment="AlertMedium"),
        sa.Column(
            "status", sa.String(length=12), nullable=False, comment="OutboxStatus: pending, sending, sent or failed"
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column(
            "attempt_started_at",
            sa.DateTime(),
            nullable=True,
            comment="a send began and its result is not recorded yet",
        ),
        sa.Column("last_error", sa.String(length=64), nullable=True, comment="error code only"),
        sa.Column("created_at", sa.DateTime(), nullable=False, comment="to the minute"),
        sa.ForeignKeyConstraint(["tip_id"], ["tips.id"], name=op.f("fk_alerts_tip_id_tips"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_alerts_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alerts")),
    )
    op.create_index("ix_alerts_status_due", "alerts", ["status", "next_attempt_at"], unique=False)
    op.create_index(op.f("ix_alerts_tip_id"), "alerts", ["tip_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_tip_id"), table_name="alerts")
    op.drop_index("ix_alerts_status_due", table_name="alerts")
    op.drop_table("alerts")
    with op.batch_alter_table("tips") as batch:
        batch.drop_index(batch.f("ix_tips_shown_seq"))
        batch.drop_index(batch.f("ix_tips_alerted_new"))
        batch.drop_column("shown_seq")
        batch.drop_column("alerted_unread")
        batch.drop_column("escalated")
        batch.drop_column("urgent_alerted_at")
        batch.drop_column("alerted_new")
        batch.drop_column("opened_at")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("alerts")
        batch.drop_column("email")
