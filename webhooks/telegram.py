"""Telegram's webhook: updates as JSON, authenticated by the secret token set with setWebhook.

Telegram does not sign updates; it echoes the `secret_token` in `X-Telegram-Bot-Api-Secret-Token`,
which the channel compares in constant time (403 otherwise). The endpoint answers fast: the bot's
replies go out through the outbox, and only a button press is acknowledged in the response itself.
"""

from __future__ import annotations

import logging

from flask import Blueprint, Response, abort, jsonify, request

from tipline.core.channels import BotWebhook, ChatUpdate, MalformedWebhook
from tipline.core.vocabulary import ErasedReason
from tipline.services.intake import Intake
from tipline.web.context import current_runtime

CHANNEL = "telegram"

bp = Blueprint("telegram", __name__, url_prefix="/webhooks")
log = logging.getLogger(__name__)


def handle(intake: Intake, update: ChatUpdate) -> None:
    """What an update asks of the tip line; shared by the webhook and `tipline telegram poll`."""
    if update.blocked_address is not None:
        intake.recipient_gone(CHANNEL, update.blocked_address, ErasedReason.BLOCKED)
    if update.inbound is not None:
        intake.receive(update.inbound)


@bp.errorhandler(MalformedWebhook)
def malformed(error: MalformedWebhook) -> Response:
    """Authenticated but not an update: 400, saying what is wrong without quoting it."""
    log.warning("telegram webhook malformed: %s", error)
    return Response(str(error), status=400, content_type="text/plain; charset=utf-8")


@bp.post("/telegram")
def updates() -> Response:
    runtime = current_runtime()
    channel = runtime.channels.get(CHANNEL)
    if not isinstance(channel, BotWebhook):
        abort(404)  # the channel is off: no bot token configured
    if not channel.authenticate(request.headers.get("X-Telegram-Bot-Api-Secret-Token")):
        log.warning("telegram webhook refused: bad or missing secret token")
        abort(403)
    try:
        data = request.get_json(silent=True)
    except RecursionError:  # JSON nested deeper than Python parses: not an update (400 below)
        data = None
    update = channel.parse(data)
    handle(runtime.intake, update)
    return jsonify(channel.webhook_response(update))
