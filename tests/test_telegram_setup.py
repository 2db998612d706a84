"""Setting up the Telegram bot and watching its webhook, through the `tipline` command and the real
python-telegram-bot client against the stand-in Bot API (which refuses what Telegram refuses).

What must hold: `set-webhook` also sets the command menu, description and short description, in
English for everyone and in Spanish, Portuguese and Haitian Creole for apps in those languages;
every command offered is one the bot understands; the descriptions say the line is anonymous and
not for emergencies, name the agency from settings, and fit Telegram's limits however long the name;
`status` says how the webhook stands in plain words, never prints a secret in its URL, and exits
non-zero when the webhook is missing or points elsewhere (for monitoring).
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from adapters.telegram import TelegramChannel
from adapters.telegram_profile import MAX_DESCRIPTION, MAX_SHORT_DESCRIPTION, profiles, redact_url
from tests.support import fake_telegram
from tests.support.fake_telegram import SECRET, TOKEN
from tests.support.harness import Harness
from tests.support.processes import run
from tests.support.telegram_updates import message_update
from tipline.core.channels import ChannelError
from tipline.storage.models import Contact

WEBHOOK = "https://tips.example.org/webhooks/telegram"
LANGUAGES = ["", "es", "pt", "ht"]


@pytest.fixture
def bot(env: dict[str, str]) -> Iterator[tuple[dict[str, str], fake_telegram.FakeTelegram]]:
    """An initialised tip line's command-line settings, with a stand-in Bot API."""
    fake, server = fake_telegram.start(TOKEN)
    cli_env = {k: v for k, v in env.items() if not k.startswith("TWILIO_")}
    cli_env.update({"TELEGRAM_BOT_TOKEN": TOKEN, "TELEGRAM_WEBHOOK_SECRET": SECRET, "TELEGRAM_API_BASE_URL": fake.url})
    try:
        assert run(cli_env, "init").returncode == 0
        yield cli_env, fake
    finally:
        server.shutdown()
        server.server_close()


def test_set_webhook_sets_commands_and_descriptions_per_language(
    bot: tuple[dict[str, str], fake_telegram.FakeTelegram],
) -> None:
    cli_env, fake = bot
    result = run(cli_env, "telegram", "set-webhook")
    assert result.returncode == 0, result.stderr
    assert "commands, description and short description set for: default (en), es, pt, ht" in result.stdout
    assert fake.webhook["url"] == WEBHOOK
    for language in LANGUAGES:
        names = [c["command"] for c in fake.profile[("commands", language)]]
        assert names == ["start", "help", "new", "status", "discard", "forget", "erase"], language
        description = fake.profile[("description", language)]
        short = fake.profile[("short_description", language)]
        assert "Example City Police" in description and "Example City Police" in short
        assert "911" in description and "911" in short
    english = fake.profile[("description", "")]
    assert "Anonymous tip line" in english and "not an emergency line" in english
    assert "anónima" in fake.profile[("description", "es")]
    assert "anônima" in fake.profile[("description", "pt")]
    assert "anonim" in fake.profile[("description", "ht")]
    # Set again (e.g. after a new agency name): the same calls, nothing piles up
    assert run(cli_env, "telegram", "set-webhook").returncode == 0
    assert len(fake.called("setMyCommands")) == 2 * len(LANGUAGES)


