"""Settings: parsed once from the environment (and an optional `.env` file) into typed values.

`load_settings(env)` is a pure function of a mapping, so tests build settings without touching
`os.environ`. Every bad value raises `ConfigError` naming the variable, and the command line prints
that one line and stops: a tip line that starts half-configured is worse than one that refuses.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import os
import re
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tipline.core.alerting import valid_email
from tipline.core.catalog import UNNAMED_AGENCY, load_overrides


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it."""


@dataclass(frozen=True)
class TwilioSettings:
    account_sid: str
    auth_token: str
    from_number: str | None
    messaging_service_sid: str | None
    api_base_url: str
    # An API key (SK…) and its secret: REST calls and media downloads use them instead of the auth
    # token, which then only verifies webhook signatures (Twilio signs with the auth token).
    api_key: str | None = None
    api_secret: str | None = None

    @property
    def rest_auth(self) -> tuple[str, str]:
        """The credentials REST calls and media downloads authenticate with (HTTP Basic)."""
        if self.api_key and self.api_secret:
            return self.api_key, self.api_secret
        return self.account_sid, self.auth_token


@dataclass(frozen=True)
class TelegramSettings:
    bot_token: str
    webhook_secret: str | None
    api_base_url: str


@dataclass(frozen=True)
class SmtpSettings:
    """Where alert emails go (TIPLINE_SMTP_URL). Certificates are always verified: against the
    system's store, or against TIPLINE_SMTP_CA_FILE for an agency's internal CA. There is no switch
    to turn verification off, so a misconfigured server fails loudly instead of silently."""

    implicit_tls: bool  # smtps://: TLS from the first byte; smtp://: STARTTLS whenever the server offers it
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never printed, not even in a repr
    ca_file: Path | None = None


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    database_url: str
    # base64 text of the 32-byte master key, or None to use (or create) `<data_dir>/master.key`.
    master_key: bytes | None
    secret_key: str | None
    public_url: str
    agency_name: str
    non_emergency_number: str
    victim_services: str
    sandbox: bool
    twilio: TwilioSettings | None
    telegram: TelegramSettings | None
    # A draft idle this long is submitted as it stands (or discarded if it has no description).
    draft_idle_minutes: int = 30
    # Return addresses of tipsters silent this long are erased (PRODUCT G2).
    retention_days: int = 90
    # Delete our copy at the provider once a message is stored (PRODUCT G5).
    provider_delete: bool = True
    # Twilio refuses to delete a message that is not final yet (error 20009); wait this long first.
    provider_delete_delay_seconds: int = 60
    log_level: str = "INFO"
    # Audit entries also go to the `tipline.audit` logger, one line each, as text or JSON
    # (TIPLINE_AUDIT_LOG_FORMAT), and optionally as JSON lines to a file an agent ships to syslog
    # or a SIEM (TIPLINE_AUDIT_LOG_FILE). The database's hash chain stays the record of truth.
    audit_log_format: str = "text"
    audit_log_file: Path | None = None
    # `tipline serve` answers content-free Prometheus metrics on this separate address
    # (TIPLINE_METRICS_ADDRESS, host:port), never on the public one; None: off.
    metrics_address: tuple[str, int] | None = None
    # Console sessions end after this much inactivity (CJIS asks for 30 at most) ...
    console_idle_minutes: int = 15
    # ... and after this many hours in any case.
    console_session_hours: int = 12
    # An account locked after 5 failed sign-ins is released by an admin or after this long.
    console_lock_minutes: int = 30
    # Photos: a file larger than this is refused without being downloaded (Telegram allows 20 MB) ...
    media_max_bytes: int = 10_000_000
    # ... and an image of more pixels is refused before it is decoded (a decompression bomb).
    media_max_pixels: int = 40_000_000
    # Serve the sandbox on a public address anyway (TIPLINE_SANDBOX_PUBLIC=i-understand): anyone who
    # reaches it can post tips into the detectives' queue, so `serve` refuses without this.
    sandbox_public: bool = False
    # Abuse control (services/intake.py): the first this-many messages of a sender in a window are
    # answered and bump the tip's unread count; after them one "slow down" notice, then silence until
    # the window passes. Every message is stored all the same. 20 leaves room for a real tipster who
    # sends a story in 15 short texts.
    sender_reply_limit: int = 20
    sender_window_minutes: int = 10
    # Administrators see a warning when more senders than this write for the first time in one hour.
    new_sender_alert_per_hour: int = 30

    # Twilio does not retry a webhook that failed: the dispatcher reads Twilio's Messages log this
    # often and takes in what it missed (services/reconcile.py); 0 turns that off.
    twilio_reconcile_seconds: int = 300

    # The agency's time zone (TIPLINE_TIMEZONE, an IANA name such as America/Chicago): the console and
    # case files show absolute times in it, and say which zone they are in. Times are stored in UTC.
    timezone: str = "UTC"

    # Reverse proxies (TIPLINE_TRUSTED_PROXY, IP addresses) whose X-Forwarded-For/-Proto/-Host are
    # believed (web/server.py); from any other peer those headers are dropped, as anyone can forge them.
    trusted_proxies: tuple[str, ...] = ()

    # The agency's own texts (TIPLINE_TEXTS_FILE), checked at load: ("<language>.<key>", text) pairs.
    texts: tuple[tuple[str, str], ...] = ()

    # Alerts to detectives (services/alerts.py): email through this server, from this address ...
    smtp: SmtpSettings | None = None
    mail_from: str | None = None
    # ... an urgent tip nobody opened this long goes to every detective with an email address ...
    escalate_minutes: int = 10
    # ... and, optionally, a content-free SMS to an on-call number through the Twilio account.
    alert_sms_to: str | None = None

    @property
    def catalog_defaults(self) -> dict[str, str]:
        """The agency's own words every bot text may use ({agency}, {non_emergency}, {victim_services}),
        and its own texts in place of the catalog's (see catalog.render)."""
        return {
            "agency": self.agency_name,
            "non_emergency": self.non_emergency_number,
            "victim_services": self.victim_services,
            **dict(self.texts),
        }

    @property
    def sqlite_path(self) -> Path | None:
        if self.database_url.startswith("sqlite:///"):
            return Path(self.database_url.removeprefix("sqlite:///"))
        return None


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
_TWILIO_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_MESSAGING_SID = re.compile(r"^MG[0-9a-fA-F]{32}$")
_API_KEY_SID = re.compile(r"^SK[0-9a-fA-F]{32}$")
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_TELEGRAM_TOKEN = re.compile(r"^[0-9]+:[A-Za-z0-9_-]{20,}$")
_TELEGRAM_SECRET = re.compile(r"^[A-Za-z0-9_-]{1,256}$")
SANDBOX_PUBLIC_CONSENT = "i-understand"


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name} must be 1 or 0 (got {raw!r})")


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number (got {raw!r})") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum} (got {value})")
    return value


