"""initial schema

Revision ID: 0001
Revises: 
"""

from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('contacts',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('pseudonym', sa.String(length=64), nullable=True, comment="HMAC-SHA256(pepper, 'channel:address'); NULL once the tipster asked to be forgotten"),
    sa.Column('pseudonym_version', sa.Integer(), nullable=False),
    sa.Column('kek_version', sa.Integer(), nullable=False, comment='version of the contacts KEK wrapping wrapped_dek'),
    sa.Column('wrapped_dek', sa.LargeBinary(), nullable=False, comment="this contact's data key, wrapped"),
    sa.Column('address_ct', sa.LargeBinary(), nullable=True, comment='encrypted return address; NULL once erased'),
    sa.Column('opted_out', sa.Boolean(), nullable=False),
    sa.Column('erased_reason', sa.String(length=16), nullable=True),
    sa.Column('last_activity_at', sa.DateTime(), nullable=False, comment='to the minute'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts')),
    sa.UniqueConstraint('pseudonym', name=op.f('uq_contacts_pseudonym'))
    )
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_contacts_last_activity_at'), ['last_activity_at'], unique=False)

    op.create_table('key_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('purpose', sa.String(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('wrapped_key', sa.LargeBinary(), nullable=False, comment='AES-256-GCM under the master key, AAD names purpose and version'),
    sa.Column('is_primary', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.Column('retired_at', sa.DateTime(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_key_versions')),
    sa.UniqueConstraint('purpose', 'version', name='uq_key_versions_purpose_version')
    )
    op.create_table('processed_deliveries',
    sa.Column('key', sa.String(length=64), nullable=False, comment='keyed hash of channel + delivery id'),
    sa.Column('expires_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('key', name=op.f('pk_processed_deliveries'))
    )
    with op.batch_alter_table('processed_deliveries', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_processed_deliveries_expires_at'), ['expires_at'], unique=False)

    op.create_table('users',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('password_hash', sa.String(length=255), nullable=False, comment='argon2id'),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('disabled', sa.Boolean(), nullable=False),
    sa.Column('must_change_password', sa.Boolean(), nullable=False),
    sa.Column('totp_secret_ct', sa.LargeBinary(), nullable=True, comment='encrypted'),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_users')),
    sa.UniqueConstraint('username', name=op.f('uq_users_username'))
    )
    op.create_table('tips',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('reference', sa.String(length=12), nullable=False, comment='random, e.g. T-7K3Q9X'),
    sa.Column('contact_id', sa.String(length=32), nullable=True),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('urgent', sa.Boolean(), nullable=False),
    sa.Column('category', sa.String(length=32), nullable=True),
    sa.Column('assignee_id', sa.Integer(), nullable=True),
    sa.Column('kek_version', sa.Integer(), nullable=False, comment='version of the tips KEK wrapping wrapped_dek'),
    sa.Column('wrapped_dek', sa.LargeBinary(), nullable=False, comment="this tip's data key, wrapped"),
    sa.Column('what_ct', sa.LargeBinary(), nullable=True, comment='encrypted'),
    sa.Column('where_ct', sa.LargeBinary(), nullable=True, comment='encrypted'),
    sa.Column('when_ct', sa.LargeBinary(), nullable=True, comment='encrypted'),
    sa.Column('message_count', sa.Integer(), nullable=False),
    sa.Column('unread', sa.Integer(), nullable=False, comment='tipster messages since submission not yet viewed'),
    sa.Column('created_at', sa.DateTime(), nullable=False, comment='to the minute'),
    sa.Column('submitted_at', sa.DateTime(), nullable=True, comment='to the minute'),
    sa.Column('updated_at', sa.DateTime(), nullable=False, comment='to the minute'),
    sa.ForeignKeyConstraint(['assignee_id'], ['users.id'], name=op.f('fk_tips_assignee_id_users')),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_tips_contact_id_contacts'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tips')),
    sa.UniqueConstraint('reference', name=op.f('uq_tips_reference'))
    )
    with op.batch_alter_table('tips', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_tips_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index('ix_tips_status_id', ['status', 'id'], unique=False)

    op.create_table('conversations',
    sa.Column('contact_id', sa.String(length=32), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('language', sa.String(length=2), nullable=False),
    sa.Column('tip_id', sa.Integer(), nullable=True),
    sa.Column('updated_at', sa.DateTime(), nullable=False, comment='to the minute'),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_conversations_contact_id_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['tip_id'], ['tips.id'], name=op.f('fk_conversations_tip_id_tips'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('contact_id', name=op.f('pk_conversations'))
    )
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_conversations_updated_at'), ['updated_at'], unique=False)

    op.create_table('messages',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tip_id', sa.Integer(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('body_ct', sa.LargeBinary(), nullable=False, comment="encrypted under the tip's data key"),
    sa.Column('author_id', sa.Integer(), nullable=True),
    sa.Column('delivery', sa.String(length=12), nullable=True),
    sa.Column('created_at', sa.DateTime(), nullable=False, comment='to the minute'),
    sa.ForeignKeyConstraint(['author_id'], ['users.id'], name=op.f('fk_messages_author_id_users')),
    sa.ForeignKeyConstraint(['tip_id'], ['tips.id'], name=op.f('fk_messages_tip_id_tips'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_messages')),
    sa.UniqueConstraint('tip_id', 'seq', name='uq_messages_tip_id_seq')
    )
    op.create_table('outbox',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=8), nullable=False),
    sa.Column('channel', sa.String(length=16), nullable=False),
    sa.Column('contact_id', sa.String(length=32), nullable=False),
    sa.Column('message_id', sa.Integer(), nullable=True),
    sa.Column('payload_ct', sa.LargeBinary(), nullable=False, comment="encrypted under the contact's data key"),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(), nullable=False),
    sa.Column('lease_until', sa.DateTime(), nullable=True),
    sa.Column('provider_ref', sa.String(length=64), nullable=True, comment="keyed hash of the provider's message id"),
    sa.Column('last_error', sa.String(length=64), nullable=True, comment='error code only'),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['contact_id'], ['contacts.id'], name=op.f('fk_outbox_contact_id_contacts'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['message_id'], ['messages.id'], name=op.f('fk_outbox_message_id_messages'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_outbox'))
    )
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_outbox_contact_id'), ['contact_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_outbox_provider_ref'), ['provider_ref'], unique=False)
        batch_op.create_index('ix_outbox_status_due', ['status', 'next_attempt_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('outbox', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_status_due')
        batch_op.drop_index(batch_op.f('ix_outbox_provider_ref'))
        batch_op.drop_index(batch_op.f('ix_outbox_contact_id'))

    op.drop_table('outbox')
    op.drop_table('messages')
    with op.batch_alter_table('conversations', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_conversations_updated_at'))

    op.drop_table('conversations')
    with op.batch_alter_table('tips', schema=None) as batch_op:
        batch_op.drop_index('ix_tips_status_id')
        batch_op.drop_index(batch_op.f('ix_tips_contact_id'))

    op.drop_table('tips')
    op.drop_table('users')
    with op.batch_alter_table('processed_deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_processed_deliveries_expires_at'))

    op.drop_table('processed_deliveries')
    op.drop_table('key_versions')
    with op.batch_alter_table('contacts', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_contacts_last_activity_at'))

    op.drop_table('contacts')
