"""How large a request may be, per route and for the server as a whole.

A request body must never reach the disk: a sandbox photo's original bytes (EXIF and GPS included)
would sit in a temporary file, and anyone could fill the disk through the webhooks. waitress spools
a body larger than its `inbuf_overflow` (512 kB by default) to a temporary file *before* the app
sees it, and accepts bodies up to 1 GB; it also spools a response larger than `outbuf_overflow`
(1 MB), such as a decrypted photo on its way to a detective. So `tipline serve` refuses any body
larger than the largest route accepts (413, from waitress itself) and keeps everything smaller in
memory. Inside the app, each route accepts only what its sender sends (413 otherwise), checked
before anything reads the body, the webhooks' signature checks included.
"""

from __future__ import annotations

import sys

from tipline.config import Settings

# Twilio posts a form: Body is at most 1,600 characters (19 kB percent-encoded if every one is an
# emoji), plus ten media URLs and a few dozen short fields.
TWILIO_BODY = 64 * 1024
# Telegram posts an update as JSON: a text of at most 4,096 characters (24 kB as \u escapes), its
# entities, and perhaps the message it replies to, quoted whole.
TELEGRAM_BODY = 256 * 1024
WEBHOOK_BODIES = {"twilio": TWILIO_BODY, "telegram": TELEGRAM_BODY}  # blueprint -> bytes
# Everything else (console forms, sandbox messages). Kept below werkzeug's 500 kB, past which a
# multipart file part would be spooled to a temporary file.
DEFAULT_BODY = 256 * 1024
# The sandbox's photo upload is the file itself; this much over the photo limit is still read, so
# that a file just over it gets the tip line's own kind refusal rather than a bare 413.
PHOTO_OVERHEAD = 64 * 1024
HEADERS = 32 * 1024  # cookies, a signature, a secret token: nothing legitimate is larger
RECEIVE_MARGIN = 64 * 1024  # waitress may hold a few reads (8 kB each) past the limit before refusing


def body_limit(blueprint: str | None) -> int:
    """The largest body a route of `blueprint` accepts (the sandbox's photo route sets its own)."""
    return WEBHOOK_BODIES.get(blueprint or "", DEFAULT_BODY)


def photo_body(settings: Settings) -> int:
    """The largest body the sandbox's photo upload accepts."""
    return settings.media_max_bytes + PHOTO_OVERHEAD


def largest_body(settings: Settings) -> int:
    """The largest body any route of this server accepts."""
    routes = [DEFAULT_BODY, *WEBHOOK_BODIES.values()]
    if settings.sandbox:
        routes.append(photo_body(settings))
    return max(routes)


def server_limits(settings: Settings) -> dict[str, int]:
    """waitress's settings for `tipline serve`: nothing larger than a route accepts is read (413),
    and nothing it reads or sends is spooled to a temporary file."""
    body = largest_body(settings)
    return {
        "max_request_body_size": body + 1,  # waitress refuses a body of this size or more
        "inbuf_overflow": body + RECEIVE_MARGIN,  # so every accepted body stays in memory
        "max_request_header_size": HEADERS,
        # Responses (a decrypted photo for a detective) stay in memory too, however large: the app
        # already holds each one whole.
        "outbuf_overflow": sys.maxsize,
    }
