"""What the web package keeps per Flask app, typed: the runtime.

Blueprints read it through `current_runtime()`, never from `current_app.extensions` directly.
(The console's sign-in budgets are not kept here but in the database, so that every process
counts the same attempts: see `tipline.services.auth`.)
"""

from __future__ import annotations

from flask import Flask, current_app

from tipline.runtime import Runtime

EXTENSION = "tipline"


def install(app: Flask, runtime: Runtime) -> None:
    app.extensions[EXTENSION] = runtime


def current_runtime() -> Runtime:
    """The runtime serving this request."""
    runtime = current_app.extensions[EXTENSION]
    assert isinstance(runtime, Runtime)
    return runtime
