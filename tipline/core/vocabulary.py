"""The tip line's words for things, each said once.

Every status, kind, role and key purpose that is stored in a column or compared in code is a member
of one of these enums. They are `StrEnum`s, so a member is stored and compared as its plain value
("draft", "send", ...) and the database keeps readable strings.
"""

from __future__ import annotations

import enum


class TipStatus(enum.StrEnum):
    """Where a tip is in its life. A draft is still being written and is not shown to detectives."""

    DRAFT = "draft"
    NEW = "new"
    IN_REVIEW = "in_review"
    ACTIONABLE = "actionable"
    CLOSED = "closed"

    @classmethod
    def submitted(cls) -> tuple[TipStatus, ...]:
        """The statuses detectives see and may set."""
        return (cls.NEW, cls.IN_REVIEW, cls.ACTIONABLE, cls.CLOSED)

    @property
    def label(self) -> str:
        return self.value.replace("_", " ").capitalize()


class MessageKind(enum.StrEnum):
    """Who wrote an entry of a tip's thread."""

    TIPSTER = "tipster"
    BOT = "bot"
    AGENCY = "agency"  # a detective's reply, sent to the tipster
    NOTE = "note"  # a detective's internal note, never sent
    MEDIA = "media"  # a file the tipster sent (its attachment row says what became of it)


class ReplyDelivery(enum.StrEnum):
    """What the console shows of a message sent to the tipster (bot texts and agency replies)."""

    QUEUED = "queued"
    SENT = "sent"
    DELIVERED = "delivered"
    READ = "read"
    FAILED = "failed"


class OutboxKind(enum.StrEnum):
    SEND = "send"  # a text to the tipster
    DELETE = "delete"  # a provider's copy to delete (Twilio message or media, a Telegram chat erase)


class OutboxStatus(enum.StrEnum):
    """The dispatcher's lifecycle of one outbox row; what the provider says is `DeliveryStatus`."""

    PENDING = "pending"  # due at next_attempt_at
    CLAIMED = "sending"  # leased by a dispatcher (the lease expires if it dies)
    SENT = "sent"  # the provider accepted the text; delivery reports may follow
    DONE = "done"  # a deletion the provider carried out
    FAILED = "failed"  # given up after its attempts, or refused for good
    CANCELLED = "cancelled"  # the tipster opted out or was forgotten before it went


class DeliveryStatus(enum.StrEnum):
    """Every message status Twilio reports (its status callbacks and Messages resource)."""

    ACCEPTED = "accepted"
    SCHEDULED = "scheduled"
    CANCELED = "canceled"
    QUEUED = "queued"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"
    DELIVERED = "delivered"
    UNDELIVERED = "undelivered"
    RECEIVING = "receiving"
    RECEIVED = "received"
    READ = "read"
    PARTIALLY_DELIVERED = "partially_delivered"

    @property
    def final(self) -> bool:
        """No later report changes what happened to the message."""
        return self in _FINAL_DELIVERY

    @property
    def shown(self) -> ReplyDelivery:
        """What a detective sees of it."""
        return _SHOWN.get(self, ReplyDelivery.SENT)


_FINAL_DELIVERY = frozenset(
    {
        DeliveryStatus.DELIVERED,
        DeliveryStatus.UNDELIVERED,
        DeliveryStatus.FAILED,
        DeliveryStatus.READ,
        DeliveryStatus.CANCELED,
    }
)
_SHOWN = {
    DeliveryStatus.DELIVERED: ReplyDelivery.DELIVERED,
    DeliveryStatus.PARTIALLY_DELIVERED: ReplyDelivery.DELIVERED,
    DeliveryStatus.READ: ReplyDelivery.READ,
    DeliveryStatus.UNDELIVERED: ReplyDelivery.FAILED,
    DeliveryStatus.FAILED: ReplyDelivery.FAILED,
    DeliveryStatus.CANCELED: ReplyDelivery.FAILED,
}


class AttachmentStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for the media worker (or for its next retry)
    FETCHING = "fetching"  # leased by a media worker
    STORED = "stored"  # cleaned and sealed
    REFUSED = "refused"  # not a photo we keep (type, size, pixels, unreadable): nothing stored
    FAILED = "failed"  # never arrived after every retry


class Role(enum.StrEnum):
    DETECTIVE = "detective"  # reads and answers tips
    ADMIN = "admin"  # accounts, keys, audit log; reads no tip unless also a detective


class KeyPurpose(enum.StrEnum):
    """What a key-encryption key protects; each purpose has its own versions and rotates alone."""

    TIPS = "tips"  # wraps each tip's data key
    CONTACTS = "contacts"  # wraps each contact's data key (the return address)
    PSEUDONYM = "pseudonym"  # the pepper of senders' keyed pseudonyms and of other keyed hashes
    ACCOUNTS = "accounts"  # console users' TOTP secrets
    AUDIT = "audit"  # the HMAC key of the audit log's hash chain
    SEARCH = "search"  # the HMAC key of the blind search index (services/search.py)


class RotationStatus(enum.StrEnum):
    RUNNING = "running"
    DONE = "done"
    SUPERSEDED = "superseded"  # a re-encryption started over an unfinished re-wrap and covers its rows


class ErasedReason(enum.StrEnum):
    """Why a contact's return address is gone."""

    STOP = "stop"  # the tipster opted out (STOP, or the carrier said so)
    FORGET = "forget"  # the tipster asked to be forgotten
    BLOCKED = "blocked"  # the tipster blocked the bot (Telegram)
    UNREACHABLE = "unreachable"  # the provider says the address cannot receive messages at all
    RETENTION = "retention"  # no activity for the retention period
