"""The sandbox channel: a web page on this machine where anyone can play tipster.

Its "return address" is a random token kept in the browser's cookie; the same state machine,
encryption and outbox serve it as SMS. Delivering a message means keeping it in this process's
memory, as a provider keeps what it delivered, until the page reads it (`delivered`): the outbox
row's text is cleared once it is sent, as for every channel. So agency replies reach the page only
when the dispatcher runs in the same process (`make run`, `tipline serve`), and are forgotten at a
restart.

A photo sent from the page waits in this process's memory (never on disk) until the media worker
fetches it, as it would wait at a provider: so the sandbox shows photo cleaning only when the
dispatcher runs in the same process (`make run`, `tipline serve`), and forgets unfetched photos
after an hour. Unlike a provider, the page hands over the file itself, so what is not a photo (by its
first bytes, whatever the browser declared) or is too large is refused at once (`media_of`): the
tipster gets one clear refusal rather than a thank-you for a photo that is refused later.

The conversation (the visitor's messages, the bot's answers, agency replies) is kept in the same
memory, per browser token, so that it survives a reload of the page (`transcript`): only the
browser holding the token's cookie reads it, FORGET and the page's "Start over" erase it (`forget`),
half an hour without a message forgets it, and a restart loses it.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict

from tipline.core import images
from tipline.core.channels import ChannelError, InboundMessage, MediaRef, Sent

CHANNEL = "sandbox"
HOLD_SECONDS = 3600.0
HOLD_MAX_FILES = 20  # the oldest waiting photo is dropped beyond this: a sandbox, not a store
INBOX_MAX_ADDRESSES = 200  # browsers whose delivered messages are kept; the oldest is dropped beyond this
INBOX_MAX_MESSAGES = 50  # per browser, as many as the page shows
# A browser's conversation is forgotten after this long without a message: the sandbox is shown to
# the public, often on a shared screen, and the next visitor must not find the last one's words.
HISTORY_IDLE_SECONDS = 1800.0
# Who said an entry of a browser's transcript (the page styles each differently).
ME, BOT, AGENCY = "me", "bot", "agency"


def new_address() -> str:
    return secrets.token_urlsafe(24)


def inbound(address: str, text: str, delivery_id: str) -> InboundMessage:
    return InboundMessage(channel=CHANNEL, address=address, delivery_id=delivery_id, text=text)


def media_of(data: bytes, declared_size: int, max_bytes: int) -> str | None:
    """Why a file from the page is refused at once (images.SIZE or images.TYPE), or None to fetch it.

    `data` may be empty when the page only declared the size of a file it knew to be too large.
    The first bytes decide the type: a PDF renamed .jpg is refused here, not after a thank-you.
    """
    if declared_size > max_bytes:
        return images.SIZE
    if images.sniff(data) is None:
        return images.TYPE
    return None


def photo_message(address: str, delivery_id: str, ref: MediaRef, refused: str | None) -> InboundMessage:
    """The message a file from the page makes: a photo to fetch, or a refusal with nothing to fetch."""
    if refused is not None:
        return InboundMessage(
            channel=CHANNEL, address=address, delivery_id=delivery_id, text="", refused_media=(refused,)
        )
    return InboundMessage(channel=CHANNEL, address=address, delivery_id=delivery_id, text="", media=(ref,))


class SandboxChannel:
    name = CHANNEL
    deletes_provider_copies = False
    replies_inline = True

    def __init__(self) -> None:
        self._held: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._delivered: OrderedDict[str, list[tuple[str, str, str]]] = OrderedDict()  # (id, who, text)
        self._last: dict[str, float] = {}  # when each browser's conversation last grew (monotonic)
        self._lock = threading.Lock()

    def hold(self, data: bytes) -> str:
        """Keep a photo from the page until the media worker fetches it; returns its reference."""
        reference = secrets.token_urlsafe(18)
        now = time.monotonic()
        with self._lock:
            self._held[reference] = (now, data)
            while len(self._held) > HOLD_MAX_FILES or next(iter(self._held.values()))[0] < now - HOLD_SECONDS:
                self._held.popitem(last=False)
        return reference

    def send(self, address: str, text: str, keyboard: str | None = None) -> Sent:
        self.note(address, AGENCY, text)
        return Sent(None)

    def note(self, address: str, who: str, text: str) -> str:
        """Add an entry to a browser's transcript; returns its id (the page shows each id once)."""
        entry = (secrets.token_urlsafe(12), who, text)
        now = time.monotonic()
        with self._lock:
            box = self._delivered.pop(address, []) if not self._idle(address, now) else []
            self._delivered[address] = [*box, entry][-INBOX_MAX_MESSAGES:]  # the most recent browser goes last
            self._last[address] = now
            while len(self._delivered) > INBOX_MAX_ADDRESSES or self._idle(next(iter(self._delivered)), now):
                oldest, _ = self._delivered.popitem(last=False)
                self._last.pop(oldest, None)
        return entry[0]

    def _idle(self, address: str, now: float) -> bool:
        return now - self._last.get(address, now) > HISTORY_IDLE_SECONDS

    def delivered(self, address: str) -> list[tuple[str, str]]:
        """(id, text) of the messages delivered to a browser (agency replies, later bot messages), oldest first."""
        return [(id_, text) for id_, who, text in self.transcript(address) if who == AGENCY]

    def transcript(self, address: str) -> list[tuple[str, str, str]]:
        """(id, who, text) of a browser's whole conversation, oldest first."""
        with self._lock:
            if self._idle(address, time.monotonic()):
                self._delivered.pop(address, None)
                self._last.pop(address, None)
            return list(self._delivered.get(address, ()))

    def forget(self, address: str) -> None:
        """Erase a browser's transcript (the tipster sent FORGET, or the page's "Start over")."""
        with self._lock:
            self._delivered.pop(address, None)
            self._last.pop(address, None)

    def delete(self, provider_message_id: str) -> None:  # pragma: no cover - nothing is kept elsewhere
        return None

    def release(self, reference: str) -> None:
        """Forget a held photo that will not be fetched (its message was a duplicate, or failed)."""
        with self._lock:
            self._held.pop(reference, None)

    def fetch_media(self, source: str, max_bytes: int) -> bytes:
        """Hand over a held photo, once. Gone (another process, a restart, an hour) is permanent."""
        with self._lock:
            held = self._held.pop(source, None)
        if held is None or time.monotonic() - held[0] > HOLD_SECONDS:
            raise ChannelError("gone", permanent=True)
        return held[1]
