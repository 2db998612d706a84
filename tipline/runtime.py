"""The composition root: settings, database, keys, channels and services, wired once.

`build_runtime(settings)` connects to an initialised database, loads the keys and builds the
channel adapters and the services that use them; the web app (`tipline.web.app.create_app`), the
command line and the tests all start from a `Runtime`.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine, inspect
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from adapters.sandbox import SandboxChannel
from adapters.sms import TwilioSms
from tipline import logs
from tipline.config import Settings
from tipline.core.channels import Channel
from tipline.services import alerts, health, metrics
from tipline.services.alerts import AlertWorker
from tipline.services.attachments import MediaWorker
from tipline.services.context import ServiceContext
from tipline.services.intake import ChannelTraits, Intake
from tipline.services.maintenance import PurgeReport, purge
from tipline.services.outbox import Dispatcher
from tipline.services.processes import Heartbeat
from tipline.storage import db
from tipline.storage.keystore import KeyStore, KeyStoreError, load_master_key, secret_key


class NotInitialised(Exception):
    """The database is missing, unreachable, or not at the schema this code needs; the message says what to do."""


class DatabaseUnreachable(NotInitialised):
    """The database did not answer at start: unlike the other refusals it may pass by itself (a
    database server still booting), so `tipline` exits 75 and systemd tries again."""


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    keys: KeyStore
    channels: dict[str, Channel]
    ctx: ServiceContext = field(init=False)
    intake: Intake = field(init=False)
    media: MediaWorker = field(init=False)
    alerts: AlertWorker = field(init=False)
    dispatcher: Dispatcher = field(init=False)

    def __post_init__(self) -> None:
        self.ctx = ServiceContext(self.factory, self.keys, self.settings)
        traits = ChannelTraits(
            deletes_provider_copies=lambda name: name in self.channels and self.channels[name].deletes_provider_copies,
            replies_inline=lambda name: name not in self.channels or self.channels[name].replies_inline,
        )
        self.intake = Intake(self.ctx, traits, on_outbox=self.wake_dispatcher)
        self.media = MediaWorker(self.ctx, self.channels)
        self.alerts = AlertWorker(self.ctx, self.channels.get("sms"))  # the on-call SMS uses the Twilio account
        self.dispatcher = Dispatcher(
            self.ctx,
            self.channels,
            maintenance=self.maintain,
            background=self.background_work,
            media=self.media.run_once,
            alerts=self.alerts.run_once,
        )
        self._rotation_cursors: dict[int, object] = {}
        self._heartbeat: Heartbeat | None = None
        self._dispatching: list[tuple[threading.Thread, threading.Event]] = []  # start_dispatcher()'s
        self._metrics: metrics.MetricsServer | None = None
        self._next_reconcile = 0.0  # monotonic: the first dispatcher pass catches up after a restart
        self._next_sweep = 0.0  # monotonic: when reconciliation next sweeps our own copies too
        # Where outbox work is also announced: under `serve --workers N`, the worker that runs the
        # dispatcher, when it is not this process (tipline/web/server.py, Worker).
        self.wake_elsewhere: Callable[[], None] = lambda: None

    @property
    def sms(self) -> TwilioSms | None:
        channel = self.channels.get("sms")
        return channel if isinstance(channel, TwilioSms) else None

    def wake_dispatcher(self) -> None:
        self.dispatcher.wake()
        self.wake_elsewhere()

    def rotate_some(self) -> int:
        """One batch of each key rotation an administrator started from the console.

        Returns how much work remains to be done now (non-zero keeps the dispatcher from sleeping).
        """
        from tipline.services import rotation

        busy = 0
        for record in rotation.running(self.ctx):
            result = rotation.step(self.ctx, record.id, self._rotation_cursors.get(record.id))
            self._rotation_cursors[record.id] = result.cursor
            busy += 1 if result.moved else 0  # waiting out the propagation window lets the dispatcher rest
        return busy

    def background_work(self) -> int:
        """The dispatcher's background work: key rotations, and reconciliation of Twilio's log."""
        return self.rotate_some() + self.reconcile_due()

    def reconcile_due(self) -> int:
        """Every TIPLINE_TWILIO_RECONCILE_SECONDS, take in what the SMS webhook missed (services/reconcile.py);
        at most every SWEEP_EVERY, sweep our own copies left in Twilio's log too.

        Returns 0: what it takes in wakes the dispatcher through intake; it never keeps it busy."""
        seconds = self.settings.twilio_reconcile_seconds
        if not seconds or self.sms is None or time.monotonic() < self._next_reconcile:
            return 0
        self._next_reconcile = time.monotonic() + seconds
        from tipline.services import reconcile

        sweep = time.monotonic() >= self._next_sweep
        if sweep:
            self._next_sweep = time.monotonic() + reconcile.SWEEP_EVERY.total_seconds()
        reconcile.periodic(self.ctx, self.sms, self.intake, sweep=sweep)
        return 0

    def maintain(self) -> PurgeReport:
        alerts.prune(self.ctx)  # settled alerts older than 30 days
        return purge(
            self.intake,
            self.settings.retention_days,
            session_idle=dt.timedelta(minutes=self.settings.console_idle_minutes),
            session_lifetime=dt.timedelta(hours=self.settings.console_session_hours),
        )

    @cached_property
    def health_probe(self) -> health.Probe:
        return health.Probe(self.ctx)

    def health(self) -> health.Report:
        """What /healthz says: the database can be written, a dispatcher passes, the queues (services/health.py)."""
        return health.report(self.ctx, self.health_probe)

    def cookie_secret(self) -> str:
        """The key that signs console and sandbox cookies (TIPLINE_SECRET_KEY or the data directory's file)."""
        return secret_key(self.settings)

    def announce(self, kind: str, *, serve_metrics: bool = True) -> Heartbeat:
        """Record this long-running process (serve, dispatch, poll) until `close()`; `serve` also
        answers metrics on TIPLINE_METRICS_ADDRESS when set (services/metrics.py), unless `serve_metrics`
        is False (the workers of `serve --workers N` but the first: one address, one server)."""
        self._heartbeat = Heartbeat(self.ctx, kind, dispatched=lambda: self.dispatcher.passed_at).start()
        if kind == "serve" and serve_metrics and self.settings.metrics_address is not None:
            self._metrics = metrics.serve(self.settings.metrics_address, self.health)
        return self._heartbeat

    def start_dispatcher(self) -> tuple[threading.Thread, threading.Event]:
        stop = threading.Event()
        # Started counts as alive for /healthz (until SILENT passes without a pass), recorded now
        # rather than at the next heartbeat: a server is healthy as soon as it answers.
        self.dispatcher.passed_at = self.dispatcher.clock()
        thread = threading.Thread(target=self.dispatcher.run_forever, args=(stop,), name="dispatcher", daemon=True)
        thread.start()
        self._dispatching.append((thread, stop))  # stopped by close(), whoever else holds `stop`
        if self._heartbeat is not None:
            self._heartbeat.try_beat()
        return thread, stop

    def close(self) -> None:
        for _, stop in self._dispatching:
            stop.set()
        self.dispatcher.wake()
        for thread, _ in self._dispatching:
            thread.join(timeout=5.0)  # a pass under way finishes its row; one stuck on I/O is a daemon
        self._dispatching.clear()
        if self._heartbeat is not None:
            self._heartbeat.stop()
        if self._metrics is not None:
            self._metrics.stop()
        for channel in self.channels.values():
            close = getattr(channel, "close", None)
            if close is not None:
                close()
        self.engine.dispose()


def build_channels(settings: Settings) -> dict[str, Channel]:
    channels: dict[str, Channel] = {}
    if settings.twilio is not None:
        channels["sms"] = TwilioSms(
            settings.twilio,
            status_callback=settings.public_url + "/webhooks/twilio/status",
            reply_callback=settings.public_url + "/webhooks/twilio/reply-status",  # TwiML <Message action>
        )
    if settings.telegram is not None:
        from adapters.telegram import TelegramChannel

        channels["telegram"] = TelegramChannel(settings.telegram)
    if settings.sandbox:
        channels["sandbox"] = SandboxChannel()
    return channels


def unreachable_hint(settings: Settings) -> str:
    """What an operator checks when the database does not answer at start."""
    if settings.sqlite_path is None:
        return "check TIPLINE_DATABASE_URL"
    # The embedded database is a file: a full disk, a read-only mount or wrong ownership, not a URL.
    return f"check the free space and the permissions of {settings.sqlite_path.parent}"


def build_runtime(
    settings: Settings, channels: dict[str, Channel] | None = None, *, older_schema: bool = False
) -> Runtime:
    """Connect to an initialised database and load the keys; NotInitialised or KeyStoreError otherwise.

    `older_schema` lets a command that only copies the database (`tipline backup`, taken before an
    upgrade) run on a schema behind the code's; nothing else may, since the code reads what the
    migrations add."""
    logs.quiet_third_parties()
    if settings.sqlite_path is not None and not settings.sqlite_path.exists():
        raise NotInitialised(f"no database at {settings.sqlite_path}: run `tipline init`")
    engine = db.make_engine(settings.database_url)
    try:
        initialised = inspect(engine).has_table("key_versions")
        state = db.schema_state(engine) if initialised else None
        problem = state.problem() if state is not None and not (older_schema and state.known) else None
    except OperationalError as error:
        engine.dispose()
        raise DatabaseUnreachable(
            f"cannot reach the database: {db.error_line(error, settings.database_url)}; {unreachable_hint(settings)}"
        ) from None
    if not initialised:
        engine.dispose()
        raise NotInitialised("the database has no tipline schema: run `tipline init`")
    if problem is not None:
        engine.dispose()
        raise NotInitialised(problem)
    factory = db.make_sessionmaker(engine)
    try:
        from tipline.services.rotation import recover_master

        recover_master(settings, factory)
        keys = KeyStore(factory, load_master_key(settings), master_source=lambda: load_master_key(settings))
    except KeyStoreError:
        engine.dispose()
        raise
    return Runtime(settings, engine, factory, keys, build_channels(settings) if channels is None else channels)
