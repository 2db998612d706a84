"""The deployment kit (deploy/) as an agency's IT person meets it: systemd units that systemd accepts
and that confine the service, the tip line behind Caddy over HTTPS, and README's "Deploy on a Debian
server" followed line by line on this machine."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyotp
import pytest
import requests
from dotenv import dotenv_values

from tests.support import caddy
from tests.support.console import CSRF, SECRET
from tests.support.fake_twilio import FakeTwilio
from tests.support.harness import ACCOUNT_SID, AUTH_TOKEN, LINE_NUMBER, REPLY, inbound_form, new_sid, sign
from tests.support.processes import free_port, run, spawn, workdir
from tipline.config import load_settings
from tipline.services.auth import TOTP_PERIOD

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNITS = ("tipline-serve.service", "tipline-dispatch.service")
PASSWORD = "a long enough passphrase"

# What the issue asks of both units, and what else confines a Python service safely.
HARDENING = {
    "User": "tipline",
    "Group": "tipline",
    "StateDirectory": "tipline",
    "StateDirectoryMode": "0700",
    "WorkingDirectory": "/var/lib/tipline",
    "UMask": "0077",
    "EnvironmentFile": "/etc/tipline/tipline.env",
    "NoNewPrivileges": "yes",
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "PrivateDevices": "yes",
    "CapabilityBoundingSet": "",
    "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
    "ProtectKernelTunables": "yes",
    "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes",
    "ProtectControlGroups": "yes",
    "LockPersonality": "yes",
    "RestrictSUIDSGID": "yes",
    "KillSignal": "SIGTERM",
    "KillMode": "mixed",  # SIGTERM to tipline only: the photo cleaner's child finishes its photo
    "Restart": "on-failure",  # a crash, or 75: the database could not be reached at start
    "RestartPreventExitStatus": "2",  # a refusal a person must act on: restarting cannot help
}


def directives(path: Path) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, all values of a key in order (sections do not overlap here)."""
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


# --- (a) the units, as systemd reads them ------------------------------------------------------


@pytest.fixture
def offline_root(tmp_path: Path) -> Path:
    """A directory systemd-analyze can take as the machine (`--root`): the system's own units (for
    the targets ours name), ours in /etc/systemd/system, and an executable at ExecStart's path.

    systemd is not PID 1 here, so nothing is loaded into a running manager: `verify` parses each
    unit and its dependencies, checks every setting's syntax and that ExecStart is an executable
    file under the root. It does not look up User= (systemd resolves it when it starts the unit):
    the README test below creates the user and runs the units as it.
    """
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    for unit in UNITS:
        shutil.copy(DEPLOY / unit, root / "etc/systemd/system" / unit)
    command = root / "opt/tipline/bin/tipline"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    return root


def analyze(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", f"--root={root}", *args], capture_output=True, text=True, timeout=60, check=False
    )


needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed (Debian's systemd package)"
)


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_accepts_the_unit_without_a_word(offline_root: Path, unit: str) -> None:
    # systemd-analyze exits 0 after "Unknown key ..., ignoring" or "Failed to parse ..., ignoring":
    # a unit is accepted only when it also says nothing at all.
    result = analyze(offline_root, "verify", str(offline_root / "etc/systemd/system" / unit))
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@needs_systemd_analyze
def test_the_verification_catches_a_mistake(offline_root: Path) -> None:
    unit = offline_root / "etc/systemd/system" / UNITS[0]
    unit.write_text(unit.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictly"))
    result = analyze(offline_root, "verify", str(unit))
    assert "ignoring: strictly" in result.stderr
    (offline_root / "opt/tipline/bin/tipline").unlink()
    assert analyze(offline_root, "verify", str(offline_root / "etc/systemd/system" / UNITS[1])).returncode != 0


@needs_systemd_analyze
@pytest.mark.parametrize("unit", UNITS)
def test_systemd_rates_the_unit_well_confined(offline_root: Path, unit: str) -> None:
    # The threshold is on systemd's 0-100 scale: 20 is an exposure of 2.0 ("OK"; 10 is "fully confined").
    unit_path = str(offline_root / "etc/systemd/system" / unit)
    result = analyze(offline_root, "security", "--offline=true", "--threshold=20", unit_path)
    assert result.returncode == 0, result.stdout[-600:]
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+) OK", result.stdout)
    assert exposure is not None, result.stdout[-600:]


