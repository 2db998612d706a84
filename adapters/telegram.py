"""Telegram through python-telegram-bot 22: parse updates, send, and erase a chat's messages.

Of an update we keep exactly: the chat id (the return address, handed to intake, which
pseudonymises and encrypts it), the text or caption, a location the tipster chose to share (as
text: it becomes the tip's "where"), the button pressed, the file id of a photo or of an image
sent as a file (encrypted until fetched through getFile; its file name, which can hold a date or a
name, is dropped), and whether something else was attached (refused: videos, voice, documents...).
The user id, username, first and last name, language code (used once, to pick the first language,
then forgotten), premium flag, forward origin, contact cards, `via_bot` and quotes from other chats
are dropped here. Nothing here logs an id, a name or a text.

Sending runs on one long-lived asyncio loop owned by the channel (python-telegram-bot is async,
the app is WSGI): calls from the dispatcher thread are submitted to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
import warnings
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Opt in to python-telegram-bot's future behaviour (time spans as timedelta) instead of its
# deprecation warnings; _channel_error handles both forms.
os.environ.setdefault("PTB_TIMEDELTA", "true")

from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Update  # noqa: E402
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut  # noqa: E402

from adapters.sms import clean_text  # noqa: E402
from tipline.core import images  # noqa: E402
from tipline.core.channels import ChannelError, InboundMessage, MediaRef, Sent  # noqa: E402
from tipline.config import TelegramSettings  # noqa: E402

CHANNEL = "telegram"
ALLOWED_UPDATES = ["message", "edited_message", "callback_query", "my_chat_member"]
BUTTONS = {  # callback data -> label, per language; callback data is a keyword of the conversation
    "draft": {"en": [("skip", "Skip"), ("done", "Done")], "es": [("skip", "Saltar"), ("done", "Listo")]},
    "submitted": {"en": [("new", "New tip")], "es": [("new", "Nueva denuncia")]},
    "start": {"en": [("en", "English"), ("es", "Español")], "es": [("en", "English"), ("es", "Español")]},
}
CALLBACKS = {"skip", "done", "new", "en", "es"}
ERASE_WINDOW = 500  # how many of the chat's latest message ids /erase asks Telegram to delete
PER_CHAT_INTERVAL = 1.0  # Telegram: about one message per second per chat
GLOBAL_PER_SECOND = 30  # and about thirty per second overall


# Images sent as files ("documents") worth downloading; the content is checked again.
PHOTO_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif"}


class MalformedUpdate(ValueError):
    """Not a Telegram update we can read; the message never quotes it."""


@dataclass(frozen=True)
class Parsed:
    """What an update asks of the tip line."""

    inbound: InboundMessage | None = None
    callback_query_id: str | None = None
    blocked_address: str | None = None  # the tipster blocked the bot: replies become impossible


def erase_payload(address: str, up_to: int) -> str:
    """The request an /erase queues: delete this chat's messages up to this message id."""
    return json.dumps({"chat": address, "up_to": up_to})


def parse_update(data: Any) -> tuple[int, Parsed]:
    """(update_id, what to do). Raises MalformedUpdate for anything that is not an update."""
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        raise MalformedUpdate("not a Telegram update (no integer update_id)")
    try:
        update = Update.de_json(data, None)
    except Exception:  # noqa: BLE001 - the library's parse errors quote the payload
        raise MalformedUpdate("the update could not be parsed") from None
    delivery = f"update:{update.update_id}"

    if update.callback_query is not None:
        query = update.callback_query
        message = query.message
        if message is None or message.chat is None or message.chat.type != "private" or query.data not in CALLBACKS:
            return update.update_id, Parsed(callback_query_id=query.id)
        inbound = InboundMessage(channel=CHANNEL, address=str(message.chat.id), delivery_id=delivery, text=query.data)
        return update.update_id, Parsed(inbound=inbound, callback_query_id=query.id)

    if update.my_chat_member is not None:
        member = update.my_chat_member
        if member.chat.type == "private" and member.new_chat_member.status in ("kicked", "left"):
            return update.update_id, Parsed(blocked_address=str(member.chat.id))
        return update.update_id, Parsed()

    message = update.message or update.edited_message
    if message is None or message.chat is None or message.chat.type != "private":
        return update.update_id, Parsed()  # a channel post, a group, a reaction: acknowledged and dropped
    address = str(message.chat.id)
    if message.text and message.text.strip().split("@", 1)[0].lower() == "/erase":
        return update.update_id, Parsed(inbound=InboundMessage(
            channel=CHANNEL, address=address, delivery_id=delivery, text="",
            erase_request=erase_payload(address, message.message_id),
        ))
    language = None
    if message.from_user is not None and message.from_user.language_code:
        language = message.from_user.language_code[:2].lower()
    files: tuple[MediaRef, ...] = ()
    refused: tuple[str, ...] = ()
    if message.location is not None and message.venue is None:
        text = f"Shared location: {message.location.latitude:.5f}, {message.location.longitude:.5f}"
    else:
        text = message.text or message.caption or ""
        if message.photo:
            largest = message.photo[-1]  # Telegram lists the sizes smallest first
            files = (MediaRef(largest.file_id, "image/jpeg", largest.file_size),)
        elif message.document is not None and (message.document.mime_type or "").lower() in PHOTO_TYPES:
            document = message.document
            files = (MediaRef(document.file_id, (document.mime_type or "").lower(), document.file_size),)
        elif not message.text:
            # Anything else attached (video, voice, a non-image file, sticker, contact card, venue...)
            # is refused: none of it is fetched or stored.
            refused = (images.TYPE,)
    if update.edited_message is not None and text:
        text = f"(edited) {text}"
    if update.edited_message is not None:
        files, refused = (), ()  # an edit re-sends the same file: it was taken (or refused) the first time
    return update.update_id, Parsed(inbound=InboundMessage(
        channel=CHANNEL, address=address, delivery_id=delivery, text=clean_text(text), media=files,
        refused_media=refused, language_hint=language, album=message.media_group_id if files else None,
    ))


