"""A local HTTP server that behaves like the parts of the Telegram Bot API the tip line uses.

The real python-telegram-bot client talks to it. It records every call, hands out updates to
getUpdates, and can be told to answer the next calls with a 429 (retry_after) or a 403 (blocked).
It keeps the webhook (setWebhook, deleteWebhook, getWebhookInfo, with a delivery error the test
can plant) and the bot's profile (setMyCommands, setMyDescription, setMyShortDescription and their
get* twins, per language_code), and refuses what the Bot API refuses: a command name outside
`[a-z0-9_]{1,32}`, a command description outside 1-256 characters, more than 100 commands, a
description over 512 or a short description over 120 characters, a language code that is not two
lowercase letters.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote

BOT_ID = 7000000001
TOKEN = "7000000001:" + "AAH-canary_test_token_0123456789"  # the bot token the tests configure
SECRET = "webhook-secret_0123456789"  # and the webhook secret


@dataclass
class FakeTelegram:
    token: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[int, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    next_message_id: int = 5000
    files: dict[str, bytes] = field(default_factory=dict)  # file_path -> content, for getFile and download
    # file_id -> the file_path getFile answers (default "documents/<file_id>.bin"): a hostile Bot API's
    file_paths: dict[str, str] = field(default_factory=dict)
    url: str = ""
    webhook: dict[str, Any] = field(default_factory=dict)  # what setWebhook set ({} when none)
    webhook_error: tuple[int, str] | None = None  # (unix time, message) getWebhookInfo reports
    pending_updates: int = 0  # what getWebhookInfo reports as waiting
    # (kind, language_code) -> what was set: kind "commands" (a list of {command, description}),
    # "description" or "short_description"; language_code "" for the default
    profile: dict[tuple[str, str], Any] = field(default_factory=dict)

    def called(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [params for name, params in self.calls if name == method]

    def fail_next(self, method: str, status: int, parameters: dict[str, Any] | None = None, times: int = 1) -> None:
        with self.lock:
            self.failures.extend([(status, method, parameters or {})] * times)


def _decode(value: str) -> Any:
    try:
        return json.loads(value)
    except ValueError:
        return value


def _handler(fake: FakeTelegram) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _reply(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 - file downloads: /file/bot<token>/<file_path>
            prefix = f"/file/bot{fake.token}/"
            path = unquote(self.path)  # the client percent-encodes the token's colon in file URLs
            content = fake.files.get(path[len(prefix) :]) if path.startswith(prefix) else None
            if content is None:
                self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                return
            with fake.lock:
                fake.calls.append(("download", {"path": path[len(prefix) :]}))
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.end_headers()
            self.wfile.write(content)

        def do_POST(self) -> None:  # noqa: N802
            prefix = f"/bot{fake.token}/"
            if not self.path.startswith(prefix):
                self._reply(404, {"ok": False, "error_code": 404, "description": "Not Found"})
                return
            method = self.path[len(prefix) :]
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            kind = self.headers.get("Content-Type", "")
            if kind.startswith("application/json"):
                params = json.loads(raw or "{}")
            else:
                params = {k: _decode(v[0]) for k, v in parse_qs(raw).items()}
            with fake.lock:
                fake.calls.append((method, params))
                failure = next((f for f in fake.failures if f[1] == method), None)
                if failure is not None:
                    fake.failures.remove(failure)
            if failure is not None:
                status, _, parameters = failure
                descriptions = {429: "Too Many Requests: retry later", 403: "Forbidden: bot was blocked by the user"}
                body = {"ok": False, "error_code": status, "description": descriptions.get(status, "Bad Request")}
                if parameters:
                    body["parameters"] = parameters
                self._reply(status, body)
                return
            refusal = _refusal(method, params)
            if refusal is not None:
                self._reply(400, {"ok": False, "error_code": 400, "description": f"Bad Request: {refusal}"})
                return
            self._reply(200, {"ok": True, "result": self._result(method, params)})

        def _result(self, method: str, params: dict[str, Any]) -> Any:
            if method == "getMe":
                return {
                    "id": BOT_ID,
                    "is_bot": True,
                    "first_name": "Tip line",
                    "username": "example_tipline_bot",
                    "can_join_groups": False,
                    "can_read_all_group_messages": False,
                    "supports_inline_queries": False,
                }
            if method == "sendMessage":
                with fake.lock:
                    fake.next_message_id += 1
                    message_id = fake.next_message_id
                return {
                    "message_id": message_id,
                    "date": int(time.time()),
                    "text": params.get("text"),
                    "chat": {"id": int(params["chat_id"]), "type": "private"},
                    "from": {"id": BOT_ID, "is_bot": True, "first_name": "Tip line"},
                }
            if method == "getUpdates":
                deadline = time.monotonic() + min(float(params.get("timeout", 0) or 0), 1.0)
                offset = int(params.get("offset", 0) or 0)
                while True:
                    with fake.lock:
                        pending = [u for u in fake.updates if u["update_id"] >= offset]
                    if pending or time.monotonic() >= deadline:
                        return pending
                    time.sleep(0.05)
            if method == "getFile":
                path = fake.file_paths.get(str(params["file_id"]), f"documents/{params['file_id']}.bin")
                return {
                    "file_id": params["file_id"],
                    "file_unique_id": "u" + str(params["file_id"]),
                    "file_size": len(fake.files.get(path, b"")),
                    "file_path": path,
                }
            if method in PROFILE_METHODS or method in WEBHOOK_METHODS:
                return _keep(fake, method, params)
            return True  # setWebhook, deleteWebhook, answerCallbackQuery, deleteMessages, deleteMessage

    return Handler


COMMAND = re.compile(r"[a-z0-9_]{1,32}")
LANGUAGE = re.compile(r"(?:[a-z]{2})?")
# method -> (kind kept, parameter, longest value Telegram accepts)
PROFILE_SETTERS = {
    "setMyDescription": ("description", "description", 512),
    "setMyShortDescription": ("short_description", "short_description", 120),
}
PROFILE_METHODS = {
    "setMyCommands",
    "getMyCommands",
    "deleteMyCommands",
    *PROFILE_SETTERS,
    "getMyDescription",
    "getMyShortDescription",
}
WEBHOOK_METHODS = {"setWebhook", "deleteWebhook", "getWebhookInfo"}


def _refusal(method: str, params: dict[str, Any]) -> str | None:
    """What the Bot API would say to a request it refuses, or None."""
    if method in PROFILE_METHODS and not LANGUAGE.fullmatch(str(params.get("language_code") or "")):
        return "LANG_CODE_INVALID"
    if method == "setMyCommands":
        commands = params.get("commands")
        if not isinstance(commands, list) or len(commands) > 100:
            return "commands must be a list of at most 100"
        for command in commands:
            if not COMMAND.fullmatch(str(command.get("command", ""))):
                return "BOT_COMMAND_INVALID"
            if not 1 <= len(str(command.get("description", ""))) <= 256:
                return "BOT_COMMAND_DESCRIPTION_INVALID"
    if method in PROFILE_SETTERS:
        _, name, longest = PROFILE_SETTERS[method]
        if len(str(params.get(name) or "")) > longest:
            return f"{name} is too long"
    if method == "setWebhook" and not str(params.get("url", "")).startswith("https://"):
        return "bad webhook: An HTTPS URL must be provided for webhook"
    return None


def _keep(fake: FakeTelegram, method: str, params: dict[str, Any]) -> Any:
    """The profile and webhook methods: remember what is set, answer what is asked."""
    language = str(params.get("language_code") or "")
    with fake.lock:
        if method == "setMyCommands":
            fake.profile[("commands", language)] = params["commands"]
        elif method == "deleteMyCommands":
            fake.profile.pop(("commands", language), None)
        elif method in PROFILE_SETTERS:
            kind, name, _ = PROFILE_SETTERS[method]
            fake.profile[(kind, language)] = params.get(name) or ""
        elif method == "getMyCommands":
            return fake.profile.get(("commands", language), [])
        elif method == "getMyDescription":
            return {"description": fake.profile.get(("description", language), "")}
        elif method == "getMyShortDescription":
            return {"short_description": fake.profile.get(("short_description", language), "")}
        elif method == "setWebhook":
            fake.webhook = dict(params)
        elif method == "deleteWebhook":
            fake.webhook = {}
        else:
            return _webhook_info(fake)
    return True


def _webhook_info(fake: FakeTelegram) -> dict[str, Any]:
    info: dict[str, Any] = {
        "url": fake.webhook.get("url", ""),
        "has_custom_certificate": False,
        "pending_update_count": fake.pending_updates,
    }
    if fake.webhook:
        info["max_connections"] = fake.webhook.get("max_connections", 40)
        if fake.webhook.get("allowed_updates") is not None:
            info["allowed_updates"] = fake.webhook["allowed_updates"]
    if fake.webhook_error is not None:
        info["last_error_date"], info["last_error_message"] = fake.webhook_error
    return info


def start(token: str) -> tuple[FakeTelegram, ThreadingHTTPServer]:
    fake = FakeTelegram(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return fake, server
