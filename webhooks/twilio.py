"""Twilio's webhooks: inbound SMS and delivery status callbacks.

Authenticate first, parse second: a request whose `X-Twilio-Signature` does not match (computed
over `TIPLINE_PUBLIC_URL` + path and every posted parameter) gets 403 and touches nothing.
The answer to an inbound message is sent only after its transaction committed.
"""

from __future__ import annotations

import datetime as dt
import logging

from flask import Blueprint, Response, abort, current_app, request

from adapters import sms
from tipline.services import outbox

bp = Blueprint("twilio", __name__, url_prefix="/webhooks/twilio")
log = logging.getLogger(__name__)

STATUSES = {
    "accepted", "queued", "sending", "sent", "delivered", "undelivered", "failed", "read",
    "scheduled", "canceled", "partially_delivered", "receiving", "received",
}


def _authenticated() -> None:
    runtime = current_app.extensions["tipline"]
    if runtime.sms is None:
        abort(404)  # the channel is off: no credentials configured
    # Twilio signed the URL it called: the public one, not whatever the proxy in front says.
    url = runtime.settings.public_url + request.full_path.rstrip("?")
    signature = request.headers.get("X-Twilio-Signature")
    if not sms.verify(runtime.settings.twilio.auth_token, url, request.form, signature):
        log.warning("twilio webhook refused: bad or missing signature")
        abort(403)


@bp.post("/sms")
def inbound_sms() -> Response:
    _authenticated()
    runtime = current_app.extensions["tipline"]
    try:
        message = sms.parse_inbound(request.form)
    except sms.MalformedWebhook as error:
        log.warning("twilio webhook malformed: %s", error)
        abort(400, str(error))
    result = runtime.intake.receive(message)
    return Response(sms.twiml(result.replies), content_type="text/xml; charset=utf-8")


@bp.post("/status")
def delivery_status() -> Response:
    _authenticated()
    runtime = current_app.extensions["tipline"]
    sid = request.form.get("MessageSid", "")
    status = request.form.get("MessageStatus", "").lower()
    if not sms.MESSAGE_SID.match(sid) or status not in STATUSES:
        abort(400, "MessageSid or MessageStatus is missing or malformed")
    error_code = request.form.get("ErrorCode") or None
    if error_code is not None and not error_code.isdigit():
        abort(400, "ErrorCode is malformed")
    delay = dt.timedelta(seconds=runtime.settings.provider_delete_delay_seconds) if runtime.settings.provider_delete else None
    found = outbox.record_status(
        runtime.factory, runtime.keys.keyring, runtime.sms, sid, status, error_code, delete_delay=delay
    )
    if found and delay is not None:
        runtime.wake_dispatcher()
    return Response(sms.twiml(()), content_type="text/xml; charset=utf-8")
