"""erasure and minutes: settled times to the minute, dead payloads cleared, erased senders unlinked

From this version the tip line keeps every time a tipster causes to the minute once the work it
belongs to has settled, empties an outbox row's payload once it can never be used again (done,
failed, cancelled), drops the pseudonym of senders erased under retention and unlinks tips from
senders who asked to be forgotten. This migration brings rows written by earlier versions to the same state. (Data keys
of senders erased before this version cannot be replaced here: that needs the key-encryption
keys; `tipline keys rotate --purpose contacts --reencrypt` gives every contact a fresh one.)

Columns change only in their comments.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

SETTLED_TO_THE_MINUTE = "precise while pending; to the minute once settled"
WAITING_OUTBOX = ("pending", "sending")
DEAD_OUTBOX = ("sent", "done", "failed", "cancelled")  # never performed again: their payloads go
WAITING_ATTACHMENTS = ("pending", "fetching")
COMMENTS = [  # (table, column, type, nullable, new comment, old comment)
    ("contacts", "pseudonym", sa.String(length=64), True,
     "HMAC-SHA256(pepper, 'channel:address'); NULL once forgotten or past retention",
     "HMAC-SHA256(pepper, 'channel:address'); NULL once the tipster asked to be forgotten"),
    ("contacts", "wrapped_dek", sa.LargeBinary(), False,
     "this contact's data key, wrapped; replaced when the address is erased", "this contact's data key, wrapped"),
    ("outbox", "payload_ct", sa.LargeBinary(), False,
     "encrypted under the contact's data key; emptied once done, failed or cancelled", "encrypted under the contact's data key"),
    ("outbox", "next_attempt_at", sa.DateTime(), False, SETTLED_TO_THE_MINUTE, None),
    ("outbox", "created_at", sa.DateTime(), False, "to the minute", None),
    ("attachments", "next_attempt_at", sa.DateTime(), False, SETTLED_TO_THE_MINUTE, None),
    ("processed_deliveries", "expires_at", sa.DateTime(), False, "to the minute", None),
]


def _to_minute(column: str) -> sa.ColumnClause:
    """SQL for `column` cut to the minute (SQLite stores 'YYYY-MM-DD HH:MM:SS.ffffff' text)."""
    if op.get_bind().dialect.name == "postgresql":
        return sa.literal_column(f"date_trunc('minute', {column})")
    return sa.literal_column(f"substr({column}, 1, 16) || ':00.000000'")


def upgrade() -> None:
    outbox = sa.table(
        "outbox",
        sa.column("status", sa.String),
        sa.column("payload_ct", sa.LargeBinary),
        sa.column("next_attempt_at", sa.DateTime),
        sa.column("lease_until", sa.DateTime),
        sa.column("created_at", sa.DateTime),
        sa.column("contact_id", sa.String),
        sa.column("message_id", sa.Integer),
    )
    attachments = sa.table(
        "attachments", sa.column("status", sa.String), sa.column("next_attempt_at", sa.DateTime),
        sa.column("lease_until", sa.DateTime),
    )
    deliveries = sa.table("processed_deliveries", sa.column("expires_at", sa.DateTime))
    contacts = sa.table(
        "contacts", sa.column("id", sa.String), sa.column("pseudonym", sa.String), sa.column("erased_reason", sa.String)
    )
    tips = sa.table("tips", sa.column("contact_id", sa.String))

    op.execute(deliveries.update().values(expires_at=_to_minute("expires_at")))
    op.execute(outbox.update().values(created_at=_to_minute("created_at")))
    op.execute(
        outbox.update().where(outbox.c.status.not_in(WAITING_OUTBOX))
        .values(next_attempt_at=_to_minute("next_attempt_at"), lease_until=None)
    )
    op.execute(outbox.update().where(outbox.c.status.in_(DEAD_OUTBOX)).values(payload_ct=b""))
    op.execute(
        attachments.update().where(attachments.c.status.not_in(WAITING_ATTACHMENTS))
        .values(next_attempt_at=_to_minute("next_attempt_at"), lease_until=None)
    )
    op.execute(contacts.update().where(contacts.c.erased_reason == "retention").values(pseudonym=None))
    forgotten = sa.select(contacts.c.id).where(contacts.c.erased_reason == "forget", contacts.c.pseudonym.is_(None))
    op.execute(tips.update().where(tips.c.contact_id.in_(forgotten)).values(contact_id=None))
    op.execute(outbox.update().where(outbox.c.contact_id.in_(forgotten)).values(message_id=None))

    if op.get_bind().dialect.name == "postgresql":  # SQLite keeps no column comments
        for table, column, type_, nullable, comment, old in COMMENTS:
            op.alter_column(table, column, existing_type=type_, existing_nullable=nullable, comment=comment,
                            existing_comment=old)


def downgrade() -> None:
    # What was cut or cleared cannot come back, and nothing needs it: only the comments return.
    if op.get_bind().dialect.name == "postgresql":
        for table, column, type_, nullable, comment, old in COMMENTS:
            op.alter_column(table, column, existing_type=type_, existing_nullable=nullable, comment=old,
                            existing_comment=comment)
