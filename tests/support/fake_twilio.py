"""A local HTTP server that behaves like the parts of Twilio's REST API the tip line uses.

The real `twilio` client talks to it over HTTP. It checks Basic auth, records every request, and can
be told to fail the next requests the way Twilio does (5xx, or a 4xx with a Twilio error code).

MMS media behave as Twilio's do: an authenticated GET of a media URL answers 307 with a link to a
"CDN" on another host (127.0.0.2), which serves the bytes and records whether credentials
reached it (they must not). Deleting a message deletes its media.

It also keeps Twilio's Messages log: every message the tip line sends by REST (POST Messages.json)
is logged as `outbound-api`, and a test records an inbound message with `receive()` (which returns
the form Twilio would post to the webhook, so a test can deliver it, or not: "Twilio delivered it
while we were down"). `GET Messages.json` lists the log newest first with Twilio's filters (`To`,
`From`, `DateSent`, `DateSent>` on or after, `DateSent<` on or before; a date or a date-time) and
paging (`PageSize`, `PageToken`, `next_page_uri`); `GET Messages/{sid}/Media.json` lists a
message's media. Deleting a message removes it from the log. `fail_next` scripts failures of
sends, deletions and media downloads; `fail_next_list` those of listings. Deleting a message that
was deleted already answers 404 (code 20404), as Twilio does.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import json
import re
import secrets
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

MESSAGES = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages\.json$")
MESSAGE = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages/((?:SM|MM)[0-9a-f]{32})\.json$")
MEDIA = re.compile(
    r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages/((?:SM|MM)[0-9a-f]{32})/Media/(ME[0-9a-f]{32})(\.json)?$"
)
MEDIA_LIST = re.compile(r"^/2010-04-01/Accounts/(AC[0-9a-f]{32})/Messages/((?:SM|MM)[0-9a-f]{32})/Media\.json$")
DEFAULT_PAGE_SIZE = 50  # Twilio's default; at most 1000


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
    log: list[dict[str, Any]] = field(default_factory=list)  # the Messages log, oldest first
    gone: set[str] = field(default_factory=set)  # messages deleted: deleting one again answers 404
    list_failures: list[tuple[int, int | None]] = field(default_factory=list)  # for listings only
    clock: Any = None  # a callable returning the current UTC time (tests may move it); None: real time
    # (key, secret) of an API key: when set, REST calls must use it and the auth token is refused
    # (the auth token only signs webhooks then). Set by require_api_key().
    api_key: tuple[str, str] | None = None

    def add_media(self, message_sid: str, data: bytes, content_type: str = "image/jpeg") -> str:
        """Store a file as a media of an inbound message; returns its MediaUrl (as Twilio would post it)."""
        path = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/ME{secrets.token_hex(16)}"
        with self.lock:
            self.media[path] = (data, content_type)
        return self.url + path

    def now(self) -> dt.datetime:
        now: dt.datetime = self.clock() if self.clock is not None else dt.datetime.now(dt.UTC)
        return now

    def receive(
        self,
        from_: str,
        to: str,
        body: str,
        media: Iterable[tuple[bytes, str]] = (),
        when: dt.datetime | None = None,
        **extra: str,
    ) -> tuple[str, dict[str, str]]:
        """Twilio receives an inbound message: log it; returns its sid and the webhook form it posts.

        `media`: (bytes, content type) per file (an MMS, sid MM...); `when`: its date_sent (default
        now); `extra`: more webhook fields (e.g. FromCity). Posting the form is up to the test."""
        files = list(media)
        sid = ("MM" if files else "SM") + secrets.token_hex(16)
        form = {
            "ToCountry": "US",
            "SmsMessageSid": sid,
            "NumMedia": str(len(files)),
            "SmsSid": sid,
            "SmsStatus": "received",
            "Body": body,
            "To": to,
            "NumSegments": "1",
            "MessageSid": sid,
            "AccountSid": self.account_sid,
            "From": from_,
            "ApiVersion": "2010-04-01",
        }
        for n, (data, content_type) in enumerate(files):
            form[f"MediaUrl{n}"] = self.add_media(sid, data, content_type)
            form[f"MediaContentType{n}"] = content_type
        form.update(extra)
        self._log(
            sid,
            from_,
            to,
            body,
            "inbound",
            "received",
            len(files),
            when,
            messaging_service_sid=extra.get("MessagingServiceSid"),
        )
        return sid, form

    def _log(
        self,
        sid: str,
        from_: str | None,
        to: str,
        body: str,
        direction: str,
        status: str,
        num_media: int = 0,
        when: dt.datetime | None = None,
        messaging_service_sid: str | None = None,
    ) -> dict[str, Any]:
        """Add a message resource to the log, shaped like Twilio's (dates in RFC 2822)."""
        when = (when or self.now()).astimezone(dt.UTC).replace(microsecond=0)
        stamp = email.utils.format_datetime(when)  # "Thu, 03 Dec 2026 04:42:53 +0000"
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}"
        resource: dict[str, Any] = {
            "sid": sid,
            "account_sid": self.account_sid,
            "api_version": "2010-04-01",
            "body": body,
            "date_created": stamp,
            "date_sent": stamp,
            "date_updated": stamp,
            "direction": direction,
            "error_code": None,
            "error_message": None,
            "from": from_,
            "to": to,
            "messaging_service_sid": messaging_service_sid,
            "num_media": str(num_media),
            "num_segments": "1",
            "price": None,
            "price_unit": "USD",
            "status": status,
            "uri": uri + ".json",
            "subresource_uris": {"media": uri + "/Media.json", "feedback": uri + "/Feedback.json"},
            "_when": when,
        }
        with self.lock:
            self.log.append(resource)
        return resource

    def record_reply(self, to: str, from_: str, body: str) -> str:
        """Log a reply Twilio sent from a webhook's TwiML (`outbound-reply`); returns its sid."""
        sid = "SM" + secrets.token_hex(16)
        self._log(sid, from_, to, body, "outbound-reply", "sent")
        return sid

    def logged(self, direction: str | None = None) -> list[dict[str, Any]]:
        """The Messages log (oldest first), optionally of one direction."""
        with self.lock:
            return [dict(m) for m in self.log if direction is None or m["direction"] == direction]

    def list_messages(self, query: dict[str, str]) -> dict[str, Any]:
        """One page of the Messages log as `GET Messages.json?query` answers it (newest first)."""
        with self.lock:
            matching = [m for m in self.log if _matches(m, query)]
        # Newest first, as Twilio lists; within one second, the later-logged first.
        ordered = sorted(enumerate(matching), key=lambda im: (im[1]["_when"], im[0]), reverse=True)
        matching = [m for _, m in ordered]
        size = min(int(query.get("PageSize") or DEFAULT_PAGE_SIZE), 1000)
        token = query.get("PageToken", "")
        start = 0
        if token.startswith("PA"):
            after = token[2:]
            start = next((i + 1 for i, m in enumerate(matching) if m["sid"] == after), len(matching))
        page = matching[start : start + size]
        number = int(query.get("Page") or 0)
        base = f"/2010-04-01/Accounts/{self.account_sid}/Messages.json"
        kept = {k: v for k, v in query.items() if k not in ("PageToken", "Page", "PageSize")}
        first = base + "?" + urlencode({**kept, "PageSize": size, "Page": 0})
        next_uri = None
        if start + size < len(matching):
            next_uri = (
                base
                + "?"
                + urlencode({**kept, "PageSize": size, "Page": number + 1, "PageToken": "PA" + page[-1]["sid"]})
            )
        return {
            "messages": [{k: v for k, v in m.items() if not k.startswith("_")} for m in page],
            "first_page_uri": first,
            "next_page_uri": next_uri,
            "previous_page_uri": None,
            "page": number,
            "page_size": size,
            "start": start,
            "end": start + len(page) - 1 if page else start,
            "uri": base + "?" + urlencode(query),
        }

    def media_list(self, message_sid: str) -> dict[str, Any]:
        """`GET Messages/{sid}/Media.json`: the message's media, as Twilio lists them."""
        prefix = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{message_sid}/Media/"
        with self.lock:
            paths = [(p, ctype) for p, (_, ctype) in self.media.items() if p.startswith(prefix)]
        return {
            "media_list": [
                {
                    "sid": p.rsplit("/", 1)[1],
                    "account_sid": self.account_sid,
                    "parent_sid": message_sid,
                    "content_type": ctype,
                    "uri": p + ".json",
                }
                for p, ctype in paths
            ],
            "first_page_uri": prefix.removesuffix("/") + ".json?PageSize=50&Page=0",
            "next_page_uri": None,
            "previous_page_uri": None,
            "page": 0,
            "page_size": 50,
            "uri": prefix.removesuffix("/") + ".json",
        }

    @property
    def media_fetches(self) -> list[str]:
        return [r.path for r in self.requests if r.method == "GET" and MEDIA.match(r.path)]

    @property
    def sent(self) -> list[dict[str, str]]:
        return [r.form for r in self.requests if r.method == "POST"]

    @property
    def deleted(self) -> list[str]:
        return [r.path.rsplit("/", 1)[1].removesuffix(".json") for r in self.requests if r.method == "DELETE"]

    def fail_next(self, status: int, code: int | None = None, times: int = 1) -> None:
        """Fail the next sends, deletions and media downloads (not listings: see fail_next_list)."""
        with self.lock:
            self.failures.extend([(status, code)] * times)

    def fail_next_list(self, status: int, code: int | None = None, times: int = 1) -> None:
        """Fail the next listings (GET Messages.json or Media.json)."""
        with self.lock:
            self.list_failures.extend([(status, code)] * times)


