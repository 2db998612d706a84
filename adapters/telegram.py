"""Telegram through python-telegram-bot 22: authenticate and parse updates (webhook or polling),
set the webhook, send, and erase a chat's messages. Only this module knows the Bot API.

Of an update we keep exactly: the chat id (the return address, handed to intake, which
pseudonymises and encrypts it), the text or caption, a location the tipster chose to share (as
text: it becomes the tip's "where"), the button pressed, the file id of a photo or of an image
sent as a file (encrypted until fetched through getFile; its file name, which can hold a date or a
name, is dropped), and whether something else was attached (refused: videos, voice, documents...).
The user id, username, first and last name, language code (used once, to pick the first language,
then forgotten), premium flag, forward origin, contact cards, `via_bot` and quotes from other chats
are dropped here. Nothing here logs an id, a name or a text.

Each kind of update has its handler (`_HANDLERS`), and the kinds in that table are the ones the
bot subscribes to. python-telegram-bot builds objects without checking types, so what we keep is
checked here (a chat id is an integer, a file id looks like one...): an update with the right
secret but an odd shape gets a 400 or is taken in part, never a 500. A deep link's `/start
PAYLOAD` is a greeting: the payload was chosen by whoever made the link, and could tag the tipster.

Telegram's errors become ChannelError here: a 403 means the tipster blocked the bot
(`recipient_gone`), "message to delete not found" that there is nothing left to erase.

Files are fetched over HTTP from the configured file URL only. python-telegram-bot's own download
reads a *local* file when getFile's `file_path` names one that exists (its "local mode"), so a
`file_path` that is not a plain relative path at Telegram is refused, and the download is ours.

Sending runs on one long-lived asyncio loop owned by the channel (python-telegram-bot is async,
the app is WSGI): calls from the dispatcher thread are submitted to it.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import math
import os
import re
import threading
import time
import warnings
from collections import deque
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

# Opt in to python-telegram-bot's future behaviour (time spans as timedelta) instead of its
# deprecation warnings; _channel_error handles both forms.
os.environ.setdefault("PTB_TIMEDELTA", "true")

import requests  # noqa: E402
from telegram import Bot, BotCommand, Chat, ChatMember, InlineKeyboardButton, InlineKeyboardMarkup, Message, Update  # noqa: E402
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError, TimedOut  # noqa: E402

from adapters.sms import clean_text  # noqa: E402
from adapters.telegram_profile import LanguageProfile, WebhookStatus, profiles, updates_tuple  # noqa: E402
from adapters.telegram_profile import to_minute as profile_minute  # noqa: E402
from tipline.config import TelegramSettings  # noqa: E402
from tipline.core import images  # noqa: E402
from tipline.core.channels import (  # noqa: E402
    ChannelError,
    ChatUpdate,
    InboundMessage,
    MalformedWebhook,
    MediaRef,
    Sent,
)
from tipline.core.vocabulary import ErasedReason  # noqa: E402

T = TypeVar("T")

CHANNEL = "telegram"
LANGUAGE_BUTTONS = [("en", "English"), ("es", "Español"), ("pt", "Português"), ("ht", "Kreyòl")]
BUTTONS = {  # callback data -> label, per language; callback data is a keyword of the conversation
    "draft": {
        "en": [("skip", "Skip"), ("done", "Done")],
        "es": [("skip", "Saltar"), ("done", "Listo")],
        "pt": [("skip", "Pular"), ("done", "Pronto")],
        "ht": [("skip", "Sote"), ("done", "Fini")],
    },
    "submitted": {
        "en": [("new", "New tip")],
        "es": [("new", "Nueva denuncia")],
        "pt": [("new", "Nova denúncia")],
        "ht": [("new", "Nouvo denonsyasyon")],
    },
    "start": dict.fromkeys(("en", "es", "pt", "ht"), LANGUAGE_BUTTONS),
}
CALLBACKS = {"skip", "done", "new", "en", "es", "pt", "ht"}
ERASE_WINDOW = 500  # how many of the chat's latest message ids /erase asks Telegram to delete
PER_CHAT_INTERVAL = 1.0  # Telegram: about one message per second per chat
GLOBAL_PER_SECOND = 30  # and about thirty per second overall
MESSAGE_GONE = "message to delete not found"  # Telegram's description when there is nothing left to delete

# Images sent as files ("documents") worth downloading; the content is checked again.
PHOTO_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp", "image/heic", "image/heif"}
FILE_ID = re.compile(r"[A-Za-z0-9_-]{1,256}")
ALBUM_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
# getFile's file_path as Telegram gives it ("photos/file_12.jpg"): relative, plain characters only.
FILE_PATH = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*(?:/[A-Za-z0-9_-][A-Za-z0-9_.-]*)*")
START = "/start"


def erase_payload(address: str, up_to: int) -> str:
    """The request an /erase queues: delete this chat's messages up to this message id."""
    return json.dumps({"chat": address, "up_to": up_to})