def _url(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigError(f"{name} must be an http(s) URL such as {default} (got {raw!r})")
    return raw.rstrip("/")


def _sandbox_public(env: Mapping[str, str]) -> bool:
    # A consent phrase rather than a flag, so that nobody turns it on by copying a "=1" line.
    raw = env.get("TIPLINE_SANDBOX_PUBLIC", "").strip()
    if raw and raw != SANDBOX_PUBLIC_CONSENT:
        raise ConfigError(f"TIPLINE_SANDBOX_PUBLIC must be empty or {SANDBOX_PUBLIC_CONSENT} (got {raw!r})")
    return bool(raw)


def _master_key(env: Mapping[str, str]) -> bytes | None:
    raw = env.get("TIPLINE_MASTER_KEY", "").strip()
    if not raw:
        return None
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError("TIPLINE_MASTER_KEY must be base64 (e.g. `openssl rand -base64 32`)") from None
    if len(key) != 32:
        raise ConfigError(f"TIPLINE_MASTER_KEY must decode to 32 bytes (got {len(key)})")
    return key


def _twilio(env: Mapping[str, str]) -> TwilioSettings | None:
    sid = env.get("TWILIO_ACCOUNT_SID", "").strip()
    token = env.get("TWILIO_AUTH_TOKEN", "").strip()
    if not sid and not token:
        return None  # the SMS channel is simply off
    if not _TWILIO_SID.match(sid):
        raise ConfigError("TWILIO_ACCOUNT_SID must look like AC followed by 32 hex digits")
    if not token:
        raise ConfigError("TWILIO_AUTH_TOKEN is required when TWILIO_ACCOUNT_SID is set")
    from_number = env.get("TWILIO_FROM_NUMBER", "").strip() or None
    service = env.get("TWILIO_MESSAGING_SERVICE_SID", "").strip() or None
    if from_number and not _E164.match(from_number):
        raise ConfigError("TWILIO_FROM_NUMBER must be in E.164 form, e.g. +15551234567")
    if service and not _MESSAGING_SID.match(service):
        raise ConfigError("TWILIO_MESSAGING_SERVICE_SID must look like MG followed by 32 hex digits")
    if not from_number and not service:
        raise ConfigError("TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID is required to send SMS")
    return TwilioSettings(
        account_sid=sid,
        auth_token=token,
        from_number=from_number,
        messaging_service_sid=service,
        api_base_url=_url(env, "TWILIO_API_BASE_URL", "https://api.twilio.com"),
        **_twilio_api_key(env),
    )


def _twilio_api_key(env: Mapping[str, str]) -> dict[str, str]:
    """TWILIO_API_KEY and TWILIO_API_SECRET, both or neither."""
    key = env.get("TWILIO_API_KEY", "").strip()
    secret = env.get("TWILIO_API_SECRET", "").strip()
    if not key and not secret:
        return {}
    if not _API_KEY_SID.match(key):
        raise ConfigError("TWILIO_API_KEY must look like SK followed by 32 hex digits")
    if not secret:
        raise ConfigError("TWILIO_API_SECRET is required when TWILIO_API_KEY is set")
    return {"api_key": key, "api_secret": secret}


def _telegram(env: Mapping[str, str]) -> TelegramSettings | None:
    token = env.get("TELEGRAM_BOT_TOKEN", "").strip()
    if not token:
        return None
    if not _TELEGRAM_TOKEN.match(token):
        raise ConfigError("TELEGRAM_BOT_TOKEN must look like 123456:ABC... as BotFather gives it")
    secret = env.get("TELEGRAM_WEBHOOK_SECRET", "").strip() or None
    if secret and not _TELEGRAM_SECRET.match(secret):
        raise ConfigError("TELEGRAM_WEBHOOK_SECRET must be 1-256 characters of A-Z a-z 0-9 _ -")
    return TelegramSettings(
        bot_token=token,
        webhook_secret=secret,
        api_base_url=_url(env, "TELEGRAM_API_BASE_URL", "https://api.telegram.org"),
    )


def _timezone(env: Mapping[str, str]) -> str:
    name = env.get("TIPLINE_TIMEZONE", "").strip() or "UTC"
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"TIPLINE_TIMEZONE must be a time zone name such as America/Chicago, not {name!r}") from None
    return name