@pytest.mark.parametrize("unit", UNITS)
def test_the_unit_holds_the_hardening_and_names_its_data_directory(unit: str) -> None:
    found = directives(DEPLOY / unit)
    for key, value in HARDENING.items():
        assert value in found.get(key, []), f"{unit}: {key}={value} missing"
    assert "TIPLINE_DATA_DIR=/var/lib/tipline" in found["Environment"]
    assert "@system-service" in found["SystemCallFilter"]
    assert 20 <= int(found["TimeoutStopSec"][0]) <= 60  # room to finish the requests in flight
    assert "MemoryDenyWriteExecute" not in found  # cffi needs writable executable memory
    assert found["ExecStart"][0].startswith("/opt/tipline/bin/tipline ")


def test_serve_takes_its_options_from_the_env_file_and_dispatch_runs_alone() -> None:
    serve = directives(DEPLOY / "tipline-serve.service")
    dispatch = directives(DEPLOY / "tipline-dispatch.service")
    assert serve["ExecStart"] == ["/opt/tipline/bin/tipline serve --host 127.0.0.1 --port 8000 $TIPLINE_SERVE_OPTIONS"]
    assert dispatch["ExecStart"] == ["/opt/tipline/bin/tipline dispatch"]
    example = directives(DEPLOY / "tipline.env.example")
    assert example["TIPLINE_SERVE_OPTIONS"] == [""]
    assert example["TIPLINE_TRUSTED_PROXY"] == ["127.0.0.1"]
    assert example["TIPLINE_PUBLIC_URL"][0].startswith("https://")
    assert example["TIPLINE_SANDBOX"] == ["0"]
    assert "TIPLINE_DATA_DIR" not in example  # the units set it; the env file would override them


# --- (b) behind Caddy over HTTPS ---------------------------------------------------------------

needs_caddy = pytest.mark.skipif(caddy.available() is not None, reason=str(caddy.available()))


def set_cookies(response: requests.Response) -> list[str]:
    """Every Set-Cookie header of one response, as sent (not merged)."""
    return list(response.raw.headers.getlist("Set-Cookie"))


