"""Twilio's webhooks: inbound SMS, delivery status callbacks of REST replies (`/status`) and of
the TwiML replies (`/reply-status`, each `<Message action>`).

Authenticate first, parse second: a request whose `X-Twilio-Signature` does not match (computed
over `TIPLINE_PUBLIC_URL` + path and every posted parameter) gets 403 and touches nothing.
The answer to an inbound message is sent only after its transaction committed. `/fallback` is
Twilio's Fallback URL and is processed like `/sms`; when the database cannot take a message, both
answer 200 with a short acknowledgement, and reconciliation (services/reconcile.py) takes the
message in from Twilio's Messages log later.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import Blueprint, Response, abort, request

from tipline.core.channels import MalformedWebhook
from tipline.services import inline_replies, outbox, reconcile
from tipline.web.context import current_runtime

bp = Blueprint("twilio", __name__, url_prefix="/webhooks/twilio")
log = logging.getLogger(__name__)


@bp.before_request
def authenticate() -> None:
    """Every route: 404 while the channel is off, 403 unless Twilio signed the request."""
    runtime = current_runtime()
    if runtime.sms is None:
        abort(404)  # no credentials configured
    # Twilio signed the URL it called: the public one, not whatever the proxy in front says.
    url = runtime.settings.public_url + request.full_path.rstrip("?")
    if not runtime.sms.authenticate(url, request.form, request.headers.get("X-Twilio-Signature")):
        log.warning("twilio webhook refused: bad or missing signature")
        abort(403)


@bp.errorhandler(MalformedWebhook)
def malformed(error: MalformedWebhook) -> Response:
    """Signed but not the shape Twilio sends: 400, naming the field, never its value."""
    log.warning("twilio webhook malformed: %s", error)
    return Response(str(error), status=400, content_type="text/plain; charset=utf-8")


@bp.post("/sms")
def inbound_sms() -> Response:
    runtime = current_runtime()
    sms = runtime.sms
    assert sms is not None  # authenticate() answered 404 otherwise
    message = sms.parse_inbound(request.form)
    result = reconcile.receive_or_defer(runtime.intake, message)
    if result is None:  # the database is down: Twilio keeps the message, reconciliation takes it in
        # Unless Twilio answered it itself (Advanced Opt-Out's STOP, START, HELP): no second answer.
        deferred = () if message.provider_intent else reconcile.deferred_replies(runtime.settings, message.text)
        return Response(sms.answer(deferred), content_type=sms.answer_type)
    return Response(sms.answer(result.replies), content_type=sms.answer_type)


@bp.post("/fallback")
def fallback_sms() -> Response:
    """Twilio's Fallback URL: Twilio posts the same signed parameters here when the primary URL
    (`/sms`) failed (a 5xx, a timeout, no connection). Processed exactly like `/sms`: the delivery
    deduplication makes a second delivery harmless, and a database that is down gets the same
    200 and short acknowledgement (reconciliation takes the message in from Twilio's log)."""
    return inbound_sms()


@bp.post("/status")
def delivery_status() -> Response:
    runtime = current_runtime()
    sms = runtime.sms
    assert sms is not None  # authenticate() answered 404 otherwise
    report = sms.parse_status(request.form)
    settings = runtime.settings
    delay = dt.timedelta(seconds=settings.provider_delete_delay_seconds) if settings.provider_delete else None
    found = outbox.record_status(
        runtime.ctx,
        sms,
        report.provider_message_id,
        report.status,
        report.error_code,
        recipient_gone=report.recipient_gone,
        delete_delay=delay,
    )
    if found and delay is not None:
        runtime.wake_dispatcher()  # the provider's copy is due for deletion
    return Response(sms.answer(()), content_type=sms.answer_type)


@bp.post("/reply-status")
def reply_status() -> Response:
    """A status report for one of the bot's TwiML replies (the `action` of its `<Message>`).

    Twilio made the reply from our TwiML answer, so only this callback tells its MessageSid: once
    the status is final, the reply's copy at Twilio is queued for deletion (inline_replies explains
    how its recipient is found without any identifier in this URL)."""
    runtime = current_runtime()
    sms = runtime.sms
    assert sms is not None  # authenticate() answered 404 otherwise
    report, recipient = sms.parse_reply_status(request.form)
    settings = runtime.settings
    delay = dt.timedelta(seconds=settings.provider_delete_delay_seconds) if settings.provider_delete else None
    if inline_replies.record_status(runtime.ctx, sms, report, recipient, delete_delay=delay) and not delay:
        runtime.wake_dispatcher()  # the provider's copy is due for deletion now
    return Response(sms.answer(()), content_type=sms.answer_type)
