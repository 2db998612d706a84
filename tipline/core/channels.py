"""The contract between channel adapters and the core.

An adapter turns provider traffic into an `InboundMessage` (dropping everything identifying except
the return address, which only the intake sees and immediately pseudonymises and encrypts), and
implements `Channel` to send texts and delete its provider's copies.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from tipline.core.conversation import Intent
from tipline.core.vocabulary import DeliveryStatus, ErasedReason


@dataclass(frozen=True)
class MediaRef:
    """A file the tipster attached, still at the provider. Its repr shows nothing of the source."""

    source: str  # how the channel fetches it (Twilio media URL, Telegram file_id): never stored in clear
    declared_type: str = ""  # what the provider says it is: for triage only, the bytes decide
    declared_size: int | None = None  # when the provider says (Telegram), larger files are refused unfetched
    # The provider's id of its copy of this file, for Channel.delete once it is settled (Twilio: 'MM…/ME…').
    provider_copy: str | None = None

    def __repr__(self) -> str:
        return f"MediaRef(declared_type={self.declared_type!r}, declared_size={self.declared_size})"


@dataclass(frozen=True)
class InboundMessage:
    """A tipster's message, channel-neutral. Its repr never shows the address, ids or text."""

    channel: str
    address: str  # where replies go (phone number, chat id, sandbox token): never stored in clear
    delivery_id: str  # the provider's id of this delivery, for processing it once
    text: str
    media: tuple[MediaRef, ...] = ()  # attachments that may be photos: fetched and cleaned later
    # Attachments refused at the door, one reason each (see media.REASONS): video, audio, documents...
    refused_media: tuple[str, ...] = ()
    provider_intent: Intent | None = None
    language_hint: str | None = None
    provider_message_id: str | None = None  # our copy at the provider, deleted once stored (G5)
    # Photos sent together arrive one message each on Telegram (an album): its id, so that the bot
    # thanks the tipster once per album rather than once per photo.
    album: str | None = None
    # The tipster asked to erase the chat (Telegram's /erase): the provider's request, opaque here.
    erase_request: str | None = None
    # False when nobody waits for an answer to this delivery (a message taken in later from the
    # provider's log by reconciliation): its replies go through the outbox even on a channel that
    # normally answers inline (TwiML).
    answer_inline: bool = True

    def __repr__(self) -> str:
        return (
            f"InboundMessage(channel={self.channel!r}, text=<{len(self.text)} chars>, "
            f"media={len(self.media)}, refused_media={self.refused_media}, provider_intent={self.provider_intent})"
        )


@dataclass(frozen=True)
class LoggedInbound:
    """An inbound message as the provider's own log lists it (for reconciliation after an outage).

    `message` is what the webhook would have delivered (None: not one we can take in, e.g. from an
    alphanumeric sender); `sent_at` (UTC) orders the log. Its repr shows neither."""

    sent_at: dt.datetime
    message: InboundMessage | None

    def __repr__(self) -> str:
        return f"LoggedInbound(message={self.message!r})"


@dataclass(frozen=True)
class LoggedOutbound:
    """One of our line's messages still in the provider's log (for the sweep of copies).

    `certain`: the log alone shows it is ours (sent through our Messaging Service, or a TwiML reply
    from our number). A REST message from our number through no service could as well have been
    sent by another application of the agency on the same number: it is ours only if the tip line
    remembers sending it. Its repr shows nothing of the message."""

    sid: str
    certain: bool

    def __repr__(self) -> str:
        return f"LoggedOutbound(certain={self.certain})"


@dataclass(frozen=True)
class Sent:
    """The provider accepted a message; its id lets status callbacks find it."""

    provider_message_id: str | None


class ChannelError(Exception):
    """A provider refused or failed. `code` is the provider's error code, safe to store and log.

    The adapter, which knows its provider's codes, says what the failure means for the core:
    `recipient_gone` (why the tipster can never be written to again: opted out at the carrier,
    blocked the bot), `missing` (the copy to delete is already gone), `retry_after` (seconds the
    provider asked us to wait), `paced` (the provider was not called at all: the channel's own
    pacing says this address may not receive for `retry_after` seconds; not a failed attempt),
    `uncertain` (no answer came: the request may have reached the provider, and a message may have
    gone; the dispatcher then checks the provider before sending it again).
    """

    def __init__(
        self,
        code: str,
        *,
        permanent: bool,
        recipient_gone: ErasedReason | None = None,
        retry_after: float | None = None,
        missing: bool = False,
        paced: bool = False,
        uncertain: bool = False,
    ):
        super().__init__(code)
        self.code = code
        self.permanent = permanent
        self.recipient_gone = recipient_gone
        self.retry_after = retry_after
        self.missing = missing
        self.paced = paced
        self.uncertain = uncertain


class MalformedWebhook(ValueError):
    """A provider's request passed authentication but does not have the expected shape (answer 400).

    Its text names the field that is wrong, never its value.
    """


class Channel(Protocol):
    """What the outbox dispatcher needs of a channel."""

    name: str
    # Whether the provider keeps copies that we can delete (Twilio yes, Telegram no).
    deletes_provider_copies: bool
    # Whether the bot's answers go back in the webhook's own response (TwiML, the sandbox), or
    # must be sent separately through the outbox (Telegram).
    replies_inline: bool

    def send(self, address: str, text: str, keyboard: str | None = None) -> Sent: ...

    def delete(self, provider_message_id: str) -> None: ...

    def fetch_media(self, source: str, max_bytes: int) -> bytes:
        """Download an attachment (a MediaRef's source); raises media.Refused(SIZE) past max_bytes,
        ChannelError when the provider fails."""
        ...


@runtime_checkable
class SentLog(Protocol):
    """An optional capability of a channel: its provider lists the messages we sent (Twilio does,
    the Telegram Bot API does not).

    The dispatcher asks it before sending again a message whose previous attempt began but left no
    result (the process died, or the database failed, between the provider's answer and the
    bookkeeping), so that a message the provider already took is adopted rather than sent twice.
    """

    def find_sent(self, address: str, text: str, since: dt.datetime) -> list[Sent]:
        """The messages sent by REST to `address` with exactly `text` since `since` (naive UTC,
        inclusive), oldest first; raises ChannelError when the provider cannot be asked."""
        ...


@dataclass(frozen=True)
class StatusReport:
    """A provider's delivery report for one of our messages, as the adapter read it."""

    provider_message_id: str
    status: DeliveryStatus
    error_code: str | None = None  # the provider's error code, safe to store and log
    recipient_gone: ErasedReason | None = None  # the error means the tipster can never be written to again


@dataclass(frozen=True)
class ChatUpdate:
    """What one update of a bot-style provider (Telegram) asks of the tip line; empty: acknowledge only."""

    inbound: InboundMessage | None = None
    button_press: str | None = None  # the provider's id of a button press, acknowledged at once
    blocked_address: str | None = None  # the tipster blocked the bot: replies become impossible


@runtime_checkable
class BotWebhook(Protocol):
    """What the webhook of a bot-style channel needs of it (Telegram posts JSON updates)."""

    def authenticate(self, secret_header: str | None) -> bool: ...

    def parse(self, data: object) -> ChatUpdate:
        """Raises MalformedWebhook for anything that is not an update."""
        ...

    def webhook_response(self, update: ChatUpdate) -> Mapping[str, object]: ...
