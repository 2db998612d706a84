"""Sign-in attempts as an attacker makes them: from any client address, with any value in any field.

Also the password hasher as the attack tests see it: cheap argon2 parameters (set through a fixture,
never by a weaker default), and a hasher that counts its verifications and can run a probe while
one is under way.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Mapping
from urllib.parse import urlencode

import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tests.support.console import csrf_of
from tipline.services import accounts, auth

# argon2id at its smallest sensible cost: what is tested is which code runs, not how long it takes.
CHEAP = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1)


class CountingHasher:
    """A PasswordHasher that counts `verify` calls and runs `during_verify` before each one."""

    def __init__(self, inner: PasswordHasher = CHEAP, during_verify: Callable[[], None] | None = None):
        self.inner = inner
        self.during_verify = during_verify
        self.verifications = 0

    def verify(self, hash: str, password: str) -> bool:
        self.verifications += 1
        if self.during_verify is not None:
            self.during_verify()
        return bool(self.inner.verify(hash, password))

    def hash(self, password: str) -> str:
        return str(self.inner.hash(password))

    def check_needs_rehash(self, hash: str) -> bool:
        return bool(self.inner.check_needs_rehash(hash))


def use_hasher(monkeypatch: pytest.MonkeyPatch, hasher: PasswordHasher | CountingHasher) -> None:
    """Hash and verify console passwords with `hasher` (its own dummy hash for unknown accounts too)."""
    monkeypatch.setattr(accounts, "hasher", hasher)
    monkeypatch.setattr(auth, "hasher", hasher)
    monkeypatch.setattr(auth, "_DUMMY_HASH", hasher.hash(secrets.token_urlsafe(16)))


def client_at(app: Flask, address: str) -> FlaskClient:
    """A browser whose requests come from `address`."""
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    return client


def post_form(client: FlaskClient, path: str, fields: Mapping[str, str | bytes]) -> TestResponse:
    """POST a form exactly as given: bytes values go on the wire as they are (invalid UTF-8 too)."""
    body = urlencode(dict(fields), encoding="utf-8")
    return client.post(path, data=body, content_type="application/x-www-form-urlencoded")


def attempt(
    app: Flask,
    username: str | bytes,
    password: str | bytes = "not the password!",
    code: str | bytes = "000000",
    *,
    address: str = "192.0.2.1",
    client: FlaskClient | None = None,
) -> TestResponse:
    """One sign-in attempt through the form, with a valid sign-in CSRF token."""
    client = client or client_at(app, address)
    page = client.get("/console/login")
    fields = {"csrf_token": csrf_of(page), "username": username, "password": password, "code": code, "ack": "1"}
    return post_form(client, "/console/login", fields)
