"""Drive the review console over HTTP as a person would: sign in (enrolling TOTP), click, post forms."""

from __future__ import annotations

import html
import re
import time
from dataclasses import dataclass, field

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from tipline.services.accounts import add_user
from tipline.services.auth import TOTP_PERIOD
from tipline.services.context import ServiceContext

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
SECRET = re.compile(r'data-totp-secret="([A-Z2-7]+)"')
PASSWORD = "correct horse battery staple"


def csrf_of(response: TestResponse) -> str:
    match = CSRF.search(response.get_data(as_text=True))
    assert match, "no CSRF token on the page"
    return html.unescape(match.group(1))


@dataclass
class Person:
    """One console user in one browser (their own cookie jar)."""

    client: FlaskClient
    username: str
    password: str = PASSWORD
    secret: str | None = None
    last_step: int = 0
    csrf: str = ""
    pages: list[str] = field(default_factory=list)

    def next_code(self) -> str:
        """A code the server has not seen from us yet (each code is accepted once)."""
        assert self.secret
        while True:
            now = time.time()
            current = int(now // TOTP_PERIOD)
            # The server accepts the step before its own: the previous step's code only early in a
            # step, so that it is still good when a slow request (argon2 on a loaded machine) lands
            # in the next one.
            earliest = current - 1 if now % TOTP_PERIOD < TOTP_PERIOD / 2 else current
            step = max(earliest, self.last_step + 1)
            if step <= current + 1:
                self.last_step = step
                return pyotp.TOTP(self.secret).at(step * TOTP_PERIOD)
            time.sleep(1)

    def sign_in(self, code: str | None = None, password: str | None = None) -> TestResponse:
        page = self.client.get("/console/login")
        form = {
            "csrf_token": csrf_of(page),
            "username": self.username,
            "password": password or self.password,
            "ack": "1",
            "code": code if code is not None else (self.next_code() if self.secret else ""),
        }
        response = self.client.post("/console/login", data=form)
        if response.status_code == 302 and response.location.endswith("/console/enrol"):
            enrol = self.client.get("/console/enrol")
            self.secret = SECRET.search(enrol.get_data(as_text=True)).group(1)
            response = self.client.post("/console/enrol", data={"csrf_token": csrf_of(enrol), "code": self.next_code()})
        if response.status_code == 302 and response.location.endswith("/console/password"):
            change = self.client.get("/console/password")
            self.password = self.password + " renewed"
            response = self.client.post(
                "/console/password",
                data={
                    "csrf_token": csrf_of(change),
                    "new_password": self.password,
                    "new_password_again": self.password,
                },
            )
        return response

    def get(self, path: str) -> TestResponse:
        response = self.client.get(path)
        if response.status_code == 200 and "text/html" in response.content_type:
            self.pages.append(response.get_data(as_text=True))
            if CSRF.search(self.pages[-1]):
                self.csrf = csrf_of(response)
        return response

    def post(self, path: str, data: dict[str, str] | None = None, csrf: bool = True) -> TestResponse:
        form = dict(data or {})
        if csrf:
            form["csrf_token"] = self.csrf or csrf_of(self.get("/console/"))
        return self.client.post(path, data=form)


def person(
    app: Flask,
    ctx: ServiceContext,
    username: str,
    roles: tuple[str, ...] = ("detective",),
    must_change: bool = False,
) -> Person:
    """A new account (PASSWORD, TOTP not enrolled yet) with a browser of its own, not signed in."""
    add_user(ctx, username, roles, PASSWORD, must_change=must_change)
    return Person(app.test_client(), username)
