"""What the web package keeps per Flask app, typed: the runtime and the console's sign-in budget.

Blueprints read them through `current_runtime()` and `sign_in_budget()`, never from
`current_app.extensions` directly.
"""

from __future__ import annotations

from flask import Flask, current_app

from tipline.runtime import Runtime
from tipline.services.auth import AttemptBudget

EXTENSION = "tipline"
SIGN_IN_BUDGET = "tipline.sign_in_budget"
SIGN_IN_ATTEMPTS_PER_MINUTE = 20  # per client address, counted before any password hashing


def install(app: Flask, runtime: Runtime) -> None:
    app.extensions[EXTENSION] = runtime
    app.extensions[SIGN_IN_BUDGET] = AttemptBudget(limit=SIGN_IN_ATTEMPTS_PER_MINUTE)


def current_runtime() -> Runtime:
    """The runtime serving this request."""
    runtime = current_app.extensions[EXTENSION]
    assert isinstance(runtime, Runtime)
    return runtime


def sign_in_budget() -> AttemptBudget:
    """Sign-in attempts per client address for this app (each app counts its own)."""
    budget = current_app.extensions[SIGN_IN_BUDGET]
    assert isinstance(budget, AttemptBudget)
    return budget
