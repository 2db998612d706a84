"""Logging that is useful to an operator and says nothing about tipsters.

Our own log lines never carry a number, id, name or message body. Third-party clients are less
careful (the twilio client logs request parameters at INFO, urllib3 logs URLs that contain message
ids at DEBUG), so their loggers are held at WARNING whatever level the operator chooses, and a
last-line filter masks anything that looks like a phone number.

Nor does the log time a tipster: lines about one message (processed, sent, a photo stored) are
DEBUG, so at the default level (INFO) there are none to match against a carrier's records, and our
format stamps lines to the minute only. A collector that adds its own precise time to each line
(journald, a container runtime) would still time DEBUG lines: run at INFO in production.

Audit entries (services/audit.py) are logged too, once committed, by the `tipline.audit` logger at
INFO: one line each, as text or as a JSON object (TIPLINE_AUDIT_LOG_FORMAT), and optionally as
JSON lines in a file of their own (TIPLINE_AUDIT_LOG_FILE) for an agent to ship to syslog or a
SIEM. The same phone-number mask applies to them.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import stat
import time
from pathlib import Path

NOISY = (
    "alembic.runtime.plugins",
    "alembic.runtime.migration",  # `init` says in its own words what it did to the schema
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
# A calendar date as ISO 8601 writes it (an audit line's time): 4-2-2 digits, which no phone
# numbering plan writes a number in.
ISO_DATE = re.compile(r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$")
MIN_PHONE_DIGITS = 8
LINE_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
AUDIT = "tipline.audit"  # the logger of audit entries; each record carries them as `record.audit`
TIME_FORMAT = "%Y-%m-%dT%H:%MZ"  # UTC, to the minute: no line is timed to the second


def _mask(match: re.Match[str]) -> str:
    text = match.group(0)
    if IPV4.match(text) or ISO_DATE.match(text) or sum(ch.isdigit() for ch in text) < MIN_PHONE_DIGITS:
        return text  # an address, a date or a small number, not a phone number
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


def _as_json(record: logging.LogRecord) -> str | None:
    entry = getattr(record, "audit", None)
    return json.dumps(entry, sort_keys=True, separators=(",", ":")) if isinstance(entry, dict) else None


class AuditAsJson(logging.Filter):
    """Turn an audit record's message into its entry as one JSON object (TIPLINE_AUDIT_LOG_FORMAT=json)."""

    def filter(self, record: logging.LogRecord) -> bool:
        line = _as_json(record)
        if line is not None:
            record.msg, record.args = line, None
        return True


class JsonLines(logging.Formatter):
    """One JSON object per line, phone numbers masked as everywhere else (TIPLINE_AUDIT_LOG_FILE)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(_as_json(record) or record.getMessage())


def audit_stream(form: str = "text", path: Path | None = None) -> None:
    """Send audit entries as text or JSON lines to the log, and to `path` as JSON lines if given.

    The file is 0600 (it names console users and what they looked at), see _open_audit_file."""
    audit = logging.getLogger(AUDIT)
    for old in [f for f in audit.filters if isinstance(f, AuditAsJson)]:
        audit.removeFilter(old)
    for handler in [h for h in audit.handlers if getattr(h, "_tipline", False)]:
        audit.removeHandler(handler)
        handler.close()
    audit.setLevel(logging.INFO)  # whatever the level of the rest: the log is for auditors too
    if form == "json":
        audit.addFilter(AuditAsJson())
    if path is not None:
        handler = logging.FileHandler(path, encoding="utf-8", delay=True)
        handler.stream = _open_audit_file(path)  # opened once, as checked: never reopened by name
        handler.setFormatter(JsonLines())
        handler._tipline = True  # type: ignore[attr-defined]
        audit.addHandler(handler)


def _open_audit_file(path: Path) -> io.TextIOWrapper:
    """The audit file, opened for appending: not through a symlink (O_NOFOLLOW), a regular file
    only, and 0600 whether we created it or it was there before (it names console users)."""
    from tipline.config import ConfigError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK, 0o600)
    except OSError as error:
        raise ConfigError(f"TIPLINE_AUDIT_LOG_FILE cannot be opened: {path} ({error.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ConfigError(f"TIPLINE_AUDIT_LOG_FILE must be a regular file: {path}")
        os.fchmod(fd, 0o600)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return open(fd, "a", encoding="utf-8")  # noqa: SIM115 - the handler closes it


def quiet_third_parties() -> None:
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)


def formatter() -> logging.Formatter:
    """Our line format: time to the minute in UTC, level, logger, message."""
    line = logging.Formatter(LINE_FORMAT, TIME_FORMAT)
    line.converter = time.gmtime
    return line


def setup(level: str = "INFO", audit_format: str = "text", audit_file: Path | None = None) -> None:
    quiet_third_parties()
    audit_stream(audit_format, audit_file)
    root = logging.getLogger()
    if not any(getattr(h, "_tipline", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(formatter())
        handler.addFilter(RedactPhoneNumbers())
        handler._tipline = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
