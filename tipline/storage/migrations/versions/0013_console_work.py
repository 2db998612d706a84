"""console_work: urgent tips at once, the list by latest activity, the tip's language

Tips gain `active_at` (the latest activity on the tip: a message of the tipster's, a detective's reply
or note; to the minute like every time a tipster causes), which the console list sorts by, and
`language` (the language the tipster writes in, a catalog code; NULL for tips written before this
version, which show none). Existing tips take their last update as their latest activity. The audit
log is indexed by object, so that a tip's history (the case file) is read without a scan.

Revision ID: 0013
Revises: 0012
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

ACTIVE_COMMENT = "latest activity: tipster message, detective reply or note; to the minute"


def upgrade() -> None:
    with op.batch_alter_table("tips") as batch:
        batch.add_column(sa.Column("active_at", sa.DateTime(), nullable=True, comment=ACTIVE_COMMENT))
        batch.add_column(
            sa.Column(
                "language",
                sa.String(length=8),
                nullable=True,
                comment="the language the tipster writes in (catalog code); NULL before 0013",
            )
        )
    op.execute("UPDATE tips SET active_at = updated_at")
    with op.batch_alter_table("tips") as batch:
        batch.alter_column("active_at", existing_type=sa.DateTime(), nullable=False, existing_comment=ACTIVE_COMMENT)
        # Urgent and status too: a page of the list skips the tips before it without reading their rows.
        batch.create_index("ix_tips_activity", ["active_at", "id", "urgent", "status"], unique=False)
    # A tip's own history (who viewed or changed it: the case file) without reading the whole log.
    op.create_index("ix_audit_log_object", "audit_log", ["object_type", "object_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_audit_log_object", table_name="audit_log")
    with op.batch_alter_table("tips") as batch:
        batch.drop_index("ix_tips_activity")
        batch.drop_column("language")
        batch.drop_column("active_at")