def parse_update(data: object) -> tuple[int, ChatUpdate]:
    """(update_id, what it asks of the tip line). Raises MalformedWebhook for anything that is not an update."""
    if not isinstance(data, dict) or not isinstance(data.get("update_id"), int):
        raise MalformedWebhook("not a Telegram update (no integer update_id)")
    try:
        update = Update.de_json(data, None)
    except Exception:  # noqa: BLE001 - the library's parse errors quote the payload
        raise MalformedWebhook("the update could not be parsed") from None
    try:
        return update.update_id, interpret(update)
    except (AttributeError, TypeError, ValueError, LookupError, ArithmeticError, RecursionError):
        # The library builds objects without checking types or required parts: a text that is a
        # number, a membership change without its new status, fail only when read.
        raise MalformedWebhook("the update has a field of an unexpected type or lacks one") from None


def _interpreted(update: Update) -> ChatUpdate:
    """A polled update, or nothing for one of a shape Telegram does not send (skipped, so that the
    poller does not stop on it, or fetch it again forever)."""
    try:
        return interpret(update)
    except (MalformedWebhook, AttributeError, TypeError, ValueError, LookupError, ArithmeticError, RecursionError):
        return ChatUpdate()


def interpret(update: Update) -> ChatUpdate:
    """What an update asks of the tip line. Kinds not subscribed to (reactions, channel posts...) ask nothing."""
    for kind, handler in _HANDLERS.items():
        if getattr(update, kind) is not None:
            return handler(update)
    return ChatUpdate()


def _delivery(update: Update) -> str:
    return f"update:{update.update_id}"


def _private(chat: Chat | None) -> bool:
    """A tipster's own chat with the bot. (The library leaves a missing chat as None.)"""
    if chat is None or not isinstance(chat, Chat) or chat.type != Chat.PRIVATE:
        return False
    if type(chat.id) is not int:  # the return address: an integer, never a text, a float or an object
        raise MalformedWebhook("the chat id is not an integer")
    return True


def _command(text: object) -> str | None:
    """The bot command a text starts with ("/start@SomeBot payload" -> "/start"), if any."""
    if not isinstance(text, str) or not text.startswith("/"):
        return None
    return text.split(maxsplit=1)[0].split("@", 1)[0].lower()


def _button(update: Update) -> ChatUpdate:
    """A button press: its callback data is a keyword of the conversation, taken in as if typed."""
    query = update.callback_query
    if query is None:
        return ChatUpdate()
    message = query.message
    keyword = query.data if query.data in CALLBACKS else None
    if message is None or not _private(message.chat) or keyword is None:
        return ChatUpdate(button_press=query.id)  # acknowledged, nothing else
    inbound = InboundMessage(channel=CHANNEL, address=str(message.chat.id), delivery_id=_delivery(update), text=keyword)
    return ChatUpdate(inbound=inbound, button_press=query.id)


def _membership(update: Update) -> ChatUpdate:
    """The tipster blocked the bot (Telegram says: kicked, or left, from their private chat)."""
    member = update.my_chat_member
    if member is None or not _private(member.chat):
        return ChatUpdate()
    if member.new_chat_member.status in (ChatMember.BANNED, ChatMember.LEFT):
        return ChatUpdate(blocked_address=str(member.chat.id))
    return ChatUpdate()


def _new_message(update: Update) -> ChatUpdate:
    return _message(update, update.message, edited=False)


def _edited_message(update: Update) -> ChatUpdate:
    return _message(update, update.edited_message, edited=True)


