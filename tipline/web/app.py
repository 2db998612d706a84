"""The Flask app factory: webhooks, console, sandbox and `/healthz` around one `Runtime`.

Nothing in here logs request data.
"""

from __future__ import annotations

import traceback

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from tipline.runtime import Runtime
from tipline.services import health
from tipline.web import limits


def create_app(runtime: Runtime) -> Flask:
    from tipline.web import console, context, sandbox
    from webhooks import telegram, twilio

    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=runtime.cookie_secret(),
        MAX_CONTENT_LENGTH=limits.DEFAULT_BODY,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=runtime.settings.public_url.startswith("https://"),
    )
    context.install(app, runtime)

    @app.before_request
    def body_limit() -> None:
        # Before any blueprint's own checks (the webhooks' signatures read the body): a webhook
        # takes only what its provider sends, and a larger body is answered 413 unread.
        request.max_content_length = limits.body_limit(request.blueprint)

    app.register_blueprint(twilio.bp)
    app.register_blueprint(telegram.bp)
    app.register_blueprint(console.bp)
    if runtime.settings.sandbox:
        app.register_blueprint(sandbox.bp)

    @app.get("/healthz")
    def healthz() -> tuple[Response, int]:
        # Content-free: states, counts and ages (services/health.py). 503 when the database cannot
        # be written or no dispatcher has passed lately: tipsters are being failed. The counts time
        # tipsters' messages, so only a client on this machine sees them; others get the status.
        report = runtime.health()
        code = 200 if report.healthy else 503
        if not health.is_local(request.remote_addr):
            return jsonify(status=report.status), code
        return jsonify(**report.as_json(), channels=sorted(runtime.channels)), code

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> tuple[Response, int]:
        # Plain, short, and never an echo of the request.
        code = error.code or 500
        return Response(
            f"{code} {error.name}: {error.description}\n" if code < 500 else f"{code} {error.name}\n",
            content_type="text/plain; charset=utf-8",
        ), code

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> tuple[Response, int]:
        # The exception's text may quote input; log only its type and where it was raised.
        frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno}" if frame else "?"
        cause = health.database_cause(error)  # "database or disk is full", not only "OperationalError"
        app.logger.error("request failed: %s at %s%s", type(error).__name__, where, f" ({cause})" if cause else "")
        return Response(
            "500 Internal Server Error: nothing was acknowledged; the provider will retry.\n",
            content_type="text/plain; charset=utf-8",
        ), 500

    @app.after_request
    def headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        if runtime.settings.public_url.startswith("https://"):
            response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return response

    return app
