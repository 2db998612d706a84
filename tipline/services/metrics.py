"""Content-free Prometheus metrics, on an address of their own (TIPLINE_METRICS_ADDRESS).

The figures are those of /healthz (services/health.py), in Prometheus's text exposition format,
written by hand: no client library for a dozen lines. They are served by a small HTTP server in a
thread of `tipline serve`, on a separate address (loopback, or the monitoring network), never on
the public one.

What is left out, and why: a count of tips submitted. Scraped every 15 s into a time-series
database kept for months, it would time every tip to 15 s, a record the tip line itself refuses
to keep (times to the minute, no access log). The queues shown are not free of that either: every
inbound SMS queues the deletion of Twilio's copy a minute later, so the outbox backlog rises and
falls with tipsters' messages, and a scrape history times them to about a minute. That is why the
figures are for loopback or a closed monitoring network only (a warning is logged otherwise), and
why ages are in whole minutes, the precision the tip line keeps of any time.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tipline.services.health import Report, is_local

log = logging.getLogger(__name__)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
IDLE_TIMEOUT = 5.0  # seconds a scraper's connection may stay silent before its thread lets it go


def _gauge(name: str, help_text: str, value: float | None) -> str:
    shown = "NaN" if value is None else str(value)
    return f"# HELP {name} {help_text}\n# TYPE {name} gauge\n{name} {shown}\n"


def exposition(report: Report) -> str:
    """The report as Prometheus text: gauges only, no label carries anything but a fixed word."""
    outbox, photos = report.outbox, report.photos
    return "".join(
        [
            _gauge("tipline_healthy", "1 when /healthz answers 200.", int(report.healthy)),
            _gauge(
                "tipline_database_writable", "1 when the database took a write just now.", int(report.database == "ok")
            ),
            _gauge(
                "tipline_dispatcher_seconds_since_pass",
                "Seconds since a dispatcher last completed a pass (NaN: none has run).",
                report.dispatcher.seconds_since_pass,
            ),
            _gauge("tipline_outbox_backlog", "Outbox rows due and not done.", outbox.count if outbox else None),
            _gauge(
                "tipline_outbox_oldest_seconds",
                "Seconds, in whole minutes, the most overdue outbox row has waited (0: none).",
                (outbox.oldest_seconds or 0) if outbox else None,
            ),
            _gauge(
                "tipline_photos_waiting", "Photos waiting to be fetched and cleaned.", photos.count if photos else None
            ),
            _gauge(
                "tipline_photos_oldest_seconds",
                "Seconds, in whole minutes, the longest-waiting photo has waited (0: none).",
                (photos.oldest_seconds or 0) if photos else None,
            ),
        ]
    )


class MetricsServer:
    """GET /metrics on its own address, in a daemon thread, until `stop()`."""

    def __init__(self, address: tuple[str, int], report: Callable[[], Report]):
        class Handler(BaseHTTPRequestHandler):
            timeout = IDLE_TIMEOUT  # a thread per connection: idle ones must not pile up

            def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exposition(report()).encode()
                self.send_response(200)
                self.send_header("Content-Type", CONTENT_TYPE)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - http.server's name
                pass  # no access log: a scraper's address and times are nobody's business here

        self._server = ThreadingHTTPServer(address, Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def serve(address: tuple[str, int], report: Callable[[], Report]) -> MetricsServer | None:
    """Start the metrics server; None (and an error logged) when the address cannot be listened on:
    a busy metrics port must not keep the tip line from taking tips."""
    try:
        server = MetricsServer(address, report).start()
    except OSError as error:
        log.error("metrics not served: cannot listen on %s:%d (%s)", address[0], address[1], error.strerror)
        return None
    log.info("metrics on http://%s:%d/metrics", address[0], address[1])
    if address[0] != "localhost" and not is_local(address[0]):
        log.warning(
            "metrics on %s, not a loopback address: the queue counts rise and fall with tipsters' messages;"
            " let only the monitoring network reach it",
            address[0],
        )
    return server
