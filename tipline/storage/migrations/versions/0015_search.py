"""search: the blind search index

`search_terms` holds, per tip, one keyed hash per distinct searchable word (HMAC-SHA256 under the
`search` key, truncated to 8 bytes) and the key version: never a word. The primary key leads with
the token, which is how searches look rows up; the second index serves re-indexing a tip and the
search key's rotation. `tipline init` creates the search key and indexes tips written before this.

Revision ID: 0015
Revises: 0014
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "search_terms",
        sa.Column(
            "token",
            sa.BigInteger(),
            autoincrement=False,
            nullable=False,
            comment="HMAC-SHA256(search key, normalised word), first 8 bytes as a signed integer",
        ),
        sa.Column(
            "key_version", sa.Integer(), autoincrement=False, nullable=False, comment="version of the search key"
        ),
        sa.Column("tip_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.ForeignKeyConstraint(["tip_id"], ["tips.id"], name=op.f("fk_search_terms_tip_id_tips"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("token", "key_version", "tip_id", name=op.f("pk_search_terms")),
    )
    op.create_index("ix_search_terms_tip_id_key_version", "search_terms", ["tip_id", "key_version"])


def downgrade() -> None:
    op.drop_index("ix_search_terms_tip_id_key_version", table_name="search_terms")
    op.drop_table("search_terms")