def _trusted_proxies(env: Mapping[str, str]) -> tuple[str, ...]:
    """TIPLINE_TRUSTED_PROXY: addresses only (not "*", not networks): each one is believed about its clients."""
    raw = env.get("TIPLINE_TRUSTED_PROXY", "").strip()
    addresses = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            addresses.append(ipaddress.ip_address(item).compressed)  # as waitress writes REMOTE_ADDR
        except ValueError:
            raise ConfigError(f"TIPLINE_TRUSTED_PROXY must be IP addresses, comma-separated (got {item!r})") from None
    return tuple(dict.fromkeys(addresses))


def _smtp(env: Mapping[str, str]) -> SmtpSettings | None:
    """TIPLINE_SMTP_URL (and TIPLINE_SMTP_CA_FILE). Errors never repeat the URL: it may hold a password."""
    raw = env.get("TIPLINE_SMTP_URL", "").strip()
    if not raw:
        return None
    shape = "TIPLINE_SMTP_URL must look like smtp://[user:pass@]host:port or smtps://[user:pass@]host:port"
    try:
        parts = urlsplit(raw)
    except ValueError:  # e.g. a stray "[" or a character a host name cannot hold; the text may hold the password
        raise ConfigError(f"{shape} (it could not be read as a URL)") from None
    try:
        port = parts.port
    except ValueError:
        raise ConfigError(f"{shape} (the port is not a number)") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError(shape)
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ConfigError(f"{shape} (nothing after the port)")
    if parts.username is not None and parts.password is None:
        raise ConfigError(f"{shape} (a user needs a password)")
    return SmtpSettings(
        implicit_tls=parts.scheme == "smtps",
        host=parts.hostname,
        port=port or (465 if parts.scheme == "smtps" else 587),
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        ca_file=_ca_file(env),
    )


