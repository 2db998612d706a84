"""The runtime behind the Flask app, typed: one accessor for blueprints and webhooks."""

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
