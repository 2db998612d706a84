"""attachments: photos from tipsters, cleaned and encrypted

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tip_id", sa.Integer(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False, comment="the thread entry (messages.seq) that shows it"),
        sa.Column("batch", sa.String(length=32), nullable=False,
                  comment="random, shared by the files of one inbound message"),
        sa.Column("status", sa.String(length=12), nullable=False, comment="pending, fetching, stored, refused or failed"),
        sa.Column("reason", sa.String(length=16), nullable=True, comment="why refused or failed, a code"),
        sa.Column("source_ct", sa.LargeBinary(), nullable=True, comment="encrypted provider reference; NULL once settled"),
        sa.Column("data_ct", sa.LargeBinary(), nullable=True,
                  comment="the cleaned image, encrypted under the tip's data key"),
        sa.Column("content_type", sa.String(length=32), nullable=True),
        sa.Column("source_format", sa.String(length=8), nullable=True, comment="what the bytes were"),
        sa.Column("width", sa.Integer(), nullable=True),
        sa.Column("height", sa.Integer(), nullable=True),
        sa.Column("size", sa.Integer(), nullable=True, comment="bytes of the cleaned image"),
        sa.Column("frames", sa.Integer(), nullable=True, comment="frames in the original; one kept"),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(), nullable=False),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False, comment="to the minute"),
        sa.ForeignKeyConstraint(["tip_id"], ["tips.id"], name=op.f("fk_attachments_tip_id_tips"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
    )
    op.create_index(op.f("ix_attachments_tip_id"), "attachments", ["tip_id"])
    op.create_index(op.f("ix_attachments_batch"), "attachments", ["batch"])
    op.create_index("ix_attachments_status_next_attempt_at", "attachments", ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_table("attachments")
