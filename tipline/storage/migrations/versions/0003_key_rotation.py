"""key rotation: resumable rotation records, stored tip aliases

Revision ID: 0003
Revises: 0002
"""

import secrets

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "key_rotations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("purpose", sa.String(length=16), nullable=False),
        sa.Column("to_version", sa.Integer(), nullable=False),
        sa.Column("reencrypt", sa.Boolean(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False, comment="running or done"),
        sa.Column("requested_by", sa.String(length=64), nullable=True),
        sa.Column("rows_total", sa.Integer(), nullable=False),
        sa.Column("rows_done", sa.Integer(), nullable=False),
        sa.Column("unlinked", sa.Integer(), nullable=False, comment="pepper rotation: senders whose link was lost"),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_key_rotations")),
    )
    # Aliases were derived from the pseudonym key, which now rotates: store a random one instead.
    # Existing tips get a new random alias once.
    with op.batch_alter_table("tips", schema=None) as batch_op:
        batch_op.add_column(sa.Column("alias", sa.String(length=4), nullable=True,
                                      comment="random, shown as 'Tipster 4F2A'; says nothing about the sender"))
    tips = sa.table("tips", sa.column("id", sa.Integer()), sa.column("alias", sa.String()))
    connection = op.get_bind()
    for (tip_id,) in connection.execute(sa.select(tips.c.id)).all():
        connection.execute(tips.update().where(tips.c.id == tip_id).values(alias=secrets.token_hex(2).upper()))
    with op.batch_alter_table("tips", schema=None) as batch_op:
        batch_op.alter_column("alias", existing_type=sa.String(length=4), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("tips", schema=None) as batch_op:
        batch_op.drop_column("alias")
    op.drop_table("key_rotations")
