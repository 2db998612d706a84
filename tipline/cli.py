"""The `tipline` command: set up, serve, dispatch, manage accounts and keys, purge.

Settings come from the environment and a `.env` file in the working directory; a bad setting
stops the command with one line naming it.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from tipline import logs
from tipline.config import ConfigError, Settings, environment, load_settings
from tipline.core.alerting import AlertChoice
from tipline.core.vocabulary import Role

if TYPE_CHECKING:
    import datetime as dt
    import socket

    from adapters.telegram import TelegramChannel
    from adapters.telegram_profile import WebhookStatus
    from tipline.runtime import Runtime
    from tipline.setup import InitReport
    from tipline.web.server import StopSignals, Worker


# Exit statuses: 2, a refusal a person must act on (systemd's units do not restart on it:
# RestartPreventExitStatus=2); 75 (EX_TEMPFAIL), a database that could not be reached at start,
# which may come back by itself (the units try again).
REFUSED, TRY_AGAIN_LATER = 2, 75


def _fail(message: str, status: int = REFUSED) -> NoReturn:
    click.echo(f"tipline: {message}", err=True)
    sys.exit(status)


def with_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            settings = load_settings(environment())
            logs.setup(settings.log_level, settings.audit_log_format, settings.audit_log_file)
        except ConfigError as error:
            _fail(str(error))
        return command(settings, *args, **kwargs)

    return wrapper


def _runtime(settings: Settings, *, older_schema: bool = False):  # type: ignore[no-untyped-def]
    from tipline.runtime import DatabaseUnreachable, NotInitialised, build_runtime
    from tipline.storage.keystore import KeyStoreError

    try:
        return build_runtime(settings, older_schema=older_schema)
    except DatabaseUnreachable as error:
        _fail(str(error), TRY_AGAIN_LATER)
    except (NotInitialised, KeyStoreError) as error:
        _fail(str(error))


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """`tipline --version`: the release, and the schema revision it needs (what `init` upgrades to)."""
    if not value or ctx.resilient_parsing:
        return
    from importlib.metadata import version

    from tipline.storage.db import head_revision

    click.echo(f"tipline {version('tipline')} (schema {head_revision()})")
    ctx.exit()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and the database schema revision it needs, then exit.",
)
def cli() -> None:
    """tipline: an anonymous tip line (SMS, Telegram, sandbox) with an encrypted store.

    Settings are read from the environment and from ./.env (see .env.example).
    """


@cli.command()
@with_settings
def init(settings: Settings) -> None:
    """Create or upgrade the schema, the data directory, the keys and the first admin. Idempotent."""
    from sqlalchemy.exc import OperationalError

    from tipline.setup import FIRST_ADMIN, initialise
    from tipline.storage import db
    from tipline.storage.keystore import KeyStoreError, master_key_source

    try:
        report = initialise(settings)
    except (KeyStoreError, db.SchemaError) as error:
        _fail(str(error))
    except db.Unreachable as error:
        from tipline.runtime import unreachable_hint

        _fail(f"cannot reach the database: {error}; {unreachable_hint(settings)}", TRY_AGAIN_LATER)
    except OperationalError as error:  # reached, then failed: a full disk, a lock held too long...
        _fail(f"the upgrade stopped: {db.error_line(error, settings.database_url)}; fix it, run `tipline init` again")
    click.echo(f"data directory: {settings.data_dir}")
    click.echo(f"schema: {_schema_line(report)} ({settings.database_url.split('://', 1)[0]})")
    click.echo(f"keys: {'created ' + ', '.join(report.keys_created) if report.keys_created else 'present'}")
    click.echo(
        f"master key: {master_key_source(settings)} (keep a copy OFFLINE, apart from the database and its backups: "
        "without it nothing opens, not even a backup)"
    )
    if report.messages_resealed:
        click.echo(f"thread entries bound to their kind and author: {report.messages_resealed}")
    if report.messages_unreadable:
        click.echo(f"WARNING: {report.messages_unreadable} thread entries were altered and cannot be opened")
    if report.admin_password:
        click.echo(f"first admin account: {FIRST_ADMIN}")
        click.echo(f"one-time password: {report.admin_password}   (shown once; you set your own at first sign-in)")


def _schema_line(report: InitReport) -> str:
    """What `init` did to the schema: an operator upgrading wants to see the step it took."""
    if report.schema_before is None:
        return f"created at {report.schema}"
    if report.schema_before != report.schema:
        return f"upgraded from {report.schema_before} to {report.schema}"
    return f"{report.schema}, up to date"


NO_CHANNELS = "none (set TWILIO_*, TELEGRAM_BOT_TOKEN or TIPLINE_SANDBOX=1)"
STOP_HELP = "On SIGTERM or Ctrl-C, seconds to finish the work in flight before exiting anyway (below TimeoutStopSec)."
WORKERS_HELP = (
    "Processes serving the same port [default: the machine's cores; 1 with the sandbox, whose "
    "conversations live in one process's memory]. One of them runs the dispatcher."
)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--workers", default=None, type=click.IntRange(min=1), help=WORKERS_HELP)
@click.option("--threads", default=8, show_default=True, type=int, help="Threads of the WSGI server in each process.")
@click.option("--no-dispatcher", is_flag=True, help="Do not send outbound messages from this command's processes.")
@click.option("--stop-timeout", default=20.0, show_default=True, type=click.FloatRange(min=0), help=STOP_HELP)
@with_settings
def serve(
    settings: Settings,
    host: str,
    port: int,
    workers: int | None,
    threads: int,
    no_dispatcher: bool,
    stop_timeout: float,
) -> None:
    """Serve webhooks, console, sandbox and /healthz with a production WSGI server (waitress).

    With --workers N, N processes serve the same port; one of them runs the dispatcher. On SIGTERM
    (systemd's stop) or Ctrl-C, new connections are refused at once, the requests in flight are
    answered, the dispatcher finishes its pass, and the command exits 0.
    """
    from tipline.web import server
    from tipline.web.sandbox import exposure

    if problem := exposure(settings, host):
        _fail(problem)
    if workers is None:
        workers = 1 if settings.sandbox else server.default_workers()
    elif workers > 1 and settings.sandbox:
        _fail("the sandbox keeps its conversations in one process's memory: serve it with --workers 1")
    if settings.sandbox and settings.sandbox_public:
        click.echo(
            f"WARNING: TIPLINE_SANDBOX_PUBLIC=i-understand: the sandbox at {settings.public_url}/sandbox is open, "
            "and anyone who reaches it can post tips, urgent ones too, into the detectives' queue",
            err=True,
        )
    for warning in server.startup_warnings(settings):
        click.echo(f"WARNING: {warning}", err=True)
    try:
        sockets = server.bind(host, port)  # before anything starts: a busy port stops here, in one line
    except server.PortUnavailable as error:
        _fail(str(error))
    where = f"http://{f'[{host}]' if ':' in host else host}:{port}"  # an IPv6 address in brackets
    options = _Serving(settings, sockets, threads, not no_dispatcher, stop_timeout)
    if workers == 1:
        runtime = _runtime(settings)
        # keys and, on SQLite, the database: never the cwd's by accident
        click.echo(f"data directory: {settings.data_dir}")
        with server.StopSignals() as signals:
            options.serve(runtime, signals, lambda: _say_serving(settings, where, runtime.channels, ""))
        return
    # The database and the keys, checked once here, so that a refusal is one line and one status;
    # then closed: no engine, thread or connection may cross the fork (server.Supervisor).
    checked = _runtime(settings)
    channels = dict(checked.channels)
    checked.close()
    click.echo(f"data directory: {settings.data_dir}")
    supervisor = server.Supervisor(sockets, workers, options.worker, fatal=(REFUSED, TRY_AGAIN_LATER))
    sys.exit(supervisor.run(lambda: _say_serving(settings, where, channels, f"  workers: {workers}")))


def _say_serving(settings: Settings, where: str, channels: dict[str, Any], workers: str) -> None:
    click.echo(f"tipline serving on {where}  channels: {', '.join(sorted(channels)) or NO_CHANNELS}{workers}")
    if settings.sandbox:
        click.echo(f"sandbox: {where}/sandbox")


class _Serving:
    """What each serving process does, alone (`--workers 1`) or as one of the supervisor's workers."""

    def __init__(
        self, settings: Settings, sockets: list[socket.socket], threads: int, dispatcher: bool, stop_timeout: float
    ) -> None:
        self.settings = settings
        self.sockets = sockets
        self.threads = threads
        self.dispatcher = dispatcher
        self.stop_timeout = stop_timeout

    def serve(
        self, runtime: Runtime, signals: StopSignals, serving: Callable[[], None], worker: Worker | None = None
    ) -> None:
        """Serve until a signal, then stop gracefully; the runtime is closed on the way out."""
        from tipline.web import server
        from tipline.web.app import create_app

        leads = worker is None or worker.leads
        try:
            app = create_app(runtime)
            if worker is not None and not leads and self.dispatcher:
                _await_dispatcher(runtime, worker.signals)
            if worker is not None and not worker.begin_serving():
                return  # stopped before it started: nothing to finish
            http = server.Server(app, self.sockets, self.settings, threads=self.threads, grace=self.stop_timeout)
            runtime.announce("serve", serve_metrics=leads)
            background = None
            if self.dispatcher and leads:
                thread, stop = runtime.start_dispatcher()
                background = server.Background(thread, stop, runtime.wake_dispatcher)
            serving()
            _freeze_startup_objects()
            http.serve(signals, background)
        finally:
            runtime.close()

    def worker(self, worker: Worker) -> int:
        """One worker of `serve --workers N`: its own runtime, on the supervisor's sockets."""
        runtime = _runtime(self.settings)
        if self.dispatcher and worker.leads:
            worker.relay_wakeups(runtime.dispatcher.wake)
        elif self.dispatcher:
            runtime.wake_elsewhere = worker.wake_dispatcher
        self.serve(runtime, worker.signals, worker.serving, worker)
        return 0


def _freeze_startup_objects() -> None:
    """Leave what start-up made (modules, the app, the runtime: some 140,000 objects) out of the
    garbage collector's full passes from now on. Each full pass otherwise walked all of them,
    holding the GIL for 55-120 ms while every request of the process waited: under load on
    PostgreSQL such pauses were the p99 (bench/intake.py). Nothing is leaked: these objects live
    as long as the process."""
    gc.collect()
    gc.freeze()


def _await_dispatcher(runtime: Runtime, signals: StopSignals, limit: float = 20.0) -> None:
    """In a worker of `serve --workers N` other than the first: wait (at most `limit` seconds, or
    until a stop) for the first worker's dispatcher to be recorded in the database. Until then
    this worker's /healthz would say 503 "no dispatcher", and a load balancer probing the port
    from its first answer would take a server that is starting normally for a broken one."""
    from tipline.services import health

    deadline = time.monotonic() + limit
    while not signals.received and time.monotonic() < deadline:
        if health.dispatcher_passing(runtime.ctx):
            return
        time.sleep(0.05)


@cli.command()
@click.option("--once", is_flag=True, help="Perform what is due now, then exit.")
@click.option("--stop-timeout", default=20.0, show_default=True, type=click.FloatRange(min=0), help=STOP_HELP)
@with_settings
def dispatch(settings: Settings, once: bool, stop_timeout: float) -> None:
    """Run the outbound dispatcher alone (for several app servers on PostgreSQL).

    On SIGTERM (systemd's stop) or Ctrl-C it finishes the send under way, then exits 0.
    """
    from tipline.web import server

    runtime = _runtime(settings)
    try:
        if once:
            runtime.maintain()
            count = runtime.dispatcher.run_until_idle()  # what is due, waiting out per-chat pacing
            click.echo(f"outbox rows attempted: {count}")
            return
        with server.StopSignals() as signals:
            runtime.announce("dispatch")
            thread, stop = runtime.start_dispatcher()
            click.echo(f"data directory: {settings.data_dir}")
            click.echo(f"dispatching for channels: {', '.join(sorted(runtime.channels)) or 'none'}")
            server.run_until_stopped(signals, server.Background(thread, stop, runtime.wake_dispatcher), stop_timeout)
    finally:
        runtime.close()


@cli.command()
@with_settings
def purge(settings: Settings) -> None:
    """Apply retention now: submit idle drafts, erase expired return addresses, forget old ids."""
    runtime = _runtime(settings)
    try:
        for line in runtime.maintain().lines():
            click.echo(line)
    finally:
        runtime.close()


CLI_ACTOR = "cli"  # who the audit log says acted, for account actions from the command line
ALERT_CHOICES = [choice.value for choice in AlertChoice]
ALERTS_HELP = (
    "urgent (default: urgent tips), new (every new tip), mine (new messages on tips assigned to me) or none. "
    "Escalations of unopened urgent tips reach every choice but none."
)


@cli.group()
def users() -> None:
    """Manage console accounts.

    Detective accounts are created, the detective role granted, and a detective's password or
    authenticator reset, only here (never in the console), so that no single console account can
    give itself access to tips.
    """


@users.command("add")
@click.argument("username")
@click.option(
    "--role",
    "roles",
    type=click.Choice([role.value for role in Role]),
    required=True,
    multiple=True,
    help="detective (reads and answers tips) or admin (accounts, keys, audit); repeat for both.",
)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of generating one.")
@click.option("--email", default=None, help="Where this account's alerts go (content-free: reference and link only).")
@click.option("--alerts", "choice", type=click.Choice(ALERT_CHOICES), default=None, help=ALERTS_HELP)
@with_settings
def users_add(
    settings: Settings,
    username: str,
    roles: tuple[str, ...],
    password_stdin: bool,
    email: str | None,
    choice: str | None,
) -> None:
    """Create an account; prints a one-time password unless --password-stdin."""
    from tipline.services import accounts, alerts

    try:
        alerts.check_preferences(email, choice)  # before the account exists, so a typo leaves nothing half-made
    except alerts.PreferenceError as error:
        _fail(str(error))
    password = sys.stdin.readline().rstrip("\n") if password_stdin else accounts.generate_password()
    runtime = _runtime(settings)
    try:
        accounts.add_user(runtime.ctx, username, roles, password, must_change=not password_stdin, actor=CLI_ACTOR)
        if email is not None or choice is not None:
            alerts.set_preferences(runtime.ctx, username, email=email, choice=choice, actor=CLI_ACTOR)
    except (accounts.UserError, alerts.PreferenceError) as error:
        _fail(str(error))
    finally:
        runtime.close()
    click.echo(f"created {' and '.join(roles)} {username.strip().lower()}")
    if not password_stdin:
        click.echo(f"one-time password: {password}")


@users.command("set")
@click.argument("username")
@click.option("--email", default=None, help='Where alerts go; "" removes the address (no email alerts).')
@click.option("--alerts", "choice", type=click.Choice(ALERT_CHOICES), default=None, help=ALERTS_HELP)
@click.option(
    "--role",
    "roles",
    type=click.Choice([role.value for role in Role]),
    multiple=True,
    help="The account's roles from now on (replacing its roles; repeat for both). Its sessions end. "
    "Granting detective to an account without it also resets its password and authenticator.",
)
@with_settings
def users_set(settings: Settings, username: str, email: str | None, choice: str | None, roles: tuple[str, ...]) -> None:
    """Change an account's roles, alert address or alert choice (audited).

    Granting the detective role to an account that did not hold it renews its credentials at once:
    a new one-time password is printed (hand it to the person) and the authenticator is reset (they
    enrol again), so nobody who knew or reset them before, such as a console admin, reads tips."""
    from tipline.services import accounts, alerts

    if email is None and choice is None and not roles:
        _fail("nothing to change: give --role, --email and/or --alerts")
    try:
        alerts.check_preferences(email, choice)  # before the roles change, so a typo changes nothing
    except alerts.PreferenceError as error:
        _fail(str(error))
    runtime = _runtime(settings)
    try:
        if roles:
            change = accounts.set_roles(runtime.ctx, username, roles, actor=CLI_ACTOR)
            _say_roles(change.user.username, change.user.roles, change.one_time_password)
        if email is None and choice is None:
            return
        now = alerts.set_preferences(runtime.ctx, username, email=email, choice=choice, actor=CLI_ACTOR)
    except (accounts.UserError, alerts.PreferenceError) as error:
        _fail(str(error))
    finally:
        runtime.close()
    where = "an email address" if now.email else "no email address"
    note = "" if now.detective else " (not a detective: no tip alerts)"
    click.echo(f"{now.username}: alerts {now.choice}, {where}{note}")


def _say_roles(username: str, roles: str, one_time_password: str | None) -> None:
    """`users set`'s lines for a role change, and the renewed credentials if the role was detective."""
    click.echo(f"{username}: roles {roles.replace(' ', ', ')}; any session of theirs has ended")
    if one_time_password is not None:
        click.echo(
            f"{username} now holds detective: their password and authenticator were reset, so nobody who knew "
            f"them keeps access; one-time password: {one_time_password} (they enrol a new authenticator at "
            "next sign-in)"
        )


@users.command("list")
@with_settings
def users_list(settings: Settings) -> None:
    """List accounts with their role and state."""
    from tipline.services import accounts

    runtime = _runtime(settings)
    try:
        for user in accounts.list_users(runtime.ctx):
            state = "disabled" if user.disabled else "active"
            totp = "2fa enrolled" if user.totp_secret_ct else "2fa not enrolled"
            locked = "  locked" if user.locked_until else ""
            click.echo(f"{user.username:24} {user.roles.replace(' ', ','):16} {state:9} {totp}{locked}")
    finally:
        runtime.close()


def _account_action(settings: Settings, username: str, action: str, done: str) -> None:
    """Run one account action (audited by the accounts service), and say what happened."""
    from tipline.services import accounts
    from tipline.services.context import ServiceContext

    perform: Callable[[ServiceContext], None] = {
        "disable": lambda ctx: accounts.set_disabled(ctx, username, actor=CLI_ACTOR),
        "enable": lambda ctx: accounts.set_disabled(ctx, username, False, actor=CLI_ACTOR),
        "reset-2fa": lambda ctx: accounts.reset_2fa(ctx, username, actor=CLI_ACTOR),
        "unlock": lambda ctx: accounts.unlock(ctx, username, actor=CLI_ACTOR),
    }[action]
    runtime = _runtime(settings)
    try:
        perform(runtime.ctx)
    except accounts.UserError as error:
        _fail(str(error))
    finally:
        runtime.close()
    click.echo(f"{done} {username}")


@users.command("disable")
@click.argument("username")
@with_settings
def users_disable(settings: Settings, username: str) -> None:
    """Disable an account at once (its sessions end too)."""
    _account_action(settings, username, "disable", "disabled")


@users.command("enable")
@click.argument("username")
@with_settings
def users_enable(settings: Settings, username: str) -> None:
    """Enable a disabled account again; it signs in as before."""
    _account_action(settings, username, "enable", "enabled")


@users.command("reset-password")
@click.argument("username")
@click.option(
    "--password-stdin", is_flag=True, help="Read the new password from standard input instead of generating one."
)
@with_settings
def users_reset_password(settings: Settings, username: str, password_stdin: bool) -> None:
    """Give an account a new password; its sessions end at once and a lock from failed sign-ins is
    released. Prints a one-time password, which the person replaces at the next sign-in, unless
    --password-stdin. The authenticator stays (reset-2fa for a lost one)."""
    from tipline.services import accounts

    password = sys.stdin.readline().rstrip("\n") if password_stdin else accounts.generate_password()
    runtime = _runtime(settings)
    try:
        user = accounts.reset_password(runtime.ctx, username, password, must_change=not password_stdin, actor=CLI_ACTOR)
    except accounts.UserError as error:
        _fail(str(error))
    finally:
        runtime.close()
    click.echo(f"password reset for {user.username}; any session of theirs has ended")
    if not password_stdin:
        click.echo(f"one-time password: {password}")
    if user.disabled:
        click.echo(f"the account is disabled: tipline users enable {user.username}")


@users.command("reset-2fa")
@click.argument("username")
@with_settings
def users_reset_2fa(settings: Settings, username: str) -> None:
    """Forget an account's TOTP secret; it enrols again at next sign-in."""
    _account_action(settings, username, "reset-2fa", "2fa reset for")


@users.command("unlock")
@click.argument("username")
@with_settings
def users_unlock(settings: Settings, username: str) -> None:
    """Release an account locked after repeated failed sign-ins."""
    _account_action(settings, username, "unlock", "unlocked")


@cli.group()
def keys() -> None:
    """Inspect encryption keys."""


@keys.command("status")
@click.option(
    "--json", "as_json", is_flag=True, help="Print a JSON list of {purpose, version, primary, created_at, rows}."
)
@with_settings
def keys_status(settings: Settings, as_json: bool) -> None:
    """Every key purpose and version, which is primary, and how many rows each protects."""
    import json

    from tipline.services import rotation

    runtime = _runtime(settings)
    try:
        rows = rotation.status_rows(runtime.ctx)
        running = rotation.running(runtime.ctx)
    finally:
        runtime.close()
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        state = "primary" if row["primary"] else ("retired" if row["retired"] else "")
        click.echo(
            f"{row['purpose']:10} v{row['version']:<3} {state:8} "
            f"created {str(row['created_at'])[:10]}  rows {row['rows']}"
        )
    for r in running:
        click.echo(
            f"rotation of {r.purpose} to v{r.to_version} unfinished: {r.rows_done}/{r.rows_total} rows; "
            f"`tipline keys rotate --purpose {r.purpose}` resumes it"
        )


@keys.command("rotate")
@click.option(
    "--purpose",
    type=click.Choice(["tips", "contacts", "pseudonym", "accounts", "audit", "search", "all"]),
    default="all",
    show_default=True,
    help="Which key to rotate.",
)
@click.option(
    "--reencrypt",
    is_flag=True,
    help="Suspected compromise: fresh data keys, every field re-encrypted (tips, contacts).",
)
@with_settings
def keys_rotate(settings: Settings, purpose: str, reencrypt: bool) -> None:
    """Make a new key version primary and move every row to it, online and resumable.

    Safe to interrupt at any moment (Ctrl-C, kill -9, power loss): run the same command again and
    it resumes where it stopped. The tip line keeps working meanwhile.
    """
    from tipline.core.vocabulary import RotationStatus
    from tipline.services import rotation
    from tipline.storage.keystore import load_master_key

    runtime = _runtime(settings)
    purposes = list(rotation.ROTATABLE) if purpose == "all" else [purpose]
    if reencrypt and purpose == "all":
        purposes = ["tips", "contacts"]
    try:
        master = load_master_key(settings)
        for name in purposes:
            try:
                rotation_id = rotation.start(runtime.ctx, master, name, reencrypt=reencrypt, actor="cli")
            except rotation.RotationError as error:
                _fail(str(error))
            record = next(
                r for r in rotation.running(runtime.ctx) + rotation.recent(runtime.ctx) if r.id == rotation_id
            )
            verb = "re-encrypting" if record.reencrypt else "moving"
            label = f"{name}: {verb} to v{record.to_version}"
            with click.progressbar(
                length=max(record.rows_total - record.rows_done, 0),
                label=label,
                show_eta=True,
                show_pos=True,
                file=sys.stderr,
            ) as bar:
                rotation.run(runtime.ctx, rotation_id, progress=bar.update)
            done = next(r for r in rotation.recent(runtime.ctx, 50) if r.id == rotation_id)
            if done.status == RotationStatus.SUPERSEDED:
                # A `--reencrypt` started meanwhile (by another administrator or process) took over.
                _fail(
                    f"{name}: the move to v{done.to_version} was taken over by a re-encrypting rotation to a newer "
                    f"version before every row moved; it moves every row (`tipline keys status` shows it; if it "
                    f"was interrupted, `tipline keys rotate --purpose {name} --reencrypt` resumes it)"
                )
            extra = (
                f"; {done.unlinked} senders whose address was erased lost their link, by design"
                if name == "pseudonym"
                else ""
            )
            click.echo(f"{name}: v{done.to_version} is primary; {done.rows_done} rows moved{extra}")
    except KeyboardInterrupt:
        click.echo("\ninterrupted: every finished batch is committed; run the same command to resume", err=True)
        sys.exit(130)
    finally:
        runtime.close()


@keys.command("retire")
@click.option(
    "--purpose", required=True, type=click.Choice(["tips", "contacts", "pseudonym", "accounts", "audit", "search"])
)
@click.option("--version", "version", required=True, type=int)
@with_settings
def keys_retire(settings: Settings, purpose: str, version: int) -> None:
    """Destroy a key version; refused while any row still needs it."""
    from tipline.services import rotation

    runtime = _runtime(settings)
    try:
        rotation.retire(runtime.ctx, purpose, version, actor="cli")
    except rotation.RotationError as error:
        _fail(str(error))
    finally:
        runtime.close()
    click.echo(f"{purpose} v{version} retired: its key is destroyed")


@keys.command("rotate-master")
@with_settings
def keys_rotate_master(settings: Settings) -> None:
    """Re-wrap every key under a new master key, read from standard input (base64) or
    TIPLINE_NEW_MASTER_KEY. Afterwards the old master key opens nothing."""
    import base64
    import binascii

    from tipline.services import rotation
    from tipline.storage.keystore import load_master_key

    raw = os.environ.get("TIPLINE_NEW_MASTER_KEY", "").strip() or sys.stdin.readline().strip()
    try:
        new = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        _fail("the new master key must be base64 (e.g. `openssl rand -base64 32`)")
    if len(new) != 32:
        _fail("the new master key must decode to 32 bytes")
    runtime = _runtime(settings)
    try:
        count = rotation.rotate_master(runtime.ctx, load_master_key(settings), new, actor="cli")
    except rotation.RotationError as error:
        _fail(str(error))
    finally:
        runtime.close()
    click.echo(f"{count} keys re-wrapped under the new master key")
    if settings.master_key is not None:
        click.echo("now set TIPLINE_MASTER_KEY to the new key for every tipline process: the old one opens nothing")
    else:
        click.echo(f"{settings.data_dir / 'master.key'} now holds the new key; back it up offline")


@cli.group()
def telegram() -> None:
    """Connect the Telegram bot (see README: creating a bot with BotFather)."""


def _telegram_channel(runtime: Runtime) -> TelegramChannel:
    from adapters.telegram import TelegramChannel

    channel = runtime.channels.get("telegram")
    if not isinstance(channel, TelegramChannel):
        _fail("the Telegram channel is off: set TELEGRAM_BOT_TOKEN")
    return channel


@telegram.command("set-webhook")
@click.option("--drop-pending-updates", is_flag=True, help="Discard updates Telegram queued while no webhook was set.")
@with_settings
def telegram_set_webhook(settings: Settings, drop_pending_updates: bool) -> None:
    """Point the bot at TIPLINE_PUBLIC_URL/webhooks/telegram, with the secret token."""
    from adapters.telegram import ALLOWED_UPDATES
    from tipline.core.channels import ChannelError

    if settings.telegram is None or not settings.telegram.webhook_secret:
        _fail("TELEGRAM_WEBHOOK_SECRET is required for a webhook (or use `tipline telegram poll`)")
    if not settings.public_url.startswith("https://"):
        _fail("Telegram calls only HTTPS webhooks: set TIPLINE_PUBLIC_URL to your https:// address")
    url = settings.public_url + "/webhooks/telegram"
    runtime = _runtime(settings)
    try:
        channel = _telegram_channel(runtime)
        channel.set_webhook(url, drop_pending=drop_pending_updates)
        click.echo(f"webhook set: {url} (updates: {', '.join(ALLOWED_UPDATES)})")
        profiles = channel.set_profile(settings.agency_name)
    except ChannelError as error:
        _fail(f"Telegram refused the webhook or the bot's profile (error {error.code})")
    finally:
        runtime.close()
    languages = ", ".join(p.language_code or "default (en)" for p in profiles)
    commands = " ".join(f"/{name}" for name, _ in profiles[0].commands)
    click.echo(f"commands, description and short description set for: {languages}")
    click.echo(f"commands: {commands}")


@telegram.command("status")
@with_settings
def telegram_status(settings: Settings) -> None:
    """Show how Telegram says the webhook stands; exit 1 if it is missing or points elsewhere.

    For monitoring: the exit code is 0 only when Telegram delivers to
    TIPLINE_PUBLIC_URL/webhooks/telegram. A secret in the URL is never printed."""
    from tipline.core.channels import ChannelError

    expected = settings.public_url + "/webhooks/telegram"
    runtime = _runtime(settings)
    try:
        status = _telegram_channel(runtime).webhook_status()
    except ChannelError as error:
        _fail(f"Telegram refused getWebhookInfo (error {error.code})")
    finally:
        runtime.close()
    for line in _webhook_lines(status, runtime.ctx.now()):
        click.echo(line)
    if not status.url:
        click.echo(f"PROBLEM: no webhook is set; run `tipline telegram set-webhook` (expected {expected})")
        sys.exit(1)
    if status.url != expected:
        click.echo(f"PROBLEM: the webhook points elsewhere than {expected}")
        sys.exit(1)
    click.echo("ok: Telegram delivers to this tip line")


def _webhook_lines(status: WebhookStatus, now: dt.datetime) -> list[str]:
    """getWebhookInfo in plain words (the URL redacted, the last error's time to the minute)."""
    lines = [
        f"webhook: {status.shown_url or '(none)'}",
        f"pending updates: {status.pending_update_count}",
        f"max connections: {status.max_connections if status.max_connections is not None else '-'}",
        f"allowed updates: {', '.join(status.allowed_updates) if status.allowed_updates else 'Telegram default'}",
    ]
    if status.last_error_date is None and not status.last_error_message:
        lines.append("last delivery error: none")
        return lines
    when = "at an unknown time"
    if status.last_error_date is not None:
        minutes = max(0, int((now - status.last_error_date).total_seconds() // 60))
        ago = f"{minutes} minutes ago" if minutes < 120 else f"{minutes // 60} hours ago"
        when = f"{status.last_error_date:%Y-%m-%d %H:%M} UTC, about {ago}"
    message = (status.last_error_message or "(no message)")[:200]
    lines.append(f"last delivery error: {message} ({when})")
    return lines


@telegram.command("poll")
@click.option("--once", is_flag=True, help="Handle the updates waiting now, then exit.")
@with_settings
def telegram_poll(settings: Settings, once: bool) -> None:
    """Long-poll Telegram for updates (for a bot without a public URL); sends replies too."""
    from tipline.core.channels import ChannelError
    from webhooks.telegram import handle

    runtime = _runtime(settings)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        channel = _telegram_channel(runtime)
        channel.delete_webhook()
        if not once:
            runtime.announce("poll")
            threading.Thread(target=runtime.dispatcher.run_forever, args=(stop,), daemon=True).start()
            click.echo("polling Telegram for updates (Ctrl-C to stop)")
        offset = 0
        while not stop.is_set():
            polled = channel.poll_once(offset, timeout=0 if once else 30)
            for update_id, update in polled:
                handle(runtime.intake, update)
                channel.acknowledge(update)
                offset = update_id + 1  # acknowledged only once handled
            if once:
                if polled:
                    channel.confirm(offset)
                runtime.dispatcher.run_until_idle()  # waits out per-chat pacing
                click.echo(f"updates handled: {len(polled)}")
                break
    except ChannelError as error:
        _fail(f"Telegram refused a request (error {error.code})")
    except KeyboardInterrupt:
        pass
    finally:
        stop.set()
        runtime.close()


@cli.group()
def twilio() -> None:
    """Twilio (SMS): take in what the webhook missed.

    Twilio does not retry a webhook that failed or timed out (the tip line down, restarting, its
    database unreachable); the message stays in the account's Messages log. `reconcile` reads it.
    """


@twilio.command("reconcile")
@click.option(
    "--send/--no-send",
    default=None,
    help="Send the replies now, or only queue them. Default: send unless a `tipline serve` or `tipline dispatch` "
    "is running, whose dispatcher then sends them (one dispatcher keeps each tipster's replies in order).",
)
@with_settings
def twilio_reconcile(settings: Settings, send: bool | None) -> None:
    """Take in every inbound SMS in Twilio's Messages log that the tip line has not processed.

    Reads the log from the last reconciled point (with an overlap; at most a few days back, within
    the deduplication memory, so that nothing is ever taken in twice), oldest first, through the
    same intake as the webhook: a message already processed changes nothing, so running it again
    is harmless. Replies go out by Twilio's REST API, then photos are fetched and Twilio's copies
    deleted as for any message. Then queues the deletion of the copies of our own messages
    (replies) still in the log a day after they were sent, whose final delivery report never came.
    `tipline serve` and `tipline dispatch` also run this every TIPLINE_TWILIO_RECONCILE_SECONDS.
    Prints counts only.
    """
    from tipline.core.channels import ChannelError
    from tipline.services import processes, reconcile

    runtime = _runtime(settings)
    try:
        if runtime.sms is None:
            _fail("the SMS channel is off: set TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
        try:
            report = reconcile.reconcile(runtime.ctx, runtime.sms, runtime.intake)
        except ChannelError as error:
            _fail(f"Twilio refused to list messages (error {error.code})")
        except reconcile.DATABASE_DOWN as error:
            _fail(f"the database is unavailable ({type(error).__name__}); run this again once it is back")
        swept = reconcile.sweep_or_warn(runtime.ctx, runtime.sms)  # its failure is a note: the rest goes on
        if send is None:
            send = not any(p.kind in ("serve", "dispatch", "poll") for p in processes.running(runtime.ctx))
        sent = 0
        if send:
            while count := runtime.dispatcher.run_once():
                sent += count
    finally:
        runtime.close()
    click.echo(
        f"listed {report.listed}, taken in {report.taken_in}, already processed {report.already}, "
        f"unusable {report.unusable}, failed {report.failed}"
    )
    click.echo(
        f"copies of our messages past their delivery report queued for deletion: {swept}"
        if swept is not None
        else "note: our messages' copies could not be swept now (see the log); the next run tries again"
    )
    click.echo(f"outbox rows attempted: {sent}" if send else "replies queued for the running dispatcher")
    if report.stale_mark:
        click.echo("note: the last reconciliation is older than the deduplication memory; older messages were not read")
    if report.failed:
        sys.exit(1)


RESTORE_HELP = """Bring the backup FILE into an EMPTY installation that has the same master key.

\b
Empty means: the database (for PostgreSQL, the schema first on the search path) holds no
tipline keys, accounts, senders, tips or audit entries: it has no tables, or only tables a
migration or a failed restore left without those rows. An installation where `tipline init` ran
is NOT empty (it holds keys and an admin): start from a new database (PostgreSQL: `createdb`)
or, for SQLite, a new TIPLINE_DATA_DIR, and do not run `tipline init` before restoring.

\b
The master key (TIPLINE_MASTER_KEY or <data dir>/master.key) must be the one the backup was taken
under, put back from its offline copy: it is checked before anything is written, and so is the
backup's authentication (an altered backup, or one made under another master key, is refused).
The schema is built at the backup's revision, the rows are copied, and the schema is upgraded to
this release. Console sessions are not restored: everyone signs in again; the accounts restored
are listed. A backup may come from SQLite or PostgreSQL and go to either."""


@cli.command("backup")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--force", is_flag=True, help="Replace FILE if it exists.")
@with_settings
def backup_command(settings: Settings, file: Path, force: bool) -> None:
    """Write a consistent copy of the database to FILE while the tip line keeps running.

    FILE is one SQLite file (0600), written whole or not at all, whatever the database. It holds
    ciphertext and wrapped keys only, never the master key: keep the master key's offline copy
    apart from the backups. Restore it with `tipline restore FILE`.
    """
    from tipline.services import backup as backups

    try:
        backups.check_target(file, force=force)
    except backups.BackupError as error:
        _fail(str(error))
    runtime = _runtime(settings, older_schema=True)  # a backup before an upgrade, on the old schema
    try:
        info = backups.create(runtime.ctx, file, force=force, actor=CLI_ACTOR)
    except backups.BackupError as error:
        _fail(str(error))
    except backups.FAILURES as error:  # the backup is written; recording it in the audit log failed
        _fail(f"backup written to {file}, but not recorded in the audit log ({backups.cause(error)})")
    finally:
        runtime.close()
    click.echo(f"backup written: {file}")
    click.echo(f"tips: {info.tips}, schema: {info.revision}, size: {_size(info.size)}, from {info.source}")
    click.echo("it holds no master key: keep the master key's offline copy, apart from the backups")


@cli.command("restore", help=RESTORE_HELP)
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@with_settings
def restore_command(settings: Settings, file: Path) -> None:
    from tipline.services import backup as backups
    from tipline.setup import initialise

    try:
        report = backups.restore(settings, file, actor=CLI_ACTOR)
        init = initialise(settings)  # the data upgrades of `tipline init`, and the cookie key if this machine has none
    except backups.BackupError as error:
        _fail(str(error))
    except backups.FAILURES as error:
        _fail(
            f"restore failed ({backups.cause(error)}); once the cause is fixed run it again "
            "(an empty schema it may have left counts as empty)"
        )
    click.echo(f"restored {file}: {report.tips} tips, {report.rows} rows")
    upgraded = f", upgraded to {report.head}" if report.head != report.revision else ""
    click.echo(f"schema: {report.revision}{upgraded}")
    click.echo("console sessions were not restored: everyone signs in again")
    click.echo(f"accounts restored (who can sign in): {len(report.accounts)}")
    for account in report.accounts:
        totp = "2fa enrolled" if account.enrolled else "2fa not enrolled"
        disabled = " (disabled)" if account.disabled else ""
        click.echo(f"  {account.username:24} {account.roles.replace(' ', ','):16} {totp}{disabled}")
    if init.admin_password:  # a backup without any account: the first admin, as `tipline init` makes it
        click.echo(f"one-time password of the new admin account: {init.admin_password}")


def _size(size: int) -> str:
    if size < 1024:
        return f"{size} bytes"
    scaled = size / 1024
    for unit in ("kB", "MB"):
        if scaled < 1024:
            return f"{scaled:.1f} {unit}"
        scaled /= 1024
    return f"{scaled:.1f} GB"


@cli.group("audit")
def audit_group() -> None:
    """Inspect the audit log."""


@audit_group.command("verify")
@with_settings
def audit_verify(settings: Settings) -> None:
    """Recompute the audit log's hash chain; exit 1 if any entry was altered or removed."""
    from tipline.services import audit

    runtime = _runtime(settings)
    try:
        result = audit.verify(runtime.ctx)
        audit.log_event(runtime.ctx, "audit.verify", outcome="ok" if result.intact else "tampered")
    finally:
        runtime.close()
    if result.intact:
        click.echo(f"audit log intact: {result.entries} entries verified")
        return
    click.echo(f"audit log TAMPERED: {result.reason}", err=True)
    sys.exit(1)


@audit_group.command("search-token")
@click.argument("words", nargs=-1, required=True)
@with_settings
def audit_search_token(settings: Settings, words: tuple[str, ...]) -> None:
    """Print how `tips.search` audit entries record WORDS (their blind tokens), so that an auditor can
    look for searches of a suspected name without the log holding any search in clear. The lookup
    itself is audited."""
    from tipline.services import audit, search

    runtime = _runtime(settings)
    try:
        tokens = search.query_tokens(runtime.ctx.keyring, " ".join(words))
        audit.log_event(runtime.ctx, "audit.search_token", detail={"words": len(words)})
    finally:
        runtime.close()
    click.echo(tokens)


def main() -> None:
    os.umask(0o077)  # keys, database and logs we create are readable by this account only
    cli(prog_name="tipline")


if __name__ == "__main__":
    main()
