"""Drive the tip line as its providers and detectives would, through the WSGI app."""

from __future__ import annotations

import contextlib
import html
import re
import secrets
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from tests.support import fake_telegram
from tests.support.fake_twilio import FakeTwilio
from tipline.config import load_settings
from tipline.runtime import Runtime, build_runtime
from tipline.setup import initialise
from tipline.storage.keystore import load_master_key
from tipline.storage.models import Attachment
from tipline.web.app import create_app

PUBLIC_URL = "https://tips.example.org"
ACCOUNT_SID = "AC" + "5a" * 16
AUTH_TOKEN = "tok_" + "3c" * 14
LINE_NUMBER = "+15555550100"  # 555-01XX numbers are reserved for fiction
TIPSTER = "+15555550142"
CARRIER_CITY = "CANARYVILLE"
CARRIER_ZIP = "00599"
REPLY = re.compile(r"<Message(?: [^>]*)?>(.*?)</Message>", re.S)  # with or without its action
REFERENCE = re.compile(r"T-[23456789ABCDEFGHJKMNPQRSTWXYZ]{6}")


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def inbound_form(body: str, sender: str = TIPSTER, sid: str | None = None, **extra: str) -> dict[str, str]:
    """An inbound-SMS webhook body with every field Twilio sends, carrier location included."""
    sid = sid or new_sid()
    form = {
        "ToCountry": "US",
        "ToState": "NH",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "ToCity": "",
        "FromZip": CARRIER_ZIP,
        "SmsSid": sid,
        "FromState": "NH",
        "SmsStatus": "received",
        "FromCity": CARRIER_CITY,
        "Body": body,
        "FromCountry": "US",
        "To": LINE_NUMBER,
        "MessagingServiceSid": "",
        "ToZip": "",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": ACCOUNT_SID,
        "From": sender,
        "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def sign(path: str, form: dict[str, str], token: str = AUTH_TOKEN, base: str = PUBLIC_URL) -> str:
    """The X-Twilio-Signature Twilio would send for this form posted to `base + path`."""
    signature: str = RequestValidator(token).compute_signature(base + path, form)
    return signature


def replies(response: TestResponse) -> list[str]:
    return [html.unescape(m) for m in REPLY.findall(response.get_data(as_text=True))]


def reference_of(text: str) -> str:
    """The tip reference a reply names (the receipt, "Added to tip ..."); fails the test if there is none."""
    found = REFERENCE.search(text)
    assert found is not None, f"no tip reference in {text!r}"
    return found.group(0)


def status_form(sid: str, status: str, error_code: str | None = None, to: str = TIPSTER) -> dict[str, str]:
    """What Twilio posts to a status callback (or a <Message action>) about one of our messages."""
    form = {
        "MessageSid": sid,
        "SmsSid": sid,
        "MessageStatus": status,
        "SmsStatus": status,
        "AccountSid": ACCOUNT_SID,
        "From": LINE_NUMBER,
        "To": to,
        "ApiVersion": "2010-04-01",
    }
    if error_code:
        form["ErrorCode"] = error_code
    return form


@dataclass
class Harness:
    app: Flask
    client: FlaskClient
    runtime: Runtime
    twilio: FakeTwilio
    data_dir: Path
    log_file: Path
    public_url: str = PUBLIC_URL

    def post_signed(self, path: str, form: dict[str, str]) -> TestResponse:
        signature = sign(path, form, base=self.public_url)
        return self.client.post(path, data=form, headers={"X-Twilio-Signature": signature})

    def sms(self, body: str, sender: str = TIPSTER, sid: str | None = None, **extra: str) -> TestResponse:
        response = self.post_signed("/webhooks/twilio/sms", inbound_form(body, sender, sid, **extra))
        assert response.status_code == 200, response.get_data(as_text=True)
        assert response.content_type.startswith("text/xml")
        return response

    def say(self, body: str, sender: str = TIPSTER) -> list[str]:
        """Text the tip line; returns the bot's replies."""
        return replies(self.sms(body, sender))

    def submit_tip(self, what: str = "Someone keeps breaking into cars on Pine St", sender: str = TIPSTER) -> str:
        """Text a tip by SMS (description, SKIP, SKIP) as a tipster would; returns its reference."""
        self.say(what, sender=sender)
        self.say("skip", sender=sender)
        receipt = self.say("skip", sender=sender)
        assert receipt, "no receipt for the tip"
        return reference_of(receipt[0])

    def post_update(self, update: dict[str, Any], secret: str | None = fake_telegram.SECRET) -> TestResponse:
        """Post a Bot API update to the Telegram webhook, with the webhook secret (None: without)."""
        headers = {"X-Telegram-Bot-Api-Secret-Token": secret} if secret is not None else {}
        return self.client.post("/webhooks/telegram", json=update, headers=headers)

    def dispatch(self) -> int:
        """Run the outbox dispatcher until nothing is due (waiting out Telegram's per-chat pacing)."""
        return self.runtime.dispatcher.run_until_idle()

    def status_callback(self, sid: str, status: str, error_code: str | None = None) -> TestResponse:
        return self.post_signed("/webhooks/twilio/status", status_form(sid, status, error_code))

    def post_concurrently(self, path: str, form: dict[str, str], signature: str, copies: int = 6) -> list[int]:
        """Post one signed request `copies` times at once (as Twilio's retries may arrive); the statuses."""
        statuses: list[int] = []
        barrier = threading.Barrier(copies)

        def deliver() -> None:
            client = self.app.test_client()
            barrier.wait()
            statuses.append(client.post(path, data=form, headers={"X-Twilio-Signature": signature}).status_code)

        threads = [threading.Thread(target=deliver) for _ in range(copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return statuses

    def master_key(self) -> bytes:
        """The master key the tip line was initialised with (key rotations need it)."""
        return load_master_key(self.runtime.settings)


def photos(harness: Harness) -> list[Attachment]:
    """Every attachment the tip line has taken, in the order they arrived."""
    with harness.runtime.factory() as session:
        return list(session.scalars(select(Attachment).order_by(Attachment.seq)).all())


def make_harness(env: dict[str, str], twilio: FakeTwilio, log_file: Path) -> Harness:
    """The tip line initialised from `env` and served through its WSGI app; close its runtime afterwards."""
    settings = load_settings(env)
    initialise(settings)
    runtime = build_runtime(settings)
    app = create_app(runtime)
    return Harness(app, app.test_client(), runtime, twilio, settings.data_dir, log_file, settings.public_url)


@contextlib.contextmanager
def telegram_harness(
    env: dict[str, str], twilio: FakeTwilio, log_file: Path, **extra: str
) -> Iterator[tuple[Harness, fake_telegram.FakeTelegram]]:
    """The tip line with its Telegram channel pointed at a stand-in Bot API (plus `extra` settings)."""
    fake, server = fake_telegram.start(fake_telegram.TOKEN)
    telegram = {
        "TELEGRAM_BOT_TOKEN": fake_telegram.TOKEN,
        "TELEGRAM_WEBHOOK_SECRET": fake_telegram.SECRET,
        "TELEGRAM_API_BASE_URL": fake.url,
    }
    try:
        harness = make_harness({**env, **telegram, **extra}, twilio, log_file)
        try:
            yield harness, fake
        finally:
            harness.runtime.close()
    finally:
        server.shutdown()
        server.server_close()