def _message(update: Update, message: Message | None, *, edited: bool) -> ChatUpdate:
    """A tipster's message in their private chat with the bot; groups and channels are dropped."""
    if message is None or not _private(message.chat):
        return ChatUpdate()
    address = str(message.chat.id)
    command = _command(message.text)
    if command == "/erase" and type(message.message_id) is int:
        erase = erase_payload(address, message.message_id)
        return ChatUpdate(
            inbound=InboundMessage(
                channel=CHANNEL,
                address=address,
                delivery_id=_delivery(update),
                text="",
                erase_request=erase,
            )
        )
    if command == START and edited:
        return ChatUpdate()  # an edited "/start PAYLOAD" says nothing new, and its payload is nobody's words
    content = _content(message)
    if command == START:
        # A deep link (t.me/<bot>?start=PAYLOAD) arrives as "/start PAYLOAD": the tipster typed
        # nothing, and the payload, chosen by whoever made the link, could tag them. A greeting.
        content = _Content(START)
    if edited:
        # An edit re-sends the same file: it was taken (or refused) the first time.
        content = _Content(f"(edited) {content.text}" if content.text else "")
    return ChatUpdate(
        inbound=InboundMessage(
            channel=CHANNEL,
            address=address,
            delivery_id=_delivery(update),
            text=clean_text(content.text),
            media=content.media,
            refused_media=content.refused,
            language_hint=_language(message),
            album=_album(message) if content.media else None,
        )
    )


def _language(message: Message) -> str | None:
    """The sender's app language, to pick the first language of the conversation (then forgotten)."""
    user = message.from_user
    code = getattr(user, "language_code", None)
    return code[:2].lower() if isinstance(code, str) and code else None


def _album(message: Message) -> str | None:
    """The id of the album a photo belongs to (only to thank the tipster once per album)."""
    album = message.media_group_id
    return album if isinstance(album, str) and ALBUM_ID.fullmatch(album) else None


# Which handler reads which kind of update; also the kinds the bot subscribes to.
_HANDLERS: dict[str, Callable[[Update], ChatUpdate]] = {
    "message": _new_message,
    "edited_message": _edited_message,
    "callback_query": _button,
    "my_chat_member": _membership,
}
ALLOWED_UPDATES = list(_HANDLERS)


@dataclass(frozen=True)
class _Content:
    """What a message says and carries, before it becomes an InboundMessage."""

    text: str
    media: tuple[MediaRef, ...] = ()
    refused: tuple[str, ...] = ()


def _content(message: Message) -> _Content:
    """The text of a message and its photo; anything else attached is refused unfetched."""
    location = message.location
    if location is not None and message.venue is None:
        # A location shared on purpose becomes the tip's "where", as text.
        return _Content(f"Shared location: {location.latitude:.5f}, {location.longitude:.5f}")
    text = message.text or message.caption or ""
    for attachment in _PHOTOS:
        photo = attachment(message)
        if photo is not None and not FILE_ID.fullmatch(photo.source):
            return _Content(text, refused=(images.UNREADABLE,))  # not a file id Telegram would give
        if photo is not None:
            return _Content(text, media=(photo,))
    # Anything else attached (video, voice, a non-image file, sticker, contact card, venue...) is
    # refused: none of it is fetched or stored.
    return _Content(text, refused=() if message.text else (images.TYPE,))


def _photo(message: Message) -> MediaRef | None:
    if not message.photo:
        return None
    largest = message.photo[-1]  # Telegram lists the sizes smallest first
    return MediaRef(_text(largest.file_id), "image/jpeg", _size(largest.file_size))


def _image_file(message: Message) -> MediaRef | None:
    """An image sent as a file; its file name (often a date or a name) is not kept."""
    document = message.document
    declared = (document.mime_type or "").lower() if document is not None else ""
    if document is None or declared not in PHOTO_TYPES:
        return None
    return MediaRef(_text(document.file_id), declared, _size(document.file_size))


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def _size(value: object) -> int | None:
    """A declared file size, if it is one (the bytes are counted again on download)."""
    return value if type(value) is int and value >= 0 else None


_PHOTOS: tuple[Callable[[Message], MediaRef | None], ...] = (_photo, _image_file)


def keyboard(name: str | None) -> InlineKeyboardMarkup | None:
    if not name:
        return None
    kind, _, language = name.partition(":")
    buttons = BUTTONS.get(kind, {}).get(language) or BUTTONS.get(kind, {}).get("en")
    if not buttons:
        return None
    return InlineKeyboardMarkup([[InlineKeyboardButton(label, callback_data=data) for data, label in buttons]])


