"""Logging that is useful to an operator and says nothing about tipsters.

Our own log lines never carry a number, id, name or message body. Third-party clients are less
careful (the twilio client logs request parameters at INFO, urllib3 logs URLs that contain message
ids at DEBUG), so their loggers are held at WARNING whatever level the operator chooses, and a
last-line filter masks anything that looks like a phone number.

Nor does the log time a tipster: lines about one message (processed, sent, a photo stored) are
DEBUG, so at the default level (INFO) there are none to match against a carrier's records, and our
format stamps lines to the minute only. A collector that adds its own precise time to each line
(journald, a container runtime) would still time DEBUG lines: run at INFO in production.
"""

from __future__ import annotations

import logging
import re
import time

NOISY = (
    "alembic.runtime.plugins",
    "twilio",
    "urllib3",
    "requests",
    "sqlalchemy.engine",
    "werkzeug",
    "httpx",
    "httpcore",
    "telegram",
    "PIL",
    "pillow_heif",  # Pillow logs EXIF values (GPS, serials) at DEBUG while parsing
)
PHONE_LIKE = re.compile(r"\+?\(?\d[\d\s().-]{6,}\d")
IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
MIN_PHONE_DIGITS = 8
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TIME_FORMAT = "%Y-%m-%dT%H:%MZ"  # UTC, to the minute: no line is timed to the second


def _mask(match: re.Match[str]) -> str:
    text = match.group(0)
    if IPV4.match(text) or sum(ch.isdigit() for ch in text) < MIN_PHONE_DIGITS:
        return text  # an address or a small number, not a phone number
    return "[redacted]"


def redact(message: str) -> str:
    """Mask anything shaped like a phone number (8 digits or more, in any common format)."""
    return PHONE_LIKE.sub(_mask, message)


class RedactPhoneNumbers(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


def quiet_third_parties() -> None:
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def formatter() -> logging.Formatter:
    """Our line format: time to the minute in UTC, level, logger, message."""
    line = logging.Formatter(LINE_FORMAT, TIME_FORMAT)
    line.converter = time.gmtime
    return line


def setup(level: str = "INFO") -> None:
    quiet_third_parties()
    root = logging.getLogger()
    if not any(getattr(h, "_tipline", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(formatter())
        handler.addFilter(RedactPhoneNumbers())
        handler._tipline = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
