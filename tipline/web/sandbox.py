"""The sandbox: play tipster in a browser, through the same state machine as SMS.

On only with TIPLINE_SANDBOX=1 (`make run` sets it). The browser's random token is the return
address; what the dispatcher delivers to it (agency replies) waits in the sandbox channel's
memory until the page asks for it, as at a provider.

Anyone who reaches the page can post tips, urgent ones included, into the detectives' queue, so
`tipline serve` serves it on loopback addresses only (`exposure`), unless the operator spells out
TIPLINE_SANDBOX_PUBLIC=i-understand; the console labels its tips "Sandbox".
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from urllib.parse import urlsplit

from flask import Blueprint, Response, abort, jsonify, make_response, render_template, request
from werkzeug.exceptions import RequestEntityTooLarge

from adapters import sandbox as channel
from adapters.sms import clean_text
from tipline.config import Settings
from tipline.core.channels import MediaRef
from tipline.services.intake import Result
from tipline.web import limits
from tipline.web.context import current_runtime

bp = Blueprint("sandbox", __name__, url_prefix="/sandbox")
COOKIE = "tipline_sandbox"
TOKEN = re.compile(r"^[A-Za-z0-9_-]{32}$")
DELIVERY = re.compile(r"^[A-Za-z0-9-]{8,64}$")
MAX_TEXT = 1600


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip().strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure(settings: Settings, listen_host: str) -> str | None:
    """Why serving these settings on `listen_host` would put the sandbox where others can post tips,
    or None when it is off, kept to loopback addresses, or deliberately exposed (TIPLINE_SANDBOX_PUBLIC)."""
    if not settings.sandbox or settings.sandbox_public:
        return None
    public_host = urlsplit(settings.public_url).hostname or ""
    if not is_loopback(public_host):
        where = f"TIPLINE_PUBLIC_URL={settings.public_url} is not a loopback address"
    elif not is_loopback(listen_host):
        where = f"--host {listen_host} is not a loopback address"
    else:
        return None
    return (
        f"TIPLINE_SANDBOX=1 but {where}: anyone reaching it could post tips into the detectives' queue. "
        "Turn the sandbox off, serve it on 127.0.0.1, ::1 or localhost, or set "
        "TIPLINE_SANDBOX_PUBLIC=i-understand to expose it anyway"
    )


def _token() -> str | None:
    token = request.cookies.get(COOKIE, "")
    return token if TOKEN.match(token) else None


@bp.get("")
def page() -> Response:
    runtime = current_runtime()
    response = make_response(
        render_template("sandbox.html", agency=runtime.settings.agency_name, max_bytes=runtime.settings.media_max_bytes)
    )
    if _token() is None:
        response.set_cookie(
            COOKIE,
            channel.new_address(),
            httponly=True,
            samesite="Strict",
            path="/sandbox",
            secure=runtime.settings.public_url.startswith("https://"),
        )
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
        delivery = secrets.token_hex(16)
    result = runtime.intake.receive(channel.inbound(token, text, delivery))
    return _answer(token, [(channel.ME, text)], result)


def _answer(token: str, sent: list[tuple[str, str]], result: Result) -> Response:
    """The bot's replies, after keeping the exchange in this browser's transcript (so that a reload
    shows it), or erasing that transcript when the tipster asked to be forgotten. `messages` carries
    the ids of the entries kept, so that the page does not show them twice when it reads the transcript."""
    sandbox = current_runtime().channels.get(channel.CHANNEL)
    messages: list[dict[str, str]] = []
    if isinstance(sandbox, channel.SandboxChannel) and result.forgotten:
        sandbox.forget(token)
    elif isinstance(sandbox, channel.SandboxChannel) and not result.duplicate:
        entries = [*sent, *((channel.BOT, reply) for reply in result.replies)]
        messages = [{"id": sandbox.note(token, who, text), "who": who, "text": text} for who, text in entries]
    return jsonify(replies=list(result.replies), duplicate=result.duplicate, messages=messages)


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
    # A little over the limit is read, so that a file just over it is refused kindly by the tip
    # line itself; `tipline serve` keeps a body this large in memory (web/limits.py). A larger file
    # is not sent at all: the page declares its size (X-Sandbox-Size), as a provider would.
    request.max_content_length = limits.photo_body(runtime.settings)
    try:
        data = request.get_data(cache=False)
    except RequestEntityTooLarge:
        abort(413, "a file this large is not sent: declare its size in X-Sandbox-Size instead")
    declared = request.headers.get("X-Sandbox-Size", "")
    size = int(declared) if declared.isdigit() and len(declared) < 16 else len(data)
    if not data and size <= runtime.settings.media_max_bytes:
        abort(400, "send the photo's bytes as the request body")
    delivery = request.headers.get("X-Sandbox-Id", "")
    if not DELIVERY.match(delivery):
        delivery = secrets.token_hex(16)
    size = max(size, len(data))
    refused = channel.media_of(data, size, runtime.settings.media_max_bytes)
    ref = MediaRef("" if refused else sandbox.hold(data), request.mimetype or "", size)
    try:
        result = runtime.intake.receive(channel.photo_message(token, delivery, ref, refused))
    except Exception:
        sandbox.release(ref.source)
        raise
    if result.duplicate:
        sandbox.release(ref.source)  # the first upload is the one being fetched
    what = "photo" if (request.mimetype or "").startswith("image/") else "file"  # as the page labels it
    return _answer(token, [(channel.ME, f"[{what}: {max(1, round(size / 1024))} KB]")], result)


@bp.get("/inbox")
def inbox() -> Response:
    """Agency replies (and the bot's later messages) delivered to this browser, oldest first."""
    token = _token()
    sandbox = current_runtime().channels.get(channel.CHANNEL)
    if token is None or not isinstance(sandbox, channel.SandboxChannel):
        return jsonify(messages=[])
    return jsonify(messages=[{"id": id_, "text": text} for id_, text in sandbox.delivered(token)])


@bp.post("/restart")
def restart() -> Response:
    """ "Start over" (for a shared screen): this browser's conversation is erased and it becomes a new
    sandbox tipster, so the next visitor finds nothing of the last one's. What reached the tip line
    stays there, as a sandbox tip, like any tip sent."""
    runtime = current_runtime()
    token = _token()
    sandbox = runtime.channels.get(channel.CHANNEL)
    if token is not None and isinstance(sandbox, channel.SandboxChannel):
        sandbox.forget(token)
    response = jsonify(restarted=True)
    response.set_cookie(
        COOKIE,
        channel.new_address(),
        httponly=True,
        samesite="Strict",
        path="/sandbox",
        secure=runtime.settings.public_url.startswith("https://"),
    )
    return response


@bp.get("/history")
def history() -> Response:
    """This browser's whole conversation, oldest first (the page shows it again after a reload).
    Private as the inbox is: only the cookie's holder reads it, and it is not cached."""
    token = _token()
    sandbox = current_runtime().channels.get(channel.CHANNEL)
    entries = sandbox.transcript(token) if token is not None and isinstance(sandbox, channel.SandboxChannel) else []
    response = jsonify(messages=[{"id": id_, "who": who, "text": text} for id_, who, text in entries])
    response.headers["Cache-Control"] = "no-store"
    return response
