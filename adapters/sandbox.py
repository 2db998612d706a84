"""The sandbox channel: a web page on this machine where anyone can play tipster.

Its "return address" is a random token kept in the browser's cookie; the same state machine,
encryption and outbox serve it as SMS. Delivering a message means marking it sent: the page then
reads it back from the outbox, so replies appear even when the dispatcher runs in another process.
"""

from __future__ import annotations

import secrets

from tipline.channels import ChannelError, InboundMessage, Sent

CHANNEL = "sandbox"


def new_address() -> str:
    return secrets.token_urlsafe(24)


def inbound(address: str, text: str, delivery_id: str) -> InboundMessage:
    return InboundMessage(channel=CHANNEL, address=address, delivery_id=delivery_id, text=text)


class SandboxChannel:
    name = CHANNEL
    deletes_provider_copies = False
    replies_inline = True

    def send(self, address: str, text: str, keyboard: str | None = None) -> Sent:
        return Sent(None)

    def delete(self, provider_message_id: str) -> None:  # pragma: no cover - nothing is kept elsewhere
        return None

    def fetch_media(self, source: str, max_bytes: int) -> bytes:  # pragma: no cover - the page sends text only
        raise ChannelError("unsupported", permanent=True)