class _Limiter:
    """At most one message per `per_chat` seconds per chat and `per_second` per second overall.

    It never sleeps: `reserve` either takes a slot for a message now (0.0), or says in how many
    seconds this chat may receive again, and `send` turns that into a `paced` ChannelError. The
    dispatcher then puts the row (and every later message to that chat, in order) back in the
    queue for that time and goes on with other chats and channels, instead of holding its one
    thread for one chat. Thread-safe (several dispatcher threads may share one channel).
    """

    def __init__(self, per_chat: float = PER_CHAT_INTERVAL, per_second: int = GLOBAL_PER_SECOND) -> None:
        self.per_chat = per_chat
        self.per_second = per_second
        self._last: dict[str, float] = {}
        self._recent: deque[float] = deque()
        self._lock = threading.Lock()

    def reserve(self, chat: str) -> float:
        """0.0 and the slot is taken; otherwise the seconds until `chat` may receive (nothing taken)."""
        with self._lock:
            now = time.monotonic()
            delay = max(0.0, self._last.get(chat, -math.inf) + self.per_chat - now)
            while self._recent and self._recent[0] <= now - 1.0:
                self._recent.popleft()
            if len(self._recent) >= self.per_second:
                delay = max(delay, self._recent[0] + 1.0 - now)
            if delay > 0:
                return delay
            self._last[chat] = now
            self._recent.append(now)
            if len(self._last) > 10_000:
                self._last = {k: v for k, v in self._last.items() if v > now - self.per_chat}
            return 0.0


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

    def call(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """Run a Bot coroutine on the channel's loop from any thread."""
        if not self._initialised:
            asyncio.run_coroutine_threadsafe(self.bot.initialize(), self._loop).result(timeout)
            self._initialised = True
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _request(self, coroutine: Coroutine[Any, Any, T], timeout: float = 60.0) -> T:
        """`call`, with Telegram's failures as ChannelError."""
        try:
            return self.call(coroutine, timeout)
        except TelegramError as error:
            raise _channel_error(error) from None

    # The webhook (webhooks/telegram.py)

    def authenticate(self, secret_header: str | None) -> bool:
        """Whether a webhook request carries the secret token set with setWebhook (constant time)."""
        expected = (self.settings.webhook_secret or "").encode()
        return bool(expected) and hmac.compare_digest((secret_header or "").encode(), expected)

    def parse(self, data: object) -> ChatUpdate:
        """What a webhook's update asks of the tip line; MalformedWebhook if it is not an update."""
        return parse_update(data)[1]

    def webhook_response(self, update: ChatUpdate) -> Mapping[str, object]:
        """The webhook's own answer: acknowledge a button press at once (Telegram shows a spinner until then)."""
        if update.button_press:
            return {"method": "answerCallbackQuery", "callback_query_id": update.button_press}
        return {}

    # Setting up and polling (`tipline telegram set-webhook`, `tipline telegram poll`)

    def set_webhook(self, url: str, drop_pending: bool) -> None:
        """Have Telegram post updates to `url`, with the configured secret token."""
        if not self.settings.webhook_secret:
            raise ValueError("a webhook needs TELEGRAM_WEBHOOK_SECRET")
        self._request(
            self.bot.set_webhook(
                url=url,
                secret_token=self.settings.webhook_secret,
                allowed_updates=ALLOWED_UPDATES,
                drop_pending_updates=drop_pending,
                max_connections=10,
            )
        )

    def delete_webhook(self) -> None:
        """Stop webhook delivery (polling and a webhook exclude each other); queued updates stay."""
        self._request(self.bot.delete_webhook(drop_pending_updates=False))

    def set_profile(self, agency: str) -> tuple[LanguageProfile, ...]:
        """Set the bot's command menu, description and short description, in English for everyone
        and in each other language for people whose app uses it (telegram_profile.py)."""
        found = profiles(agency)
        for profile in found:
            language = profile.language_code or None
            commands = [BotCommand(name, explanation) for name, explanation in profile.commands]
            self._request(self.bot.set_my_commands(commands, language_code=language))
            self._request(self.bot.set_my_description(profile.description, language_code=language))
            self._request(self.bot.set_my_short_description(profile.short_description, language_code=language))
        return found

    def webhook_status(self) -> WebhookStatus:
        """How Telegram says the webhook stands (getWebhookInfo)."""
        info = self._request(self.bot.get_webhook_info())
        return WebhookStatus(
            url=info.url or "",
            pending_update_count=info.pending_update_count,
            last_error_message=info.last_error_message,
            last_error_date=profile_minute(info.last_error_date),
            max_connections=info.max_connections,
            allowed_updates=updates_tuple(info.allowed_updates),
        )

    def poll_once(self, offset: int, timeout: int = 30) -> list[tuple[int, ChatUpdate]]:
        """(update_id, what it asks) of the updates from `offset` on, waiting up to `timeout` seconds for one."""
        updates = self._request(
            self.bot.get_updates(offset=offset, timeout=timeout, allowed_updates=ALLOWED_UPDATES),
            timeout=timeout + 60,
        )
        return [(update.update_id, _interpreted(update)) for update in updates]

    def confirm(self, offset: int) -> None:
        """Tell Telegram that the updates before `offset` are handled, as the next poll would."""
        self._request(self.bot.get_updates(offset=offset, timeout=0, allowed_updates=ALLOWED_UPDATES))

    def acknowledge(self, update: ChatUpdate) -> None:
        """Answer a polled button press (a webhook answers in its response instead)."""
        if update.button_press:
            self._request(self.bot.answer_callback_query(update.button_press))

    # The Channel contract (the outbox dispatcher and the media worker)

    def send(self, address: str, text: str, keyboard_name: str | None = None) -> Sent:
        """Send a text, or raise a `paced` ChannelError (Telegram not called) when this chat, or
        the bot as a whole, may not receive yet: the dispatcher retries it then, without waiting."""
        wait = self._limiter.reserve(address)
        if wait > 0:
            raise ChannelError("paced", permanent=False, retry_after=wait, paced=True)
        message = self._request(
            self.bot.send_message(
                chat_id=int(address),
                text=text,
                reply_markup=keyboard(keyboard_name),
                protect_content=True,
            )
        )
        return Sent(str(message.message_id))

    def delete(self, provider_message_id: str) -> None:
        """Delete a range of a chat's messages (the payload of an /erase request)."""
        request = json.loads(provider_message_id)
        chat, up_to = int(request["chat"]), int(request["up_to"])
        ids = list(range(max(1, up_to - ERASE_WINDOW + 1), up_to + 1))
        for start in range(0, len(ids), 100):
            try:
                self._request(self.bot.delete_messages(chat_id=chat, message_ids=ids[start : start + 100]))
            except ChannelError as error:
                if not error.missing:  # nothing left of this batch: go on with the next
                    raise

    def fetch_media(self, source: str, max_bytes: int) -> bytes:
        """Download a file by its file_id (getFile, then the file URL, which holds the bot token).

        Never through python-telegram-bot's File.download_*, which read a local file when
        `file_path` names one that exists (the library then leaves the path as it is instead of
        putting the file URL in front). Only a plain relative path is accepted, and it is always
        fetched from the configured file URL, streamed and capped."""
        file = self._request(self.bot.get_file(source))
        if type(file.file_size) is int and file.file_size > max_bytes:
            raise images.Refused(images.SIZE)
        prefix = f"{self.bot.base_file_url}/"
        path = file.file_path.removeprefix(prefix) if isinstance(file.file_path, str) else ""
        if not FILE_PATH.fullmatch(path) or ".." in path.split("/"):
            raise ChannelError("file_path", permanent=True)  # absolute, climbing or a URL: never read
        url = prefix + path
        return _download(url, max_bytes)

    def close(self) -> None:
        if self._initialised:
            asyncio.run_coroutine_threadsafe(self.bot.shutdown(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)


def _download(url: str, max_bytes: int) -> bytes:
    """GET a file, streamed and capped at max_bytes (images.Refused past it). The URL holds the bot
    token: no exception that could quote it leaves this function."""
    try:
        with requests.get(url, timeout=(5, 30), stream=True, allow_redirects=False) as response:
            if response.status_code != 200:
                status = response.status_code
                raise ChannelError(str(status), permanent=status in (400, 404, 410))
            data = bytearray()
            for chunk in response.iter_content(64 * 1024):
                data += chunk
                if len(data) > max_bytes:
                    raise images.Refused(images.SIZE)
            return bytes(data)
    except requests.RequestException as error:
        raise ChannelError(type(error).__name__, permanent=False) from None


def _channel_error(error: TelegramError) -> ChannelError:
    """What a Telegram failure means for the core.

    Only the class of the error leaves this function: Telegram's messages can quote what was sent.
    """
    if isinstance(error, RetryAfter):
        with warnings.catch_warnings():
            # PTB 22 is moving retry_after from int to timedelta and warns on access; both are handled.
            warnings.simplefilter("ignore")
            retry = error.retry_after
        seconds = retry if isinstance(retry, int) else retry.total_seconds()
        return ChannelError("429", permanent=False, retry_after=float(seconds))
    if isinstance(error, Forbidden):
        # The tipster blocked the bot (or deleted their account): nothing reaches them any more.
        return ChannelError("403", permanent=True, recipient_gone=ErasedReason.BLOCKED)
    if isinstance(error, BadRequest):
        return ChannelError("400", permanent=True, missing=MESSAGE_GONE in error.message.lower())
    if isinstance(error, TimedOut | NetworkError):
        return ChannelError("network", permanent=False)
    return ChannelError(type(error).__name__, permanent=False)