def keyboard(name: str | None) -> InlineKeyboardMarkup | None:
    if not name:
        return None
    kind, _, language = name.partition(":")
    buttons = BUTTONS.get(kind, {}).get(language) or BUTTONS.get(kind, {}).get("en")
    if not buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for data, label in buttons]])


class _Limiter:
    """At most one message per second per chat and thirty per second overall (the dispatcher is one thread)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._recent: deque[float] = deque()

    def wait(self, chat: str) -> None:
        now = time.monotonic()
        delay = max(0.0, self._last.get(chat, 0.0) + PER_CHAT_INTERVAL - now)
        while self._recent and self._recent[0] < now - 1.0:
            self._recent.popleft()
        if len(self._recent) >= GLOBAL_PER_SECOND:
            delay = max(delay, self._recent[0] + 1.0 - now)
        if delay:
            time.sleep(delay)
        stamp = time.monotonic()
        self._last[chat] = stamp
        self._recent.append(stamp)
        if len(self._last) > 10_000:
            self._last = {k: v for k, v in self._last.items() if v > stamp - PER_CHAT_INTERVAL}


class TelegramChannel:
    """The Telegram channel: one Bot on one event loop for the life of the process."""

    name = CHANNEL
    deletes_provider_copies = False  # the Bot API cannot delete a chat's history at Telegram
    replies_inline = False  # answers go out through the outbox, with buttons

    def __init__(self, settings: TelegramSettings):
        self.settings = settings
        base = settings.api_base_url
        self.bot = Bot(settings.bot_token, base_url=f"{base}/bot", base_file_url=f"{base}/file/bot")
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="telegram-loop", daemon=True)
        self._thread.start()
        self._limiter = _Limiter()
        self._initialised = False

    def call(self, coroutine: Any, timeout: float = 60.0) -> Any:
        """Run a Bot coroutine on the channel's loop from any thread."""
        if not self._initialised:
            asyncio.run_coroutine_threadsafe(self.bot.initialize(), self._loop).result(timeout)
            self._initialised = True
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def send(self, address: str, text: str, keyboard_name: str | None = None) -> Sent:
        self._limiter.wait(address)
        try:
            message = self.call(self.bot.send_message(
                chat_id=int(address), text=text, reply_markup=keyboard(keyboard_name), protect_content=True,
            ))
        except TelegramError as error:
            raise _channel_error(error) from None
        return Sent(str(message.message_id))

    def delete(self, provider_message_id: str) -> None:
        """Delete a range of a chat's messages (the payload of an /erase request)."""
        request = json.loads(provider_message_id)
        chat, up_to = int(request["chat"]), int(request["up_to"])
        ids = list(range(max(1, up_to - ERASE_WINDOW + 1), up_to + 1))
        try:
            for start in range(0, len(ids), 100):
                self.call(self.bot.delete_messages(chat_id=chat, message_ids=ids[start : start + 100]))
        except TelegramError as error:
            raise _channel_error(error) from None

    def fetch_media(self, source: str, max_bytes: int) -> bytes:
        """Download a file by its file_id (getFile, then the file URL, which holds the bot token)."""
        try:
            file = self.call(self.bot.get_file(source))
            if file.file_size and file.file_size > max_bytes:
                raise images.Refused(images.SIZE)
            data = bytes(self.call(file.download_as_bytearray()))
        except TelegramError as error:
            raise _channel_error(error) from None
        if len(data) > max_bytes:
            raise images.Refused(images.SIZE)
        return data

    def close(self) -> None:
        if self._initialised:
            asyncio.run_coroutine_threadsafe(self.bot.shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)


def _channel_error(error: TelegramError) -> ChannelError:
    # Only the class of the error leaves this function: messages can quote what was sent.
    if isinstance(error, RetryAfter):
        with warnings.catch_warnings():
            # PTB 22 is moving retry_after from int to timedelta and warns on access; both are handled.
            warnings.simplefilter("ignore")
            retry = error.retry_after
        seconds = retry.total_seconds() if hasattr(retry, "total_seconds") else float(retry)
        return ChannelError("429", permanent=False, retry_after=seconds)
    if isinstance(error, Forbidden):
        return ChannelError("403", permanent=True, recipient_gone=True)  # the tipster blocked the bot
    if isinstance(error, BadRequest):
        return ChannelError("400", permanent=True)
    if isinstance(error, TimedOut | NetworkError):
        return ChannelError("network", permanent=False)
    return ChannelError(type(error).__name__, permanent=False)


def webhook_response(parsed: Parsed) -> Mapping[str, Any]:
    """The webhook's own answer: acknowledge a button press at once (Telegram shows a spinner until then)."""
    if parsed.callback_query_id:
        return {"method": "answerCallbackQuery", "callback_query_id": parsed.callback_query_id}
    return {}
