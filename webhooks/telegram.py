"""Telegram's webhook: updates as JSON, authenticated by the secret token set with setWebhook.

Telegram does not sign updates; it echoes the `secret_token` in `X-Telegram-Bot-Api-Secret-Token`,
compared here in constant time (403 otherwise). The endpoint answers fast: the bot's replies go
out through the outbox, and only a button press is acknowledged in the response itself.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, abort, current_app, jsonify, request

from adapters import telegram

bp = Blueprint("telegram", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)


def handle(runtime, parsed: telegram.Parsed) -> None:  # type: ignore[no-untyped-def]
    """What an update asks of the tip line; shared by the webhook and `tipline telegram poll`."""
    if parsed.blocked_address is not None:
        runtime.intake.recipient_gone(telegram.CHANNEL, parsed.blocked_address, "blocked")
    if parsed.inbound is not None:
        runtime.intake.receive(parsed.inbound)


@bp.post("/telegram")
def updates() -> Response:
    runtime = current_app.extensions["tipline"]
    if telegram.CHANNEL not in runtime.channels:
        abort(404)  # the channel is off: no bot token configured
    expected = (runtime.settings.telegram.webhook_secret or "").encode()
    sent = request.headers.get("X-Telegram-Bot-Api-Secret-Token", "").encode()
    if not expected or not hmac.compare_digest(sent, expected):
        log.warning("telegram webhook refused: bad or missing secret token")
        abort(403)
    try:
        _, parsed = telegram.parse_update(request.get_json(silent=True))
    except telegram.MalformedUpdate as error:
        log.warning("telegram webhook malformed: %s", error)
        abort(400, str(error))
    handle(runtime, parsed)
    return jsonify(telegram.webhook_response(parsed))
