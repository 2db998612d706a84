"""request_limits: no schema change (a placeholder that keeps the revision chain linear)

Issue 11's findings 6, 9 and 11 (request bodies never reach the disk, a webhook never loses the
tipster's words, python-telegram-bot's local file paths, `/start <payload>`) were closed in the
server's settings, the adapters and the attachment rows' shape; none of them needed a column.

Revision ID: 0008
Revises: 0007
"""

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
