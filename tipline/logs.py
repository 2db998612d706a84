"""Logging that is useful to an operator and says nothing about tipsters.

Our own log lines never carry a number, id, name or message body. Third-party clients are less
careful (the twilio client logs request parameters at INFO, urllib3 logs URLs that contain message
ids at DEBUG), so their loggers are held at WARNING whatever level the operator chooses, and a
last-line filter masks anything that looks like a phone number.
"""

from __future__ import annotations

import logging
import re

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


def setup(level: str = "INFO") -> None:
    quiet_third_parties()
    root = logging.getLogger()
    if not any(getattr(h, "_tipline", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.addFilter(RedactPhoneNumbers())
        handler._tipline = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