def _instant(value: str) -> tuple[dt.datetime, bool]:
    """A DateSent filter's value: (its instant, whether it is a whole day); ValueError if neither form."""
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC), False
    except ValueError:
        return dt.datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=dt.UTC), True


def _matches(message: dict[str, Any], query: dict[str, str]) -> bool:
    """Whether a logged message passes the list filters (DateSent> and DateSent< are inclusive)."""
    if "To" in query and message["to"] != query["To"]:
        return False
    if "From" in query and message["from"] != query["From"]:
        return False
    when: dt.datetime = message["_when"]
    day = dt.timedelta(days=1)
    if "DateSent" in query:
        at, whole_day = _instant(query["DateSent"])
        if not (at <= when < at + day if whole_day else when == at):
            return False
    if "DateSent>" in query:
        at, _ = _instant(query["DateSent>"])
        if when < at:
            return False
    if "DateSent<" in query:
        at, whole_day = _instant(query["DateSent<"])
        if when >= at + day if whole_day else when > at:
            return False
    return True


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
            user, password = fake.api_key or (fake.account_sid, fake.auth_token)
            expected = base64.b64encode(f"{user}:{password}".encode()).decode()
            if self.headers.get("Authorization") != f"Basic {expected}":
                self._reply(401, {"code": 20003, "message": "Authenticate", "status": 401})
                return False
            return True

        def _scripted_failure(self, listing: bool = False) -> bool:
            with fake.lock:
                queue = fake.list_failures if listing else fake.failures
                failure = queue.pop(0) if queue else None
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
            sender = form.get("From")
            fake._log(
                sid,
                sender,
                form.get("To", ""),
                form.get("Body", ""),
                "outbound-api",
                "sent",
                messaging_service_sid=form.get("MessagingServiceSid"),
            )
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

        def do_GET(self) -> None:  # noqa: N802 - the log, a media list, or a media file (307 to the CDN)
            if not self._authorised():
                return
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if MESSAGES.match(parts.path) or MEDIA_LIST.match(parts.path):
                self._list(parts.path, query)
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

        def _list(self, path: str, query: dict[str, str]) -> None:
            with fake.lock:
                fake.requests.append(Request("GET", path, query))
            if self._scripted_failure(listing=True):
                return
            messages, media = MESSAGES.match(path), MEDIA_LIST.match(path)
            match = messages or media
            if match is None or match.group(1) != fake.account_sid:
                self._reply(404, {"code": 20404, "message": "not found", "status": 404})
                return
            if media:
                self._reply(200, fake.media_list(media.group(2)))
                return
            try:
                self._reply(200, fake.list_messages(query))
            except ValueError:
                self._reply(400, {"code": 20001, "message": "invalid DateSent", "status": 400})

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
            if message and message.group(2) in fake.gone:
                # Twilio's answer to deleting a message it no longer has
                self._reply(404, {"code": 20404, "message": "not found", "status": 404})
                return
            with fake.lock:
                if media:
                    fake.media.pop(self.path.removesuffix(".json"), None)
                elif message:
                    prefix = self.path.removesuffix(".json") + "/Media/"
                    for path in [p for p in fake.media if p.startswith(prefix)]:
                        del fake.media[path]
                    fake.log[:] = [m for m in fake.log if m["uri"] != self.path]
                    fake.gone.add(message.group(2))
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


def require_api_key(fake: FakeTwilio, key: str, secret: str) -> None:
    """From now on, accept REST calls authenticated with this API key only (not the auth token)."""
    with fake.lock:
        fake.api_key = (key, secret)


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
