"""Telegram updates as the Bot API posts them, from a made-up tipster (a canary identity that the
anonymity tests search for afterwards)."""

from __future__ import annotations

import itertools
import time
from typing import Any

from tests.support.fake_telegram import BOT_ID

USER_ID = 7123456789
USERNAME = "canary_tipster"
FIRST, LAST = "Canarina", "Tipsterova"
BOT = {"id": BOT_ID, "is_bot": True, "first_name": "Tip line"}
_ids = itertools.count(800_000_000)
_message_ids = itertools.count(100)


def next_update_id() -> int:
    return next(_ids)


def user(user_id: int = USER_ID, language: str | None = "en") -> dict[str, Any]:
    found: dict[str, Any] = {
        "id": user_id,
        "is_bot": False,
        "first_name": FIRST,
        "last_name": LAST,
        "username": USERNAME,
        "is_premium": True,
    }
    if language is not None:
        found["language_code"] = language
    return found


def chat(user_id: int = USER_ID) -> dict[str, Any]:
    return {"id": user_id, "type": "private", "first_name": FIRST, "last_name": LAST, "username": USERNAME}


def message(text: str | None = None, user_id: int = USER_ID, **extra: Any) -> dict[str, Any]:
    """A message in the tipster's private chat with the bot (a bot command gets its entity)."""
    found: dict[str, Any] = {
        "message_id": next(_message_ids),
        "date": int(time.time()),
        "chat": chat(user_id),
        "from": user(user_id),
    }
    if text is not None:
        found["text"] = text
        if text.startswith("/"):
            found["entities"] = [{"type": "bot_command", "offset": 0, "length": len(text.split()[0])}]
    found.update(extra)
    return found


def message_update(text: str | None = None, user_id: int = USER_ID, **extra: Any) -> dict[str, Any]:
    return {"update_id": next(_ids), "message": message(text, user_id, **extra)}


def edited_update(text: str | None = None, user_id: int = USER_ID, **extra: Any) -> dict[str, Any]:
    return {"update_id": next(_ids), "edited_message": message(text, user_id, edit_date=int(time.time()), **extra)}


def callback_update(data: str, user_id: int = USER_ID, query_id: str | None = None) -> dict[str, Any]:
    """The tipster pressed one of the bot's buttons."""
    return {
        "update_id": next(_ids),
        "callback_query": {
            "id": query_id or str(next(_ids)),
            "from": user(user_id),
            "chat_instance": "-12345",
            "data": data,
            "message": {
                "message_id": next(_message_ids),
                "date": int(time.time()),
                "chat": chat(user_id),
                "from": BOT,
                "text": "...",
            },
        },
    }


def member_update(status: str, user_id: int = USER_ID) -> dict[str, Any]:
    """The bot's membership of the tipster's chat changed: 'kicked' when they block it."""
    before = "kicked" if status == "member" else "member"
    new: dict[str, Any] = {"status": status, "user": BOT}
    if status == "kicked":
        new["until_date"] = 0
    return {
        "update_id": next(_ids),
        "my_chat_member": {
            "chat": chat(user_id),
            "from": user(user_id),
            "date": int(time.time()),
            "old_chat_member": {"status": before, "user": BOT, **({"until_date": 0} if before == "kicked" else {})},
            "new_chat_member": new,
        },
    }
