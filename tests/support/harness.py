"""Drive the tip line as its providers and detectives would, through the WSGI app."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from twilio.request_validator import RequestValidator
from werkzeug.test import TestResponse

from tipline.runtime import Runtime
from tests.support.fake_twilio import FakeTwilio

PUBLIC_URL = "https://tips.example.org"
ACCOUNT_SID = "AC" + "5a" * 16
AUTH_TOKEN = "tok_" + "3c" * 14
LINE_NUMBER = "+15555550100"  # 555-01XX numbers are reserved for fiction
TIPSTER = "+15555550142"
CARRIER_CITY = "CANARYVILLE"
CARRIER_ZIP = "00599"
REPLY = re.compile(r"<Message>(.*?)</Message>", re.S)
REFERENCE = re.compile(r"T-[23456789ABCDEFGHJKMNPQRSTWXYZ]{6}")


def new_sid(prefix: str = "SM") -> str:
    return prefix + secrets.token_hex(16)


def inbound_form(body: str, sender: str = TIPSTER, sid: str | None = None, **extra: str) -> dict[str, str]:
    """An inbound-SMS webhook body with every field Twilio sends, carrier location included."""
    sid = sid or new_sid()
    form = {
        "ToCountry": "US", "ToState": "NH", "SmsMessageSid": sid, "NumMedia": "0", "ToCity": "",
        "FromZip": CARRIER_ZIP, "SmsSid": sid, "FromState": "NH", "SmsStatus": "received",
        "FromCity": CARRIER_CITY, "Body": body, "FromCountry": "US", "To": LINE_NUMBER,
        "MessagingServiceSid": "", "ToZip": "", "NumSegments": "1", "MessageSid": sid,
        "AccountSid": ACCOUNT_SID, "From": sender, "ApiVersion": "2010-04-01",
    }
    form.update(extra)
    return form


def sign(path: str, form: dict[str, str], token: str = AUTH_TOKEN, base: str = PUBLIC_URL) -> str:
    return RequestValidator(token).compute_signature(base + path, form)


def replies(response: TestResponse) -> list[str]:
    import html

    return [html.unescape(m) for m in REPLY.findall(response.get_data(as_text=True))]


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

    def dispatch(self) -> int:
        """Run the outbox dispatcher until nothing is due."""
        total = 0
        while (count := self.runtime.dispatcher.run_once()):
            total += count
        return total

    def status_callback(self, sid: str, status: str, error_code: str | None = None) -> TestResponse:
        form = {
            "MessageSid": sid, "SmsSid": sid, "MessageStatus": status, "SmsStatus": status,
            "AccountSid": ACCOUNT_SID, "From": LINE_NUMBER, "To": TIPSTER, "ApiVersion": "2010-04-01",
        }
        if error_code:
            form["ErrorCode"] = error_code
        return self.post_signed("/webhooks/twilio/status", form)
