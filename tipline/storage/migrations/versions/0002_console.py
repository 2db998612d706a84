"""console sessions, audit log, combinable roles

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False, comment='UTC, microseconds'),
    sa.Column('actor', sa.String(length=64), nullable=True, comment='console username, or NULL for the system'),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('object_type', sa.String(length=16), nullable=True),
    sa.Column('object_id', sa.String(length=64), nullable=True),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('detail', sa.String(length=500), nullable=False, comment='never tip content or tipster identifiers'),
    sa.Column('key_version', sa.Integer(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False, comment='HMAC-SHA256 under the audit key over prev_hash and this entry'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_audit_log'))
    )
    op.create_table('console_sessions',
    sa.Column('id', sa.String(length=64), nullable=False, comment='SHA-256 of the cookie token'),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('stage', sa.String(length=16), nullable=False, comment='enrol, password or full'),
    sa.Column('csrf_token', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(), nullable=False),
    sa.Column('pending_totp_ct', sa.LargeBinary(), nullable=True, comment='encrypted, during enrolment'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_console_sessions_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_console_sessions'))
    )
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_console_sessions_user_id'), ['user_id'], unique=False)

    with op.batch_alter_table('tips', schema=None) as batch_op:
        batch_op.create_index('ix_tips_assignee_id_id', ['assignee_id', 'id'], unique=False)

    # Existing accounts keep their role; TOTP secrets enrolled before this version were never used
    # by a console (there was none), so nothing needs re-encrypting.
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('role', new_column_name='roles', existing_type=sa.String(length=16),
                              type_=sa.String(length=32), existing_nullable=False,
                              comment='space-separated: detective, admin')
        batch_op.add_column(sa.Column('totp_kek_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('totp_last_step', sa.Integer(), nullable=False, server_default='0',
                                      comment='a TOTP code is accepted once'))
        batch_op.add_column(sa.Column('failed_logins', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('locked_until', sa.DateTime(), nullable=True))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.alter_column('totp_last_step', server_default=None, existing_type=sa.Integer())
        batch_op.alter_column('failed_logins', server_default=None, existing_type=sa.Integer())



def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('locked_until')
        batch_op.drop_column('failed_logins')
        batch_op.drop_column('totp_last_step')
        batch_op.drop_column('totp_kek_version')
        batch_op.alter_column('roles', new_column_name='role', existing_type=sa.String(length=32),
                              type_=sa.String(length=16), existing_nullable=False, comment=None)

    with op.batch_alter_table('tips', schema=None) as batch_op:
        batch_op.drop_index('ix_tips_assignee_id_id')

    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_console_sessions_user_id'))

    op.drop_table('console_sessions')
    op.drop_table('audit_log')