def _ca_file(env: Mapping[str, str]) -> Path | None:
    raw = env.get("TIPLINE_SMTP_CA_FILE", "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"TIPLINE_SMTP_CA_FILE must be a readable PEM file of CA certificates (no file at {raw})")
    return path


def _alerts(env: Mapping[str, str], settings: Settings) -> Settings:
    """TIPLINE_MAIL_FROM (required with an SMTP server), TIPLINE_ESCALATE_MINUTES, TIPLINE_ALERT_SMS_TO."""
    mail_from = env.get("TIPLINE_MAIL_FROM", "").strip() or None
    if mail_from is not None and not valid_email(mail_from):
        raise ConfigError(f"TIPLINE_MAIL_FROM must be an email address such as tips@police.example (got {mail_from!r})")
    smtp = _smtp(env)
    if smtp is not None and mail_from is None:
        raise ConfigError("TIPLINE_MAIL_FROM is required when TIPLINE_SMTP_URL is set")
    sms_to = env.get("TIPLINE_ALERT_SMS_TO", "").strip() or None
    if sms_to is not None and not _E164.match(sms_to):
        raise ConfigError("TIPLINE_ALERT_SMS_TO must be in E.164 form, e.g. +15551234567")
    return replace(
        settings,
        smtp=smtp,
        mail_from=mail_from,
        escalate_minutes=_int(env, "TIPLINE_ESCALATE_MINUTES", 10, 1),
        alert_sms_to=sms_to,
    )


def _data_dir(env: Mapping[str, str]) -> Path:
    """TIPLINE_DATA_DIR; else systemd's StateDirectory= (`$STATE_DIRECTORY`, its first path); else ./var.

    Under systemd the working directory is `/` unless a unit says otherwise: `./var` would then
    put the keys and the database in `/var` or fail, depending on the day. The unit's state
    directory is where they belong, and `serve`, `dispatch` and `init` print the one they use.
    """
    chosen = env.get("TIPLINE_DATA_DIR", "").strip() or env.get("STATE_DIRECTORY", "").split(":")[0].strip()
    return Path(chosen or "./var").expanduser().resolve()


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (the first is the default), case-insensitive."""
    value = env.get(name, "").strip().lower() or choices[0]
    if value not in choices:
        raise ConfigError(f"{name} must be {' or '.join(choices)}")
    return value


def _audit_log_file(env: Mapping[str, str]) -> Path | None:
    """TIPLINE_AUDIT_LOG_FILE: a file in an existing directory (created 0600 when first written)."""
    value = env.get("TIPLINE_AUDIT_LOG_FILE", "").strip()
    if not value:
        return None
    path = Path(value).expanduser().absolute()  # not resolve(): a symlink must reach logs.py, which refuses it
    if not path.parent.is_dir() or path.is_dir():
        raise ConfigError(f"TIPLINE_AUDIT_LOG_FILE must be a file in an existing directory: {path}")
    return path


def _metrics_address(env: Mapping[str, str]) -> tuple[str, int] | None:
    """TIPLINE_METRICS_ADDRESS as (host, port): `127.0.0.1:9100`, `[::1]:9100`."""
    value = env.get("TIPLINE_METRICS_ADDRESS", "").strip()
    if not value:
        return None
    host, _, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("TIPLINE_METRICS_ADDRESS must be HOST:PORT, e.g. 127.0.0.1:9100")
    return host, int(port)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build Settings from an environment mapping; raise ConfigError naming the first bad value."""
    data_dir = _data_dir(env)
    database_url = env.get("TIPLINE_DATABASE_URL", "").strip()
    if not database_url:
        database_url = f"sqlite:///{data_dir / 'tipline.db'}"
    elif database_url.startswith("postgresql://") or database_url.startswith("postgres://"):
        # We ship psycopg 3; say so in the URL rather than let SQLAlchemy look for psycopg2.
        database_url = "postgresql+psycopg://" + database_url.split("://", 1)[1]
    if not (database_url.startswith("sqlite:///") or database_url.startswith("postgresql+psycopg://")):
        raise ConfigError("TIPLINE_DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
    log_level = env.get("TIPLINE_LOG_LEVEL", "INFO").strip().upper() or "INFO"
    if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError("TIPLINE_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
    secret_key = env.get("TIPLINE_SECRET_KEY", "").strip() or None
    if secret_key is not None and len(secret_key) < 32:
        raise ConfigError("TIPLINE_SECRET_KEY must be at least 32 characters")
    settings = Settings(
        data_dir=data_dir,
        database_url=database_url,
        master_key=_master_key(env),
        secret_key=secret_key,
        public_url=_url(env, "TIPLINE_PUBLIC_URL", "http://127.0.0.1:8000"),
        agency_name=env.get("TIPLINE_AGENCY_NAME", "").strip() or UNNAMED_AGENCY,
        non_emergency_number=env.get("TIPLINE_NON_EMERGENCY_NUMBER", "").strip() or "311",
        victim_services=env.get("TIPLINE_VICTIM_SERVICES", "").strip()
        or "the National Center for Victims of Crime, 1-855-484-2846",
        sandbox=_flag(env, "TIPLINE_SANDBOX", False),
        sandbox_public=_sandbox_public(env),
        twilio=_twilio(env),
        telegram=_telegram(env),
        draft_idle_minutes=_int(env, "TIPLINE_DRAFT_IDLE_MINUTES", 30, 1),
        retention_days=_int(env, "TIPLINE_RETENTION_DAYS", 90, 1),
        provider_delete=_flag(env, "TIPLINE_PROVIDER_DELETE", True),
        provider_delete_delay_seconds=_int(env, "TIPLINE_PROVIDER_DELETE_DELAY_SECONDS", 60, 0),
        log_level=log_level,
        audit_log_format=_choice(env, "TIPLINE_AUDIT_LOG_FORMAT", ("text", "json")),
        audit_log_file=_audit_log_file(env),
        metrics_address=_metrics_address(env),
        console_idle_minutes=_int(env, "TIPLINE_CONSOLE_IDLE_MINUTES", 15, 1),
        console_session_hours=_int(env, "TIPLINE_CONSOLE_SESSION_HOURS", 12, 1),
        console_lock_minutes=_int(env, "TIPLINE_CONSOLE_LOCK_MINUTES", 30, 1),
        twilio_reconcile_seconds=_int(env, "TIPLINE_TWILIO_RECONCILE_SECONDS", 300, 0),
        media_max_bytes=_int(env, "TIPLINE_MEDIA_MAX_BYTES", 10_000_000, 10_000),
        media_max_pixels=_int(env, "TIPLINE_MEDIA_MAX_PIXELS", 40_000_000, 10_000),
        sender_reply_limit=_int(env, "TIPLINE_SENDER_REPLY_LIMIT", 20, 1),
        sender_window_minutes=_int(env, "TIPLINE_SENDER_WINDOW_MINUTES", 10, 1),
        new_sender_alert_per_hour=_int(env, "TIPLINE_NEW_SENDER_ALERT_PER_HOUR", 30, 1),
        timezone=_timezone(env),
        trusted_proxies=_trusted_proxies(env),
    )
    settings = _alerts(env, settings)
    return replace(settings, texts=_texts(env, settings))


def _texts(env: Mapping[str, str], settings: Settings) -> tuple[tuple[str, str], ...]:
    """The agency's texts file, checked against the catalog and these settings (catalog.load_overrides)."""
    path = env.get("TIPLINE_TEXTS_FILE", "").strip()
    if not path:
        return ()
    try:
        texts = load_overrides(Path(path).expanduser(), settings.catalog_defaults)
    except ValueError as error:
        raise ConfigError(f"TIPLINE_TEXTS_FILE: {error}") from None
    return tuple(sorted(texts.items()))


def environment(dotenv_path: str | os.PathLike[str] = ".env") -> dict[str, str]:
    """The process environment over the values of a `.env` file (the environment wins)."""
    from dotenv import dotenv_values

    merged = {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
    merged.update(os.environ)
    return merged
