"""The Telegram channel end to end: the real python-telegram-bot client against a stand-in Bot API."""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tests.support import fake_telegram
from tests.support.anonymity import scan_database, scan_files
from tests.support.fake_telegram import SECRET, TOKEN
from tests.support.harness import REFERENCE, Harness
from tests.support.processes import run
from tests.support.telegram_updates import (
    FIRST,
    LAST,
    USER_ID,
    USERNAME,
    callback_update,
    chat,
    edited_update,
    member_update,
    message_update,
    next_update_id,
)
from tipline.services import review
from tipline.storage.models import Contact, OutboxItem

PATH = "/webhooks/telegram"


def say(harness: Harness, fake: fake_telegram.FakeTelegram, update: dict[str, Any]) -> list[dict[str, Any]]:
    """Deliver an update and dispatch the outbox; returns the messages the bot sent meanwhile."""
    before = len(fake.called("sendMessage"))
    response = harness.post_update(update)
    assert response.status_code == 200, response.get_data(as_text=True)
    harness.dispatch()
    return fake.called("sendMessage")[before:]


def buttons(sent: dict[str, Any]) -> list[str]:
    markup = sent.get("reply_markup") or {}
    return [b["callback_data"] for row in markup.get("inline_keyboard", []) for b in row]


def test_a_tip_by_telegram_from_start_to_detective_reply_and_erase(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    greeting = say(harness, fake, message_update("/start"))
    assert len(greeting) == 1
    assert "anonymous" in greeting[0]["text"]
    assert greeting[0]["chat_id"] == USER_ID
    assert buttons(greeting[0]) == ["en", "es", "pt", "ht"]
    assert greeting[0]["protect_content"] is True

    where = say(harness, fake, message_update("CANARY-TG a man sells stolen phones from a van at the market"))
    assert "Where did it happen?" in where[-1]["text"]
    assert buttons(where[-1]) == ["skip", "done"]

    # A location shared on purpose becomes the tip's "where"
    when = say(harness, fake, message_update(location={"latitude": 40.446944, "longitude": -79.982222}))
    assert "When did it happen?" in when[-1]["text"]

    # The Skip button: acknowledged in the webhook response, then the tip is submitted
    press = callback_update("skip")
    response = harness.post_update(press)
    assert response.get_json() == {"method": "answerCallbackQuery", "callback_query_id": press["callback_query"]["id"]}
    harness.dispatch()
    reference = REFERENCE.search(fake.called("sendMessage")[-1]["text"]).group(0)
    assert buttons(fake.called("sendMessage")[-1]) == ["new"]

    # An edited message and an attachment: kept as text, or refused kindly
    say(harness, fake, message_update("the van is white"))
    say(harness, fake, edited_update("the van is grey"))
    video = {"file_id": "BAAD", "file_unique_id": "AQAV", "width": 90, "height": 90, "duration": 3}
    refused = say(harness, fake, message_update(video=video))
    assert "only accept photos" in refused[0]["text"]
    assert fake.called("getFile") == []

    detail = review.read_tip(harness.runtime.ctx, reference)
    assert detail.where == "Shared location: 40.44694, -79.98222"
    assert detail.summary.channel == "telegram"
    assert [e.text for e in detail.thread if e.kind == "tipster"][-2:] == [
        "the van is white",
        "(edited) the van is grey",
    ]

    # A detective replies: it reaches the same chat
    review.reply(harness.runtime.ctx, reference, "Which market?")
    harness.dispatch()
    assert fake.called("sendMessage")[-1]["text"] == "Example City Police: Which market?"
    assert fake.called("sendMessage")[-1]["chat_id"] == USER_ID

    # /erase asks Telegram to delete the chat's recent messages, and says honestly what it cannot do
    erase = message_update("/erase")
    told = say(harness, fake, erase)
    deletions = fake.called("deleteMessages")
    assert deletions
    assert all(d["chat_id"] == USER_ID for d in deletions)
    assert max(max(d["message_ids"]) for d in deletions) == erase["message"]["message_id"]
    assert "48 hours" in told[0]["text"]
    assert "Delete chat" in told[0]["text"]

    # Nothing identifying anywhere we wrote
    needles = [str(USER_ID), USERNAME, FIRST, LAST, "CANARY-TG"]
    assert scan_files(harness.data_dir, needles, [harness.log_file]) == []
    assert scan_database(harness.runtime.engine, needles) == []


def labels(sent: dict[str, Any]) -> list[str]:
    markup = sent.get("reply_markup") or {}
    return [b["text"] for row in markup.get("inline_keyboard", []) for b in row]


def test_a_language_button_switches_the_texts_and_the_buttons_to_portuguese(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    say(harness, fake, message_update("/start"))
    before = len(fake.called("sendMessage"))
    harness.post_update(callback_update("pt"))
    harness.dispatch()
    told = [m["text"] for m in fake.called("sendMessage")[before:]]
    assert told[0] == "Certo, vamos escrever em português."
    where = say(harness, fake, message_update("CANARY-TG um homem vende telefones roubados na feira"))
    assert labels(where[-1]) == ["Pular", "Pronto"]
    harness.post_update(callback_update("done"))
    harness.dispatch()
    assert labels(fake.called("sendMessage")[-1]) == ["Nova denúncia"]


def test_the_secret_token_is_required(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, _ = tg
    assert harness.post_update(message_update("hi"), secret=None).status_code == 403
    assert harness.post_update(message_update("hi"), secret="wrong-secret").status_code == 403
    with harness.runtime.factory() as session:
        assert session.scalars(select(Contact)).all() == []


@pytest.mark.parametrize("body", [None, {"update_id": 5, "message": {"chat": 3}}])
def test_malformed_updates_get_400(tg: tuple[Harness, fake_telegram.FakeTelegram], body: Any) -> None:
    # Which shapes are malformed is tabled in test_parsing.py; here, what the webhook answers.
    harness, _ = tg
    response = harness.client.post(PATH, json=body, headers={"X-Telegram-Bot-Api-Secret-Token": SECRET})
    assert response.status_code == 400
    with harness.runtime.factory() as session:
        assert session.scalars(select(Contact)).all() == []


def test_updates_the_bot_does_not_handle_are_acknowledged_and_dropped(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    group = message_update("hello group")
    group["message"]["chat"] = {"id": -100123, "type": "supergroup", "title": "Some group"}
    assert say(harness, fake, group) == []
    reaction = {"chat": chat(), "message_id": 1, "date": 0, "old_reaction": [], "new_reaction": []}
    assert say(harness, fake, {"update_id": next_update_id(), "message_reaction": reaction}) == []
    with harness.runtime.factory() as session:
        assert session.scalars(select(Contact)).all() == []


def test_a_redelivered_update_is_processed_once(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    update = message_update("Someone is breaking into cars on Elm St")
    first = say(harness, fake, update)
    again = say(harness, fake, update)
    assert len(first) == 1
    assert again == []


def test_429_is_retried_after_the_time_telegram_asks(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    fake.fail_next("sendMessage", 429, {"retry_after": 7})
    harness.post_update(message_update("hi"))
    tried = harness.runtime.dispatcher.clock()
    harness.dispatch()
    with harness.runtime.factory() as session:
        [item] = session.scalars(select(OutboxItem).where(OutboxItem.kind == "send")).all()
        assert item.status == "pending"
        assert item.last_error == "429"
        wait = (item.next_attempt_at - tried).total_seconds()  # created_at is to the minute only
    assert 6 <= wait <= 9
    base = harness.runtime.dispatcher.clock
    harness.runtime.dispatcher.clock = lambda: base() + dt.timedelta(seconds=8)
    harness.dispatch()
    assert len(fake.called("sendMessage")) == 2
    assert "anonymous" in fake.called("sendMessage")[-1]["text"]


def test_a_blocked_bot_makes_replies_impossible(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    say(harness, fake, message_update("Drug deals behind the gym"))
    say(harness, fake, callback_update("done"))
    reference = REFERENCE.search(fake.called("sendMessage")[-1]["text"]).group(0)
    assert harness.post_update(member_update("kicked")).status_code == 200
    with pytest.raises(review.RepliesImpossible) as refused:
        review.reply(harness.runtime.ctx, reference, "hello?")
    assert "blocked" in refused.value.reason


def test_a_403_from_telegram_marks_the_tipster_unreachable(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    say(harness, fake, message_update("Graffiti crew at the rail yard"))
    say(harness, fake, callback_update("done"))
    reference = REFERENCE.search(fake.called("sendMessage")[-1]["text"]).group(0)
    fake.fail_next("sendMessage", 403)
    review.reply(harness.runtime.ctx, reference, "Which yard?")
    harness.dispatch()
    detail = review.read_tip(harness.runtime.ctx, reference)
    assert detail.replies_blocked
    assert "blocked" in detail.replies_blocked


def test_polling_and_set_webhook(env: dict[str, str], log_file: Path) -> None:
    fake, server = fake_telegram.start(TOKEN)
    try:
        cli_env = {k: v for k, v in env.items() if not k.startswith("TWILIO_")}
        cli_env.update(
            {"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET, "TELEGRAM_API_BASE_URL": fake.url}
        )
        assert run(cli_env, "init").returncode == 0
        webhook = run(cli_env, "telegram", "set-webhook", "--drop-pending-updates")
        assert webhook.returncode == 0, webhook.stderr
        [call] = fake.called("setWebhook")
        assert call["url"] == "https://tips.example.org/webhooks/telegram"
        assert call["secret_token"] == SECRET
        assert call["allowed_updates"] == ["message", "edited_message", "callback_query", "my_chat_member"]
        assert call["drop_pending_updates"] is True

        fake.updates.extend([message_update("CANARY-POLL stolen bikes in the garage"), callback_update("done")])
        polled = run(cli_env, "telegram", "poll", "--once")
        assert polled.returncode == 0, polled.stderr
        assert fake.called("deleteWebhook")
        assert fake.called("answerCallbackQuery")
        texts = [m["text"] for m in fake.called("sendMessage")]
        assert any("Where did it happen?" in t for t in texts)
        assert any(REFERENCE.search(t) for t in texts)
        again = run(cli_env, "telegram", "poll", "--once")  # the same updates are not handled twice
        assert again.returncode == 0
        assert len(fake.called("sendMessage")) == len(texts)
        data_dir = Path(cli_env["TIPLINE_DATA_DIR"])
        assert scan_files(data_dir, [str(USER_ID), USERNAME, FIRST, LAST, "CANARY-POLL"]) == []
    finally:
        server.shutdown()
        server.server_close()


def test_messages_to_one_chat_are_paced_to_one_per_second(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    say(harness, fake, message_update("Someone deals from the blue house"))
    say(harness, fake, callback_update("done"))
    reference = REFERENCE.search(fake.called("sendMessage")[-1]["text"]).group(0)
    for n in range(3):
        review.reply(harness.runtime.ctx, reference, f"question {n}")
    start = time.monotonic()
    harness.dispatch()
    assert time.monotonic() - start >= 2.0  # three messages to one chat: at least two one-second gaps
    assert [m["text"] for m in fake.called("sendMessage")[-3:]] == [
        f"Example City Police: question {n}" for n in range(3)
    ]


def test_identifying_fields_of_forwards_contact_cards_and_quotes_are_dropped(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    other = {
        "id": 7987654321,
        "is_bot": False,
        "first_name": "Witnessa",
        "last_name": "Forwardova",
        "username": "forwarded_person",
    }
    forwarded = message_update(
        "CANARY-FWD they meet every Friday",
        forward_origin={"type": "user", "date": int(time.time()), "sender_user": other},
        via_bot={"id": 7555555555, "is_bot": True, "first_name": "Helper", "username": "helper_lookup_bot"},
        external_reply={"origin": {"type": "hidden_user", "date": 1, "sender_user_name": "Hidden Quotedperson"}},
        quote={"text": "quoted words", "position": 0},
        entities=[{"type": "text_mention", "offset": 0, "length": 4, "user": other}],
    )
    assert "Where did it happen?" in say(harness, fake, forwarded)[-1]["text"]
    card = message_update(
        contact={
            "phone_number": "+15555550188",
            "first_name": "Cardholder",
            "last_name": "Contactova",
            "user_id": 7111111111,
            "vcard": "BEGIN:VCARD\nFN:Cardholder Contactova\nEND:VCARD",
        }
    )
    assert "only accept photos" in say(harness, fake, card)[0]["text"]
    needles = [
        str(USER_ID),
        USERNAME,
        FIRST,
        LAST,
        "7987654321",
        "Witnessa",
        "Forwardova",
        "forwarded_person",
        "helper_lookup_bot",
        "Quotedperson",
        "5555550188",
        "Cardholder",
        "Contactova",
        "7111111111",
        "VCARD",
    ]
    assert scan_files(harness.data_dir, needles, [harness.log_file]) == []
    assert scan_database(harness.runtime.engine, needles) == []


def test_the_real_client_fetches_files_through_the_configured_base_url(
    tg: tuple[Harness, fake_telegram.FakeTelegram],
) -> None:
    harness, fake = tg
    fake.files["documents/BQACAg.bin"] = b"\x89PNG not really an image"
    channel = harness.runtime.channels["telegram"]
    assert channel.fetch_media("BQACAg", max_bytes=1000) == b"\x89PNG not really an image"
    assert fake.called("download") == [{"path": "documents/BQACAg.bin"}]