def test_every_command_offered_is_understood_by_the_bot(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    for n, (name, _) in enumerate(profiles("Example City Police")[0].commands):
        before = len(fake.called("sendMessage"))
        # Each as the first message of its own chat, after a greeting (what a tipster would do)
        assert harness.post_update(message_update("hello", user_id=7100000100 + n)).status_code == 200
        harness.dispatch()
        before = len(fake.called("sendMessage"))
        assert harness.post_update(message_update(f"/{name}", user_id=7100000100 + n)).status_code == 200
        harness.dispatch()
        answers = [m["text"] for m in fake.called("sendMessage")[before:]]
        if name == "forget":  # the return address is erased at once: the bot cannot answer any more
            with harness.runtime.factory() as session:
                assert session.scalar(select(func.count()).where(Contact.pseudonym.is_(None))) == 1
        else:
            assert answers, name
        # Never taken as the description of a tip
        assert not any("Where did it happen?" in answer for answer in answers), (name, answers)


def test_a_long_agency_name_is_left_out_rather_than_refused(tg: tuple[Harness, fake_telegram.FakeTelegram]) -> None:
    harness, fake = tg
    channel = harness.runtime.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    long_name = "The Very Long Official Name Of The Metropolitan Police Department " * 8
    channel.set_profile(long_name)  # the stand-in refuses anything over Telegram's limits
    for language in LANGUAGES:
        assert len(fake.profile[("description", language)]) <= MAX_DESCRIPTION
        assert len(fake.profile[("short_description", language)]) <= MAX_SHORT_DESCRIPTION
        assert "911" in fake.profile[("short_description", language)]
    # A middling name fits the description but not the short description
    channel.set_profile("Police Department of the City and County of Example Springs, Division of Investigations")
    assert "Division of Investigations" in fake.profile[("description", "")]
    assert "Division of Investigations" not in fake.profile[("short_description", "")]


@pytest.mark.parametrize(
    "command",
    [
        {"command": "Help", "description": "Help"},
        {"command": "a" * 33, "description": "x"},
        {"command": "new", "description": ""},
    ],
)
def test_the_stand_in_refuses_what_telegram_refuses(
    tg: tuple[Harness, fake_telegram.FakeTelegram], command: dict[str, str]
) -> None:
    harness, _ = tg
    channel = harness.runtime.channels["telegram"]
    assert isinstance(channel, TelegramChannel)
    from telegram import BotCommand

    with pytest.raises(ChannelError) as refused:
        channel._request(channel.bot.set_my_commands([BotCommand(command["command"], command["description"])]))
    assert refused.value.code == "400"
    with pytest.raises(ChannelError):
        channel._request(channel.bot.set_my_short_description("x" * 121))


def test_status_says_how_the_webhook_stands_and_exits_non_zero_when_it_is_wrong(
    bot: tuple[dict[str, str], fake_telegram.FakeTelegram],
) -> None:
    cli_env, fake = bot
    # No webhook yet
    missing = run(cli_env, "telegram", "status")
    assert missing.returncode == 1
    assert "webhook: (none)" in missing.stdout and "no webhook is set" in missing.stdout

    # Set, with a delivery error and updates waiting
    assert run(cli_env, "telegram", "set-webhook").returncode == 0
    failed_at = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(minutes=7, seconds=31)
    fake.webhook_error = (
        calendar.timegm(failed_at.timetuple()),
        "Wrong response from the webhook: 503 Service Unavailable",
    )
    fake.pending_updates = 4
    healthy = run(cli_env, "telegram", "status")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    out = healthy.stdout
    assert f"webhook: {WEBHOOK}" in out
    assert "pending updates: 4" in out
    assert "max connections: 10" in out
    assert "allowed updates: message, edited_message, callback_query, my_chat_member" in out
    assert "Wrong response from the webhook: 503 Service Unavailable" in out
    assert f"{failed_at:%Y-%m-%d %H:%M} UTC" in out  # to the minute, never the second
    assert f"{failed_at:%H:%M:%S}" not in out
    assert "about 7 minutes ago" in out or "about 8 minutes ago" in out
    assert "ok: Telegram delivers to this tip line" in out

    # Pointed elsewhere (by another deployment, or by hand) with a secret in its URL
    fake.webhook = {"url": "https://old-host.example.net/hook?token=CANARY-s3cr3t#frag", "max_connections": 40}
    elsewhere = run(cli_env, "telegram", "status")
    assert elsewhere.returncode == 1
    assert "points elsewhere" in elsewhere.stdout
    assert "https://old-host.example.net/hook?token=REDACTED" in elsewhere.stdout
    assert "CANARY-s3cr3t" not in elsewhere.stdout + elsewhere.stderr
    assert TOKEN not in elsewhere.stdout + elsewhere.stderr


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://tips.example.org/webhooks/telegram", "https://tips.example.org/webhooks/telegram"),
        ("https://user:pw@host.example:8443/x?a=1&b=2", "https://REDACTED@host.example:8443/x?a=REDACTED&b=REDACTED"),
        ("", ""),
    ],
)
def test_urls_are_shown_without_secrets(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_status_needs_the_telegram_channel(env: dict[str, str], log_file: Path) -> None:
    cli_env = {k: v for k, v in env.items() if not k.startswith("TWILIO_")}
    assert run(cli_env, "init").returncode == 0
    result = run(cli_env, "telegram", "status")
    assert result.returncode == 2
    assert "TELEGRAM_BOT_TOKEN" in result.stderr
