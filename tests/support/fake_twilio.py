"""A local HTTP server that behaves like the parts of Twilio's REST API the tip line uses.

The real `twilio` client talks to it over HTTP. It checks Basic auth, records every request, and can
be told to fail the next requests the way Twilio does (5xx, or a 4xx with a Twilio error code).

MMS media behave as Twilio's do: an authenticated GET of a media URL answers 307 with a link to a
"CDN" on another host (127.0.0.2), which serves the bytes and records whether credentials
reached it (they must not). Deleting a message deletes its media.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

MESSAGES = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json$")
MESSAGE = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages/((?:SM|MM)[0-9a-f]{32})\.json$")
MEDIA = re.compile(
    r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages/((?:SM|MM)[0-9a-f]{32})/Media/(ME[0-9a-f]{32})(\.json)?$"
)


@dataclass
class Request:
    method: str
    path: str
    form: dict[str, str]


@dataclass
class FakeTwilio:
    account_sid: str
    auth_token: str
    requests: list[Request] = field(default_factory=list)
    # Scripted failures for the next requests: (http status, twilio error code or None).
    failures: list[tuple[int, int | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""
    cdn_url: str = ""
    media: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # media path -> (bytes, content type)
    cdn_tokens: dict[str, str] = field(default_factory=dict)  # CDN token -> media path
    cdn_requests: list[dict[str, str]] = field(default_factory=list)  # headers the CDN saw

    def add_media(self, message_sid: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Store a file as a media of an inbound message; returns its MediaUrl (as Twilio would post it)."""
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/ME{secrets.token_hex(16)}"
        with self.lock:
            self.media[path] = (data, content_type)
        return self.url + path

    @property
    def media_fetches(self) -> list[str]:
        return [r.path for r in self.requests if r.method == "GET"]

    @property
    def sent(self) -> list[dict[str, str]]:
        return [r.form for r in self.requests if r.method == "POST"]

    @property
    def deleted(self) -> list[str]:
        return [r.path.rsplit("/", 1)[1].removesuffix(".json") for r in self.requests if r.method == "DELETE"]

    def fail_next(self, status: int, code: int | None = None, times: int = 1) -> None:
        with self.lock:
            self.failures.extend([(status, code)] * times)


def _handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # keep test output (and logs) clean
            pass

        def _reply(self, status: int, body: dict[str, Any] | None = None) -> None:
            data = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _authorised(self) -> bool:
            expected = base64.b64encode(f"{fake.account_sid}:{fake.auth_token}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
                return False
            return True

        def _scripted_failure(self) -> bool:
            with fake.lock:
                failure = fake.failures.pop(0) if fake.failures else None
            if failure is None:
                return False
            status, code = failure
            self._reply(status, {"code": code, "message": "scripted failure", "status": status})
            return True

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length", "0"))
            form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
            if not self._authorised():
                return
            match = MESSAGES.match(self.path)
            if not match or match.group(1) != fake.account_sid:
                self._reply(404, {"code": 20404, "message": "not found", "status": 404})
                return
            with fake.lock:
                fake.requests.append(Request("POST", self.path, form))
            if self._scripted_failure():
                return
            sid = "SM" + secrets.token_hex(16)
            self._reply(
                201,
                {
                    "sid": sid,
                    "account_sid": fake.account_sid,
                    "to": form.get("To"),
                    "from": form.get("From"),
                    "body": form.get("Body"),
                    "status": "queued",
                    "num_segments": "1",
                    "direction": "outbound-api",
                    "api_version": "2010-04-01",
                    "uri": f"/2010-04-01/Accounts/{fake.account_sid}/Messages/{sid}.json",
                },
            )
            form["_sid"] = sid

        def do_GET(self) -> None:  # noqa: N802 - a media file: 307 to the CDN, as Twilio does
            if not self._authorised():
                return
            match = MEDIA.match(self.path)
            with fake.lock:
                fake.requests.append(Request("GET", self.path, {}))
                known = match is not None and self.path in fake.media
            if self._scripted_failure():
                return
            if not known:
                self._reply(404, {"code": 20404, "message": "not found", "status": 404})
                return
            token = secrets.token_hex(16)
            with fake.lock:
                fake.cdn_tokens[token] = self.path
            self.send_response(307)
            self.send_header("Location", f"{fake.cdn_url}/v1/{token}?Expires=60&Signature=x")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def do_DELETE(self) -> None:  # noqa: N802
            if not self._authorised():
                return
            message, media = MESSAGE.match(self.path), MEDIA.match(self.path)
            if not message and not media:
                self._reply(404, {"code": 20404, "message": "not found", "status": 404})
                return
            with fake.lock:
                fake.requests.append(Request("DELETE", self.path, {}))
            if self._scripted_failure():
                return
            with fake.lock:
                if media:
                    fake.media.pop(self.path.removesuffix(".json"), None)
                else:
                    prefix = self.path.removesuffix(".json") + "/Media/"
                    for path in [p for p in fake.media if p.startswith(prefix)]:
                        del fake.media[path]
            self._reply(204)

    return Handler


def _cdn_handler(fake: FakeTwilio) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            token = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
            with fake.lock:
                fake.cdn_requests.append(dict(self.headers.items()))
                path = fake.cdn_tokens.get(token)
                stored = fake.media.get(path) if path else None
            if stored is None:
                self.send_response(403)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            data, content_type = stored
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler


class _Servers(ThreadingHTTPServer):
    """The API server, which also stops its CDN when shut down."""

    cdn: ThreadingHTTPServer

    def shutdown(self) -> None:
        self.cdn.shutdown()
        self.cdn.server_close()
        super().shutdown()


def start(account_sid: str, auth_token: str) -> tuple[FakeTwilio, ThreadingHTTPServer]:
    fake = FakeTwilio(account_sid, auth_token)
    server = _Servers(("127.0.0.1", 0), _handler(fake))
    server.daemon_threads = True
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    cdn = ThreadingHTTPServer(("127.0.0.2", 0), _cdn_handler(fake))
    cdn.daemon_threads = True
    server.cdn = cdn
    fake.cdn_url = f"http://127.0.0.2:{cdn.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    threading.Thread(target=cdn.serve_forever, daemon=True).start()
    return fake, server
