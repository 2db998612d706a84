"""The sandbox: play tipster in a browser, through the same state machine as SMS.

On only with TIPLINE_SANDBOX=1 (`make run` sets it). The browser's random token is the return
address; agency replies are read back from the outbox once the dispatcher has "sent" them.
"""

from __future__ import annotations

import re

from flask import Blueprint, Response, abort, jsonify, make_response, render_template, request
from sqlalchemy import select

from adapters import sandbox as channel
from adapters.sms import clean_text
from tipline.core.channels import InboundMessage, MediaRef
from tipline.core.vocabulary import OutboxKind, OutboxStatus
from tipline.services import outbox
from tipline.storage import records
from tipline.storage.db import read_only
from tipline.storage.models import Contact, OutboxItem
from tipline.web.context import current_runtime

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")
COOKIE = "tipline_sandbox"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")
DELIVERY = re.compile(r"^[A-Za-z0-9-]{8,64}$")
MAX_TEXT = 1600


def _token() -> str | None:
    token = request.cookies.get(COOKIE, "")
    return token if TOKEN.match(token) else None


@bp.get("")
def page() -> Response:
    runtime = current_runtime()
    response = make_response(render_template("sandbox.html", agency=runtime.settings.agency_name))
    if _token() is None:
        response.set_cookie(COOKIE, channel.new_address(), httponly=True, samesite="Strict", path="/sandbox")
    response.headers["Content-Security-Policy"] = (
        "default-src 'self'; script-src 'self'; style-src 'self'; object-src 'none'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )
    return response


@bp.post("/messages")
def send() -> Response:
    runtime = current_runtime()
    token = _token()
    if token is None:
        abort(400, "open /sandbox first: it gives this browser a sandbox identity")
    payload = request.get_json(silent=True)
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str):
        abort(400, 'send JSON like {"text": "..."}')
    text = clean_text(payload["text"])
    if len(text) > MAX_TEXT:
        abort(400, f"messages are at most {MAX_TEXT} characters, as on SMS")
    delivery = payload.get("id")
    if not isinstance(delivery, str) or not DELIVERY.match(delivery):
        delivery = records.new_id()
    result = runtime.intake.receive(channel.inbound(token, text, delivery))
    return jsonify(replies=list(result.replies), duplicate=result.duplicate)


@bp.post("/photos")
def send_photo() -> Response:
    """A photo from the page: the request body is the file itself (read into memory, never spooled
    to disk as a multipart upload would be). It goes through the same pipeline as an MMS photo."""
    runtime = current_runtime()
    token = _token()
    if token is None:
        abort(400, "open /sandbox first: it gives this browser a sandbox identity")
    sandbox = runtime.channels.get(channel.CHANNEL)
    if not isinstance(sandbox, channel.SandboxChannel):
        abort(404)
    # Twice the limit is read, so that a file just over it is refused kindly by the tip line itself.
    request.max_content_length = 2 * runtime.settings.media_max_bytes
    data = request.get_data(cache=False)
    if not data:
        abort(400, "send the photo's bytes as the request body")
    delivery = request.headers.get("X-Sandbox-Id", "")
    if not DELIVERY.match(delivery):
        delivery = records.new_id()
    # A file over the limit is refused by the tip line from its size, as a provider would declare it.
    too_large = len(data) > runtime.settings.media_max_bytes
    ref = MediaRef("" if too_large else sandbox.hold(data), request.mimetype or "", len(data))
    try:
        result = runtime.intake.receive(
            InboundMessage(channel=channel.CHANNEL, address=token, delivery_id=delivery, text="", media=(ref,))
        )
    except Exception:
        sandbox.release(ref.source)
        raise
    if result.duplicate:
        sandbox.release(ref.source)  # the first upload is the one being fetched
    return jsonify(replies=list(result.replies), duplicate=result.duplicate)


@bp.get("/inbox")
def inbox() -> Response:
    """Agency replies delivered to this browser, oldest first."""
    runtime = current_runtime()
    token = _token()
    if token is None:
        return jsonify(messages=[])
    keyring = runtime.keys.keyring
    pseudonyms = [keyring.pseudonym(channel.CHANNEL, token, v)[1] for v in keyring.pseudonym_versions()]
    messages = []
    with read_only(runtime.factory) as session:
        contact = session.scalars(select(Contact).where(Contact.pseudonym.in_(pseudonyms))).first()
        if contact is not None:
            key = records.contact_dek(keyring, contact)
            rows = session.scalars(
                select(OutboxItem)
                .where(
                    OutboxItem.contact_id == contact.id,
                    OutboxItem.kind == OutboxKind.SEND,
                    OutboxItem.status == OutboxStatus.SENT,
                )
                .order_by(OutboxItem.created_at)
            ).all()
            for row in rows[-50:]:
                payload = records.OUTBOX_PAYLOAD.open(key, row.id, row.payload_ct).decode()
                messages.append({"id": row.id, "text": outbox.send_payload(payload)[0]})
    return jsonify(messages=messages)
