"""The `tipline` command: set up, serve, dispatch, manage accounts and keys, purge.

Settings come from the environment and a `.env` file in the working directory; a bad setting
stops the command with one line naming it.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, NoReturn

import click

from tipline import logs
from tipline.config import ConfigError, Settings, environment, load_settings
from tipline.core.alerting import AlertChoice
from tipline.core.vocabulary import Role

if TYPE_CHECKING:
    import datetime as dt

    from adapters.telegram import TelegramChannel
    from adapters.telegram_profile import WebhookStatus
    from tipline.runtime import Runtime


def _fail(message: str) -> NoReturn:
    click.echo(f"tipline: {message}", err=True)
    sys.exit(2)


def with_settings(command: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            settings = load_settings(environment())
        except ConfigError as error:
            _fail(str(error))
        logs.setup(settings.log_level)
        return command(settings, *args, **kwargs)

    return wrapper


def _runtime(settings: Settings):  # type: ignore[no-untyped-def]
    from tipline.runtime import NotInitialised, build_runtime
    from tipline.storage.keystore import KeyStoreError

    try:
        return build_runtime(settings)
    except (NotInitialised, KeyStoreError) as error:
        _fail(str(error))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
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
    from tipline.storage.keystore import KeyStoreError

    try:
        report = initialise(settings)
    except KeyStoreError as error:
        _fail(str(error))
    except OperationalError as error:
        _fail(f"cannot reach the database ({type(error.orig).__name__}): check TIPLINE_DATABASE_URL")
    click.echo(f"data directory: {settings.data_dir}")
    click.echo(f"schema: up to date ({settings.database_url.split('://', 1)[0]})")
    click.echo(f"keys: {'created ' + ', '.join(report.keys_created) if report.keys_created else 'present'}")
    if report.messages_resealed:
        click.echo(f"thread entries bound to their kind and author: {report.messages_resealed}")
    if report.messages_unreadable:
        click.echo(f"WARNING: {report.messages_unreadable} thread entries were altered and cannot be opened")
    if report.admin_password:
        click.echo(f"first admin account: {FIRST_ADMIN}")
        click.echo(f"one-time password: {report.admin_password}   (shown once; you set your own at first sign-in)")


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option("--threads", default=8, show_default=True, type=int, help="Worker threads of the WSGI server.")
@click.option("--no-dispatcher", is_flag=True, help="Do not send outbound messages from this process.")
@with_settings
def serve(settings: Settings, host: str, port: int, threads: int, no_dispatcher: bool) -> None:
    """Serve webhooks, sandbox and /healthz with a production WSGI server (waitress)."""
    import waitress

    from tipline.web.app import create_app
    from tipline.web.limits import server_limits
    from tipline.web.sandbox import exposure

    if problem := exposure(settings, host):
        _fail(problem)
    if settings.sandbox and settings.sandbox_public:
        click.echo(
            f"WARNING: TIPLINE_SANDBOX_PUBLIC=i-understand: the sandbox at {settings.public_url}/sandbox is open, "
            "and anyone who reaches it can post tips, urgent ones too, into the detectives' queue",
            err=True,
        )

    runtime = _runtime(settings)
    runtime.announce("serve")
    app = create_app(runtime)
    stop = None
    if not no_dispatcher:
        _, stop = runtime.start_dispatcher()
    channels = ", ".join(sorted(runtime.channels)) or "none (set TWILIO_* or TIPLINE_SANDBOX=1)"
    click.echo(f"tipline serving on http://{host}:{port}  channels: {channels}")
    if settings.sandbox:
        click.echo(f"sandbox: http://{host}:{port}/sandbox")
    try:
        waitress.serve(
            app,
            host=host,
            port=port,
            threads=threads,
            ident="tipline",
            clear_untrusted_proxy_headers=True,
            **server_limits(settings),  # no body over what a route accepts; none spooled to disk
        )
    finally:
        if stop is not None:
            stop.set()
        runtime.close()


@cli.command()
@click.option("--once", is_flag=True, help="Perform what is due now, then exit.")
@with_settings
def dispatch(settings: Settings, once: bool) -> None:
    """Run the outbound dispatcher alone (for several app servers on PostgreSQL)."""
    runtime = _runtime(settings)
    try:
        if once:
            runtime.maintain()
            count = runtime.dispatcher.run_until_idle()  # what is due, waiting out per-chat pacing
            click.echo(f"outbox rows attempted: {count}")
            return
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        runtime.announce("dispatch")
        click.echo(f"dispatching for channels: {', '.join(sorted(runtime.channels)) or 'none'}")
        try:
            runtime.dispatcher.run_forever(stop)
        except KeyboardInterrupt:
            pass
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

    Detective accounts are created, and their authenticator reset, only here (never in the
    console), so that no single console account can give itself access to tips.
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
@with_settings
def users_set(settings: Settings, username: str, email: str | None, choice: str | None) -> None:
    """Change an account's alert address or choice (audited)."""
    from tipline.services import alerts

    if email is None and choice is None:
        _fail("nothing to change: give --email and/or --alerts")
    runtime = _runtime(settings)
    try:
        now = alerts.set_preferences(runtime.ctx, username, email=email, choice=choice, actor=CLI_ACTOR)
    except alerts.PreferenceError as error:
        _fail(str(error))
    finally:
        runtime.close()
    where = "an email address" if now.email else "no email address"
    note = "" if now.detective else " (not a detective: no tip alerts)"
    click.echo(f"{now.username}: alerts {now.choice}, {where}{note}")


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
    deleted as for any message. `tipline serve` and `tipline dispatch` also run this every
    TIPLINE_TWILIO_RECONCILE_SECONDS. Prints counts only.
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
    click.echo(f"outbox rows attempted: {sent}" if send else "replies queued for the running dispatcher")
    if report.stale_mark:
        click.echo("note: the last reconciliation is older than the deduplication memory; older messages were not read")
    if report.failed:
        sys.exit(1)


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
