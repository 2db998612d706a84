"""The Flask app factory and the runtime it serves: settings, database, keys, channels, outbox.

`build_runtime(settings)` wires the parts; `create_app(runtime)` assembles the blueprints
(webhooks, sandbox, later the console) around it. Nothing in here logs request data.
"""

from __future__ import annotations

import base64
import datetime as dt
import threading
import traceback
from dataclasses import dataclass, field

from flask import Flask, Response, jsonify
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import HTTPException

from adapters.sandbox import SandboxChannel
from adapters.sms import TwilioSms
from tipline import crypto, db, logs
from tipline.attachments import MediaWorker
from tipline.channels import Channel
from tipline.config import Settings
from tipline.intake import Intake
from tipline.keys import KeyStore, KeyStoreError, load_master_key, write_secret_file
from tipline.maintenance import purge
from tipline.outbox import Dispatcher

MAX_REQUEST_BYTES = 256 * 1024  # Twilio bodies are at most 1600 characters; nothing legitimate is bigger
SECRET_KEY_FILE = "secret.key"


class NotInitialised(Exception):
    pass


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    keys: KeyStore
    channels: dict[str, Channel]
    intake: Intake = field(init=False)
    media: MediaWorker = field(init=False)
    dispatcher: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        self.intake = Intake(
            self.factory, self.keys, self.settings,
            deletes_provider_copies=lambda name: name in self.channels and self.channels[name].deletes_provider_copies,
            replies_inline=lambda name: name not in self.channels or self.channels[name].replies_inline,
            on_outbox=self.wake_dispatcher,
        )
        self.media = MediaWorker(self.factory, self.keys, self.channels, self.settings)
        self.dispatcher = Dispatcher(
            self.factory, self.keys, self.channels, maintenance=self.maintain, background=self.rotate_some,
            media=self.media.run_once,
        )
        self._rotation_cursors: dict[int, object] = {}

    @property
    def sms(self) -> TwilioSms | None:
        channel = self.channels.get("sms")
        return channel if isinstance(channel, TwilioSms) else None

    def wake_dispatcher(self) -> None:
        self.dispatcher.wake()

    def rotate_some(self) -> int:
        """One batch of each key rotation an administrator started from the console.

        Returns how much work remains to be done now (non-zero keeps the dispatcher from sleeping).
        """
        from tipline import rotation

        busy = 0
        for record in rotation.running(self.factory):
            result = rotation.step(self.factory, self.keys, record.id, self._rotation_cursors.get(record.id))
            self._rotation_cursors[record.id] = result.cursor
            busy += 0 if result.finished else 1
        return busy

    def maintain(self) -> object:
        return purge(
            self.intake, self.settings.retention_days,
            session_idle=dt.timedelta(minutes=self.settings.console_idle_minutes),
            session_lifetime=dt.timedelta(hours=self.settings.console_session_hours),
        )

    def start_dispatcher(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        thread = threading.Thread(target=self.dispatcher.run_forever, args=(stop,), name="dispatcher", daemon=True)
        thread.start()
        return thread, stop

    def close(self) -> None:
        for channel in self.channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                close()
        self.engine.dispose()


def secret_key(settings: Settings, create: bool = False) -> str:
    if settings.secret_key:
        return settings.secret_key
    path = settings.data_dir / SECRET_KEY_FILE
    if not path.exists():
        if not create:
            raise NotInitialised(f"no secret key: set TIPLINE_SECRET_KEY or run `tipline init` to create {path}")
        write_secret_file(path, base64.b64encode(crypto.new_key()) + b"\n")
    return path.read_text().strip()


def build_channels(settings: Settings) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    if settings.twilio is not None:
        channels["sms"] = TwilioSms(settings.twilio, status_callback=settings.public_url + "/webhooks/twilio/status")
    if settings.telegram is not None:
        from adapters.telegram import TelegramChannel

        channels["telegram"] = TelegramChannel(settings.telegram)
    if settings.sandbox:
        channels["sandbox"] = SandboxChannel()
    return channels


def build_runtime(settings: Settings, channels: dict[str, Channel] | None = None) -> Runtime:
    """Connect to an initialised database and load the keys; NotInitialised or KeyStoreError otherwise."""
    logs.quiet_third_parties()
    if settings.sqlite_path is not None and not settings.sqlite_path.exists():
        raise NotInitialised(f"no database at {settings.sqlite_path}: run `tipline init`")
    engine = db.make_engine(settings.database_url)
    try:
        initialised = inspect(engine).has_table("key_versions")
    except OperationalError as error:
        engine.dispose()
        raise NotInitialised(f"cannot reach the database ({type(error.orig).__name__}): check TIPLINE_DATABASE_URL") from None
    if not initialised:
        engine.dispose()
        raise NotInitialised("the database has no tipline schema: run `tipline init`")
    factory = db.make_sessionmaker(engine)
    try:
        from tipline.rotation import recover_master

        recover_master(settings, factory)
        keys = KeyStore(factory, load_master_key(settings))
    except KeyStoreError:
        engine.dispose()
        raise
    return Runtime(settings, engine, factory, keys, build_channels(settings) if channels is None else channels)


def create_app(runtime: Runtime) -> Flask:
    from tipline import console, sandbox
    from webhooks import telegram, twilio

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=secret_key(runtime.settings),
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=runtime.settings.public_url.startswith("https://"),
    )
    app.extensions["tipline"] = runtime
    app.register_blueprint(twilio.bp)
    app.register_blueprint(telegram.bp)
    app.register_blueprint(console.bp)
    if runtime.settings.sandbox:
        app.register_blueprint(sandbox.bp)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        try:
            with runtime.engine.connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - any failure means "not healthy"
            return jsonify(status="unavailable", database="down"), 503
        return jsonify(status="ok", database="ok", channels=sorted(runtime.channels)), 200

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        # Plain, short, and never an echo of the request.
        code = error.code or 500
        return Response(f"{code} {error.name}: {error.description}\n" if code < 500 else f"{code} {error.name}\n",
                        content_type="text/plain; charset=utf-8"), code

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        # The exception's text may quote input; log only its type and where it was raised.
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else "?"
        app.logger.error("request failed: %s at %s", type(error).__name__, where)
        return Response("500 Internal Server Error: nothing was acknowledged; the provider will retry.\n",
                        content_type="text/plain; charset=utf-8"), 500

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        if runtime.settings.public_url.startswith("https://"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return app