class Browser:
    """A person at a browser that trusts Caddy's internal CA, recording every Set-Cookie it gets."""

    def __init__(self, base: str, certificate: Path):
        self.base = base
        self.session = requests.Session()
        # Per request: a session's `verify` loses to REQUESTS_CA_BUNDLE in the environment.
        self.verify = str(certificate)
        self.cookies_seen: list[str] = []

    def get(self, path: str) -> requests.Response:
        response = self.session.get(self.base + path, allow_redirects=False, timeout=10, verify=self.verify)
        self.cookies_seen += set_cookies(response)
        return response

    def post(self, path: str, form: dict[str, str], headers: dict[str, str] | None = None) -> requests.Response:
        response = self.session.post(
            self.base + path, data=form, headers=headers, allow_redirects=False, timeout=10, verify=self.verify
        )
        self.cookies_seen += set_cookies(response)
        return response

    def csrf(self, path: str) -> str:
        match = CSRF.search(self.get(path).text)
        assert match, f"no CSRF token on {path}"
        return match.group(1)

    def sign_in(self, username: str, password: str) -> str:
        """Sign in through the console's pages (enrolling TOTP, choosing a new password if asked);
        the path of the page it lands on."""
        form = {"csrf_token": self.csrf("/console/login"), "username": username, "password": password}
        answer = self.post("/console/login", {**form, "code": "", "ack": "1"})
        assert answer.status_code == 302, answer.status_code
        location = answer.headers["Location"]
        if location.endswith("/console/enrol"):
            secret = SECRET.search(self.get("/console/enrol").text)
            assert secret, "no TOTP secret on the enrolment page"
            code = pyotp.TOTP(secret.group(1)).at(int(time.time() // TOTP_PERIOD) * TOTP_PERIOD)
            answer = self.post("/console/enrol", {"csrf_token": self.csrf("/console/enrol"), "code": code})
            location = answer.headers["Location"]
        if location.endswith("/console/password"):
            new = password + " renewed"
            form = {"csrf_token": self.csrf("/console/password"), "new_password": new, "new_password_again": new}
            location = self.post("/console/password", form).headers["Location"]
        return location


def check_through_the_proxy(
    base: str, certificate: Path, public_url: str, auth_token: str, username: str, password: str
) -> None:
    """What must work through Caddy: health, a signed Twilio webhook (and not a forged one), a
    console sign-in, and cookies that only ever travel over https and never to scripts."""
    browser = Browser(base, certificate)
    # /healthz's backlog moves with each tipster's message: for this machine, never the internet
    assert browser.get("/healthz").status_code == 404
    assert browser.get("/metrics").status_code == 404

    path = "/webhooks/twilio/sms"
    form = inbound_form("A man sells stolen bikes behind the library", sid=new_sid())
    signed = {"X-Twilio-Signature": sign(path, form, token=auth_token, base=public_url)}
    answer = browser.post(path, form, signed)
    assert answer.status_code == 200, answer.text
    assert answer.headers["Content-Type"].startswith(("text/xml", "application/xml"))
    assert REPLY.search(answer.text), answer.text
    forged = {"X-Twilio-Signature": sign(path, {**form, "Body": "altered"}, token=auth_token, base=public_url)}
    assert browser.post(path, {**form, "MessageSid": new_sid()}, forged).status_code == 403

    landing = browser.sign_in(username, password)
    assert landing.endswith(("/console/", "/console/admin/users")), landing
    assert browser.get(landing.removeprefix(base)).status_code == 200
    assert browser.get("/sandbox").status_code == 404  # never through the proxy

    # Every Set-Cookie, the ones that delete a cookie too: an audit's scanner flags each one.
    assert browser.cookies_seen, "the console set no cookie"
    unsafe = [cookie for cookie in browser.cookies_seen if not {"secure", "httponly"} <= attributes(cookie)]
    assert unsafe == []


def attributes(cookie: str) -> set[str]:
    """The attribute names of a Set-Cookie header (`Secure`, `HttpOnly`, `Path`...), lower case."""
    return {part.split("=", 1)[0].strip().lower() for part in cookie.split(";")[1:]}


@needs_caddy
def test_behind_caddy_over_https_webhooks_sign_in_and_secure_cookies(env: dict[str, str], tmp_path: Path) -> None:
    # Given the tip line initialised with its public address on https, as in production
    https_port, port = free_port(), free_port()
    public_url = f"https://localhost:{https_port}"
    settings = {**env, "TIPLINE_PUBLIC_URL": public_url, "TIPLINE_SANDBOX": "0", "TIPLINE_TRUSTED_PROXY": "127.0.0.1"}
    assert run(settings, "init").returncode == 0
    added = run(settings, "users", "add", "dana", "--role", "detective", "--password-stdin", stdin=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    with (workdir(settings) / "serve.log").open("w") as out:
        server = spawn(settings, "serve", "--port", str(port), output=out)
    try:
        wait_for_health(f"http://127.0.0.1:{port}/healthz")
        # When Caddy terminates TLS in front of it, with deploy/Caddyfile
        with caddy.running(port, https_port, tmp_path / "caddy") as proxy:
            # Then everything works through https only
            check_through_the_proxy(
                proxy.base, proxy.certificate, public_url, env["TWILIO_AUTH_TOKEN"], "dana", PASSWORD
            )
    finally:
        server.terminate()
        server.wait(timeout=40)


@needs_caddy
def test_caddy_logs_nothing_of_a_webhook_while_the_tip_line_is_down(tmp_path: Path) -> None:
    # Given Caddy with deploy/Caddyfile, and tipline stopped (a restart, an upgrade)
    secret, signature = "TG-SECRET-" + new_sid(), "TW-SIGNATURE-" + new_sid()
    with caddy.running(free_port(), free_port(), tmp_path / "caddy") as proxy:
        # When Telegram and Twilio call their webhooks
        for path, headers in (
            ("/webhooks/telegram", {"X-Telegram-Bot-Api-Secret-Token": secret}),
            ("/webhooks/twilio/sms", {"X-Twilio-Signature": signature}),
        ):
            answer = requests.post(
                proxy.base + path, data="{}", headers=headers, timeout=10, verify=str(proxy.certificate)
            )
            assert answer.status_code == 502
        time.sleep(0.5)
    # Then Caddy's log (journald, in production) holds no trace of them: no secret, path or header
    log = proxy.log.read_text()
    assert "certificate" in log  # Caddy did log its own events
    for trace in (secret, signature, "/webhooks", "headers", "X-Forwarded", "http.log.error"):
        assert trace not in log, f"Caddy logged {trace}"


def wait_for_health(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if requests.get(url, timeout=2).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {seconds} s")


@pytest.mark.skipif(os.geteuid() != 0, reason="/usr/local/sbin/tipline runs as root only")
@pytest.mark.parametrize(
    "args,says",
    [
        (("backup", "nightly.db"), "backup needs its FILE as an absolute path the user tipline can reach"),
        (("restore", "backup.db"), "e.g. /var/backups/tipline/backup.db"),
        (("backup", "--force", "/var/lib/tipline/nightly.db"), "must not be in /var/lib/tipline, beside master.key"),
    ],
)
def test_the_admin_command_refuses_a_backup_file_it_would_put_in_the_wrong_place(
    tmp_path: Path, args: tuple[str, ...], says: str
) -> None:
    # The wrapper runs tipline in /var/lib/tipline: a relative FILE would land beside master.key
    # (backup) or not be found (restore). It refuses before it becomes the user tipline.
    result = subprocess.run(
        ["sh", str(DEPLOY / "tipline"), *args], cwd=tmp_path, capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.startswith("tipline: ") and says in result.stderr, result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_the_env_example_is_a_valid_configuration_once_copied() -> None:
    example = {k: v or "" for k, v in dotenv_values(DEPLOY / "tipline.env.example").items()}
    settings = load_settings({**example, "TIPLINE_DATA_DIR": "/var/lib/tipline"})
    assert settings.public_url == "https://tips.police.example"
    assert settings.agency_name == "Example City Police"  # quoted values: sh, systemd and dotenv agree
    assert not settings.sandbox


# --- (c) README's "Deploy on a Debian server", followed on this machine ------------------------
#
# systemd is not PID 1 here, so `systemctl` and `journalctl` are stand-ins that do what systemd
# would with the unit files the README installed (run as `python tests/test_deploy.py systemctl
# ...`): ExecStart as the unit's User and Group, with its EnvironmentFile over its Environment, its
# StateDirectory created under /var/lib with its mode and owner, its WorkingDirectory and UMask;
# KillSignal (to the main process alone with KillMode=mixed) and TimeoutStopSec to stop. The
# hardening directives (namespaces, seccomp) are not applied: systemd-analyze checks them above.

UNIT_DIRS = (Path("/etc/systemd/system"), Path("/usr/lib/systemd/system"), Path("/lib/systemd/system"))
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def unit_file(name: str) -> Path:
    name = name if "." in name else name + ".service"
    for directory in UNIT_DIRS:
        if (directory / name).exists():
            return directory / name
    raise SystemExit(f"Unit {name} not found.")


def unit_name(name: str) -> str:
    return name.removesuffix(".service")


def environment_file(path: str) -> dict[str, str]:
    """KEY=value lines as systemd reads them (quotes removed; `-` before the path: optional)."""
    optional, path = path.startswith("-"), path.lstrip("-")
    if optional and not Path(path).exists():
        return {}
    return {k: v or "" for k, v in dotenv_values(path, interpolate=False).items()}


def expand(command: str, env: dict[str, str]) -> list[str]:
    """ExecStart= as systemd expands it: `$NAME` splits into words, `${NAME}` stays one word."""
    words: list[str] = []
    for word in shlex.split(command.lstrip("@-:+!")):
        if re.fullmatch(r"\$[A-Za-z_][A-Za-z0-9_]*", word):
            words += env.get(word[1:], "").split()
        else:
            words.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return words


def service_environment(found: dict[str, list[str]], user: pwd.struct_passwd) -> dict[str, str]:
    env = {"PATH": SYSTEM_PATH, "LANG": "C.UTF-8", "HOME": user.pw_dir, "USER": user.pw_name, "LOGNAME": user.pw_name}
    for assignments in found.get("Environment", []):
        env.update(word.partition("=")[::2] for word in shlex.split(assignments))
    for path in found.get("EnvironmentFile", []):
        env.update(environment_file(path))
    for name in found.get("StateDirectory", []):
        env["STATE_DIRECTORY"] = f"/var/lib/{name}"
    return env


def state_directories(found: dict[str, list[str]], user: pwd.struct_passwd) -> None:
    mode = int(found.get("StateDirectoryMode", ["0755"])[-1], 8)
    for name in found.get("StateDirectory", []):
        path = Path("/var/lib") / name
        path.mkdir(mode=mode, exist_ok=True)
        os.chown(path, user.pw_uid, user.pw_gid)
        path.chmod(mode)


def standin_state() -> Path:
    """Where the stand-ins keep each unit's main process id and output."""
    return Path(os.environ.get("TIPLINE_STANDIN_STATE", "/run/tipline-standin"))


def main_pid(name: str) -> int | None:
    """The unit's process if it still runs (a zombie does not)."""
    try:
        pid = int((standin_state() / f"{name}.pid").read_text())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ValueError):
        return None
    return None if state in ("Z", "X") else pid


def start(name: str) -> None:
    if main_pid(unit_name(name)):
        return
    found = directives(unit_file(name))
    user = pwd.getpwnam(found.get("User", ["root"])[-1])
    group = grp.getgrnam(found.get("Group", [user.pw_name])[-1])
    state_directories(found, user)
    env = service_environment(found, user)
    umask = int(found.get("UMask", ["0022"])[-1], 8)
    caps = ",".join(
        "+" + cap.lower().removeprefix("cap_") for cap in " ".join(found.get("AmbientCapabilities", [])).split()
    )
    as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={group.gr_gid}", "--init-groups"]
    if caps:
        as_user += [f"--inh-caps={caps}", f"--ambient-caps={caps}"]
    standin_state().mkdir(parents=True, exist_ok=True)
    with (standin_state() / f"{unit_name(name)}.log").open("a") as log:
        process = subprocess.Popen(
            [*as_user, *expand(found["ExecStart"][-1], env)],
            env=env,
            cwd=found.get("WorkingDirectory", ["/"])[-1].lstrip("-"),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: os.umask(umask),  # noqa: PLW1509 (no threads in the stand-in)
        )
    (standin_state() / f"{unit_name(name)}.pid").write_text(str(process.pid))


def stop(name: str) -> None:
    pid = main_pid(unit_name(name))
    if pid is None:
        return
    found = directives(unit_file(name))
    timeout = float(found.get("TimeoutStopSec", ["90"])[-1].removesuffix("s"))
    kill = os.kill if found.get("KillMode", ["control-group"])[-1] == "mixed" else os.killpg
    kill(pid, getattr(signal, found.get("KillSignal", ["SIGTERM"])[-1]))
    deadline = time.monotonic() + timeout
    while main_pid(unit_name(name)) and time.monotonic() < deadline:
        time.sleep(0.1)
    if main_pid(unit_name(name)) or kill is os.kill:  # KillMode=mixed: SIGKILL to what is left
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def status(name: str) -> int:
    pid = main_pid(unit_name(name))
    description = directives(unit_file(name)).get("Description", [name])[-1]
    print(f"* {unit_name(name)}.service - {description}")
    print(f"     Active: {'active (running)' if pid else 'inactive (dead)'}" + (f"\n   Main PID: {pid}" if pid else ""))
    return 0 if pid else 3


def systemctl(args: list[str]) -> int:
    """The verbs README's section uses, on the units it names."""
    verb, units = args[0], [arg for arg in args[1:] if not arg.startswith("-")]
    if verb == "daemon-reload":
        return 0
    if verb == "is-active":
        active = all(main_pid(unit_name(unit)) for unit in units)
        print("active" if active else "inactive")
        return 0 if active else 3
    if verb == "status":
        return max(status(unit) for unit in units)
    for unit in units:
        unit_file(unit)  # an unknown unit fails as systemctl does
        if verb in ("stop", "restart"):
            stop(unit)
        if verb in ("start", "restart") or (verb == "enable" and "--now" in args):
            start(unit)
        if verb == "reload":
            reload = directives(unit_file(unit)).get("ExecReload")
            if not reload or not main_pid(unit_name(unit)):
                print(f"Failed to reload {unit}", file=sys.stderr)
                return 1
            subprocess.run(expand(reload[-1], {}), check=True)
        if verb not in ("stop", "restart", "start", "enable", "reload"):
            print(f"stand-in systemctl: {verb} is not implemented", file=sys.stderr)
            return 1
    return 0


def journalctl(args: list[str]) -> int:
    """`journalctl -u UNIT [-n N]`: the unit's output, as the stand-in captured it."""
    unit = unit_name(args[args.index("-u") + 1])
    lines = int(args[args.index("-n") + 1]) if "-n" in args else 10_000
    log = standin_state() / f"{unit}.log"
    print("".join(log.read_text().splitlines(keepends=True)[-lines:]) if log.exists() else "-- No entries --")
    return 0


SECTION = "## Deploy on a Debian server"
CREATED = (
    Path("/opt/tipline"),
    Path("/etc/tipline"),
    Path("/var/lib/tipline"),
    Path("/usr/local/sbin/tipline"),
    Path("/etc/systemd/system/tipline-serve.service"),
    Path("/var/backups/tipline"),  # the backup "Upgrading" takes first
)
CADDY_HOME = Path("/var/lib/caddy")
# What a checkout holds that a release does not (.gitignore's, and the tools' caches).
NOT_RELEASED = (".git", ".venv", "var", ".env", "build", "*.egg-info", "__pycache__", ".*_cache")


def readme_commands() -> list[str]:
    """The ```sh blocks of README's deploy section (its subsections included), in order."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n" + SECTION + "\n")
    end = readme.index("\n## ", start + 1)
    return re.findall(r"```sh\n(.*?)```", readme[start:end], re.S)


def source_copy(destination: Path, twilio_url: str, https_port: int) -> Path:
    """This checkout's files as a release would hold them, with the two edits a test must make:
    the Twilio settings an operator types into the env file (here the stand-in Twilio's), and Caddy
    on its internal CA and away from this machine's trust store and well-known ports."""
    shutil.copytree(ROOT, destination, ignore=shutil.ignore_patterns(*NOT_RELEASED))
    example = destination / "deploy/tipline.env.example"
    settings = {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": AUTH_TOKEN, "TWILIO_FROM_NUMBER": LINE_NUMBER}
    text = example.read_text()
    for name, value in settings.items():
        text = text.replace(f"\n{name}=\n", f"\n{name}={value}\n")
    example.write_text(text + f"TWILIO_API_BASE_URL={twilio_url}\n")
    options = f"\tadmin localhost:{free_port()}\n\thttp_port {free_port()}\n\tskip_install_trust\n"
    caddyfile = destination / "deploy/Caddyfile"
    caddyfile.write_text(caddy.for_tests(caddyfile.read_text(), caddy.EXAMPLE_SITE, options))
    return destination


def stand_ins(bin_dir: Path, state: Path) -> None:
    """`systemctl` and `journalctl` first on PATH: this file's stand-ins (systemd is not PID 1 here)."""
    bin_dir.mkdir()
    for command in ("systemctl", "journalctl"):
        script = bin_dir / command
        script.write_text(
            f"#!/bin/sh\nexport PYTHONPATH={ROOT} TIPLINE_STANDIN_STATE={state}\n"
            f'exec {sys.executable} {Path(__file__).resolve()} {command} "$@"\n'
        )
        script.chmod(0o755)


def ready_to_deploy() -> str | None:
    """Why README's deploy section cannot be followed here, or None."""
    if os.environ.get("TIPLINE_TEST_DEPLOY") != "1":
        return "changes the machine (user tipline, /opt/tipline, /etc/tipline, /etc/caddy): set TIPLINE_TEST_DEPLOY=1"
    if os.geteuid() != 0:
        return "README's deploy section runs as root"
    return None


@pytest.mark.skipif(ready_to_deploy() is not None, reason=str(ready_to_deploy()))
def test_readme_deploy_section_followed_on_this_machine(
    twilio_server: FakeTwilio, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    there = [str(path) for path in CREATED if path.exists()] + (["user tipline"] if user_exists("tipline") else [])
    assert there == [], "already on this machine (a real installation?); this test would remove it"
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", 8000)) != 0, "port 8000 is taken: the unit serves there"
    https_port = free_port()
    domain = f"localhost:{https_port}"
    source = source_copy(tmp_path / "src", twilio_server.url, https_port)
    state = tmp_path / "standin"
    stand_ins(tmp_path / "bin", state)
    monkeypatch.setenv("TIPLINE_STANDIN_STATE", str(state))  # for main_pid() here
    caddyfile = Path("/etc/caddy/Caddyfile")
    caddyfile_before = caddyfile.read_bytes() if caddyfile.exists() else None
    caddy_home_before = set(CADDY_HOME.iterdir()) if CADDY_HOME.exists() else set()
    # The only change to the README's commands: the agency's name becomes localhost on a free port.
    script = "\n".join(readme_commands()).replace(f"DOMAIN={caddy.EXAMPLE_SITE}", f"DOMAIN={domain}", 1)
    assert f"DOMAIN={domain}" in script
    started = time.monotonic()
    try:
        followed = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            env={
                "PATH": f"{tmp_path / 'bin'}:{SYSTEM_PATH}",
                "HOME": "/root",
                "LANG": "C.UTF-8",
                "TIPLINE_SOURCE": str(source),
                "DEBIAN_FRONTEND": "noninteractive",
            },
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert followed.returncode == 0, followed.stdout[-3000:] + followed.stderr[-3000:]
        password = re.search(r"one-time password: (\S+)", followed.stdout)
        assert password is not None, followed.stdout[-3000:]
        assert "data directory: /var/lib/tipline" in followed.stdout  # never the working directory's
        assert "tipline serving on http://127.0.0.1:8000" in followed.stdout  # journalctl's lines
        check_the_installation()
        certificate = caddy.root_certificate(CADDY_HOME / ".local/share")
        caddy.wait_for_tls(https_port, certificate)
        public_url = f"https://{domain}"
        check_through_the_proxy(public_url, certificate, public_url, AUTH_TOKEN, "admin", password.group(1))
    finally:
        remove_the_installation(tmp_path, state, caddyfile_before, caddy_home_before)
    assert time.monotonic() - started < 240


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def check_the_installation() -> None:
    """What the README promised: the service runs as tipline, its files are its own, the settings
    readable by root and the service only."""
    tipline = pwd.getpwnam("tipline")
    data = Path("/var/lib/tipline")
    assert (data.stat().st_uid, data.stat().st_mode & 0o777) == (tipline.pw_uid, 0o700)
    for path in data.rglob("*"):
        assert path.stat().st_uid == tipline.pw_uid, path
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    settings = Path("/etc/tipline/tipline.env").stat()
    assert (settings.st_uid, settings.st_gid, settings.st_mode & 0o777) == (0, tipline.pw_gid, 0o640)
    pid = main_pid("tipline-serve")
    assert pid is not None
    assert f"Uid:\t{tipline.pw_uid}\t" in Path(f"/proc/{pid}/status").read_text()
    assert Path(f"/proc/{pid}/cwd").resolve() == data


def remove_the_installation(
    tmp_path: Path, state: Path, caddyfile_before: bytes | None, caddy_home_before: set[Path]
) -> None:
    """Stop what the stand-in started and remove what the README created; the package's Caddyfile back."""
    for unit in ("tipline-serve", "caddy"):
        subprocess.run([str(tmp_path / "bin/systemctl"), "stop", unit], check=False, timeout=60)
    if user_exists("tipline"):
        subprocess.run(["userdel", "tipline"], check=False, timeout=30)
    for path in CREATED:
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    if caddyfile_before is not None:
        Path("/etc/caddy/Caddyfile").write_bytes(caddyfile_before)
    for path in set(CADDY_HOME.iterdir()) - caddy_home_before if CADDY_HOME.exists() else ():
        shutil.rmtree(path) if path.is_dir() else path.unlink()


if __name__ == "__main__":
    sys.exit({"systemctl": systemctl, "journalctl": journalctl}[sys.argv[1]](sys.argv[2:]))
