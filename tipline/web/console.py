"""The review console: detectives triage and answer tips; administrators manage accounts and keys.

Every route declares who may use it (`@page(role=...)`); nothing is reachable without a live
server-side session that passed password and TOTP. Every POST carries a CSRF token tied to the
session. Every page is sent with a strict Content-Security-Policy (no inline script) and
`Cache-Control: no-store`. Pages show a tip's alias and channel, never anything about who sent it.
"""

from __future__ import annotations

import datetime as dt
import functools
import io
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import qrcode
import qrcode.image.svg
from flask import (
    Blueprint, Response, abort, current_app, g, jsonify, make_response, redirect, render_template, request, url_for,
)
from markupsafe import Markup
from werkzeug.exceptions import HTTPException

from tipline.services import audit, auth, review
from tipline.services.auth import STAGE_ENROL, STAGE_FULL, STAGE_PASSWORD
from tipline.storage.keystore import key_status
from tipline.storage.models import User, utcnow
from tipline.services.accounts import UserError, add_user, check_password, hasher, reset_2fa, set_disabled, unlock

bp = Blueprint("console", __name__, url_prefix="/console")
COOKIE = "tipline_console"
LOGIN_CSRF_COOKIE = "tipline_login_csrf"
PER_PAGE = 50
PHOTO_REASONS = {  # why a file from a tipster was not kept, as the console says it
    "type": "not a photo the tip line accepts (videos, audio and documents are refused)",
    "size": "larger than the tip line accepts",
    "pixels": "a picture too large to open safely",
    "unreadable": "it claimed to be a photo but could not be opened",
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "form-action 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'"
)


def _attempts() -> auth.AttemptBudget:
    """Sign-in attempts per client address, per app (counted before any password hashing)."""
    return current_app.extensions.setdefault("tipline.sign_in_budget", auth.AttemptBudget(limit=20))


def _runtime():  # type: ignore[no-untyped-def]
    return current_app.extensions["tipline"]


def _policy() -> auth.Policy:
    settings = _runtime().settings
    return auth.Policy(
        idle=dt.timedelta(minutes=settings.console_idle_minutes),
        lifetime=dt.timedelta(hours=settings.console_session_hours),
        lock=dt.timedelta(minutes=settings.console_lock_minutes),
    )


def _set_cookie(response: Response, name: str, value: str) -> None:
    response.set_cookie(
        name, value, httponly=True, samesite="Strict", path="/console",
        secure=_runtime().settings.public_url.startswith("https://"),
    )


def _wants_json() -> bool:
    return request.path.startswith("/console/api/")


def page(role: str | None = None, stage: str = STAGE_FULL, touch: bool = True) -> Callable[..., Any]:
    """Guard a route: a live session at `stage`, holding `role`; CSRF checked on POST."""

    def decorate(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            runtime = _runtime()
            with runtime.factory.begin() as session:
                loaded = auth.load_session(session, request.cookies.get(COOKIE), _policy(), touch=touch)
                if loaded is not None:
                    record, user = loaded
                    g.user_id, g.username, g.roles = user.id, user.username, user.role_set
                    g.stage, g.csrf_token, g.session_id = record.stage, record.csrf_token, record.id
            if loaded is None:
                if _wants_json():
                    return jsonify(error="signed out"), 401
                expired = request.cookies.get(COOKIE) is not None
                return redirect(url_for("console.login", expired=1) if expired else url_for("console.login"))
            if g.stage != stage:
                if _wants_json():
                    return jsonify(error="sign-in not complete"), 401
                stage_pages = {STAGE_ENROL: url_for("console.enrol"), STAGE_PASSWORD: url_for("console.password")}
                return redirect(stage_pages.get(g.stage, _home(g.roles)))
            if request.method == "POST" and not secrets.compare_digest(request.form.get("csrf_token", ""), g.csrf_token):
                abort(400, "The form expired or did not come from this console. Go back, reload and try again.")
            if role is not None and role not in g.roles:
                abort(403)
            return view(*args, **kwargs)

        guarded.console_role = role  # type: ignore[attr-defined]
        return guarded

    return decorate


@bp.after_request
def _headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


@bp.app_template_filter("age")
def _age(moment: dt.datetime | None) -> str:
    if moment is None:
        return "—"
    minutes = int((utcnow() - moment).total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // 1440} days ago"


@bp.app_context_processor
def _context() -> dict[str, Any]:
    return {
        "agency": _runtime().settings.agency_name,
        "status_labels": review.STATUS_LABELS,
        "me": getattr(g, "username", None),
        "my_roles": getattr(g, "roles", frozenset()),
        "csrf_token": getattr(g, "csrf_token", ""),
    }


# Signing in -------------------------------------------------------------------------------------

@bp.get("/login")
def login() -> Response:
    token = secrets.token_urlsafe(24)
    notice = "Your session ended after a period of inactivity. Sign in again." if request.args.get("expired") else None
    response = make_response(render_template("console/login.html", login_csrf=token, notice=notice, error=None))
    _set_cookie(response, LOGIN_CSRF_COOKIE, token)
    response.delete_cookie(COOKIE, path="/console")
    return response


@bp.post("/login")
def login_submit() -> Response | tuple[Response, int]:
    runtime = _runtime()
    keyring = runtime.keys.keyring
    sent = request.form.get("csrf_token", "")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(sent, expected):
        abort(400, "The sign-in form expired. Reload the page and try again.")
    if request.form.get("ack") != "1":
        return _login_failed("Please confirm the notice about authorised use.", 400)
    username = request.form.get("username", "")[:64]
    if not _attempts().allow(request.remote_addr or "?"):
        audit.log_event(runtime.factory, keyring, "auth.sign_in", outcome="refused", detail={"reason": "too many attempts"})
        return _login_failed("Too many attempts. Wait a minute and try again.", 429)
    with runtime.factory.begin() as session:
        try:
            user = auth.authenticate(
                session, keyring, _policy(), username, request.form.get("password", "")[:1024], request.form.get("code", ""),
            )
        except auth.SignInFailed as failure:
            # Commit the failure count (and lock) together with its audit entry.
            known = failure.reason != "unknown user"
            audit.record(session, keyring, "auth.sign_in", actor=username.strip().lower() if known else None,
                         outcome="failed", detail={"reason": failure.reason})
            token = None
        else:
            token, record = auth.start_session(session, user)
            audit.record(session, keyring, "auth.sign_in", actor=user.username, outcome="ok")
            stage, roles = record.stage, user.role_set
    if token is None:
        return _login_failed(auth.SIGN_IN_FAILED, 401)
    target = {STAGE_ENROL: url_for("console.enrol"), STAGE_PASSWORD: url_for("console.password")}.get(stage, _home(roles))
    response = redirect(target)
    _set_cookie(response, COOKIE, token)  # a fresh token at every sign-in: no session fixation
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console")
    return response


def _login_failed(message: str, status: int) -> tuple[Response, int]:
    token = secrets.token_urlsafe(24)
    response = make_response(render_template("console/login.html", login_csrf=token, notice=None, error=message))
    _set_cookie(response, LOGIN_CSRF_COOKIE, token)
    return response, status


def _qr_svg(data: str) -> Markup:
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    return Markup(svg[svg.index("<svg"):])  # our own generated markup: no user input inside


@bp.get("/enrol")
@page(stage=STAGE_ENROL)
def enrol() -> str:
    runtime = _runtime()
    with runtime.factory.begin() as session:
        record = session.get(auth.ConsoleSession, g.session_id)
        secret = auth.pending_secret(runtime.keys.keyring, record)
    uri = auth.provisioning_uri(secret, g.username, runtime.settings.agency_name)
    return render_template("console/enrol.html", secret=secret, qr=_qr_svg(uri), error=request.args.get("error"))


@bp.post("/enrol")
@page(stage=STAGE_ENROL)
def enrol_submit() -> Response:
    runtime = _runtime()
    keyring = runtime.keys.keyring
    with runtime.factory.begin() as session:
        record = session.get(auth.ConsoleSession, g.session_id)
        user = session.get(User, g.user_id)
        ok = auth.complete_enrolment(keyring, record, user, request.form.get("code", ""))
        audit.record(session, keyring, "auth.enrol_totp", actor=g.username, outcome="ok" if ok else "failed")
        stage = record.stage
    if not ok:
        return redirect(url_for("console.enrol", error=1))
    return redirect(url_for("console.password") if stage == STAGE_PASSWORD else _home(g.roles))


@bp.get("/password")
@page(stage=STAGE_PASSWORD)
def password() -> str:
    return render_template("console/password.html", error=None)


@bp.post("/password")
@page(stage=STAGE_PASSWORD)
def password_submit() -> Response | tuple[str, int]:
    runtime = _runtime()
    new, again = request.form.get("new_password", ""), request.form.get("new_password_again", "")
    try:
        check_password(new)
        if new != again:
            raise UserError("the two passwords differ")
    except UserError as error:
        return render_template("console/password.html", error=str(error).capitalize() + "."), 400
    with runtime.factory.begin() as session:
        user = session.get(User, g.user_id)
        if _same(user.password_hash, new):
            return render_template("console/password.html", error="Choose a password you have not used here."), 400
        user.password_hash = hasher.hash(new)
        user.must_change_password = False
        record = session.get(auth.ConsoleSession, g.session_id)
        auth.advance(record, user)
        audit.record(session, runtime.keys.keyring, "auth.password_change", actor=g.username)
    return redirect(_home(g.roles))


def _same(stored: str, candidate: str) -> bool:
    try:
        return bool(hasher.verify(stored, candidate))
    except Exception:  # noqa: BLE001 - any mismatch
        return False


def _home(roles: frozenset[str]) -> str:
    """Where a fully signed-in person starts: the tips, or account management for admins only."""
    return url_for("console.tips") if "detective" in roles else url_for("console.admin_users")


@bp.post("/logout")
def logout() -> Response:
    runtime = _runtime()
    token = request.cookies.get(COOKIE)
    with runtime.factory.begin() as session:
        loaded = auth.load_session(session, token, _policy(), touch=False)
        if loaded is not None:
            record, user = loaded
            if not secrets.compare_digest(request.form.get("csrf_token", ""), record.csrf_token):
                abort(400, "The form expired. Reload and try again.")
            audit.record(session, runtime.keys.keyring, "auth.sign_out", actor=user.username)
        auth.end_session(session, token)
    response = redirect(url_for("console.login"))
    response.delete_cookie(COOKIE, path="/console")
    return response


# Tips --------------------------------------------------------------------------------------------------

def _filter_from_args() -> review.TipFilter:
    args = request.args
    urgent = {"yes": True, "no": False}.get(args.get("urgent", ""))
    assignee = args.get("assignee", "")
    return review.TipFilter(
        status=args.get("status") if args.get("status") in review.STATUSES else None,
        urgent=urgent,
        channel=args.get("channel") or None,
        category=args.get("category") if args.get("category") in review.CATEGORIES else None,
        assignee_id=0 if assignee == "none" else (int(assignee) if assignee.isdigit() else None),
        reference=args.get("q", "").strip()[:12] or None,
    )


@bp.get("/")
@page(role="detective")
def tips() -> str:
    runtime = _runtime()
    flt = _filter_from_args()
    try:
        page_number = max(int(request.args.get("page", "1")), 1)
    except ValueError:
        page_number = 1
    summaries, total = review.list_tips(runtime.factory, runtime.keys.keyring, page_number, PER_PAGE, flt)
    if flt.reference and total == 1 and page_number == 1:
        return redirect(url_for("console.tip", reference=summaries[0].reference))  # type: ignore[return-value]
    kept = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template(
        "console/tips.html", tips=summaries, total=total, page=page_number, pages=max((total + PER_PAGE - 1) // PER_PAGE, 1),
        args=request.args, query=urlencode(kept), statuses=review.STATUSES, categories=review.CATEGORIES,
        detectives=review.detectives(runtime.factory), channels=sorted(set(runtime.channels) | {"sms"}),
        fingerprint=review.latest_change(runtime.factory),
    )


@bp.get("/tips/<reference>")
@page(role="detective")
def tip(reference: str) -> str:
    runtime = _runtime()
    try:
        detail = review.read_tip(runtime.factory, runtime.keys.keyring, reference, actor=g.username)
    except review.TipNotFound:
        abort(404)
    return render_template(
        "console/tip.html", tip=detail, photo_reasons=PHOTO_REASONS, statuses=review.STATUSES, categories=review.CATEGORIES,
        detectives=review.detectives(runtime.factory), notice=request.args.get("notice"), error=request.args.get("error"),
        last_seq=detail.thread[-1].seq if detail.thread else 0,
    )


@bp.get("/tips/<reference>/photos/<attachment_id>")
@page(role="detective")
def tip_photo(reference: str, attachment_id: str) -> Response:
    """A cleaned photo, inline or (with ?download=1) as a file named after the tip; audited either way."""
    runtime = _runtime()
    download = request.args.get("download") == "1"
    try:
        photo = review.read_photo(runtime.factory, runtime.keys.keyring, reference, attachment_id,
                                  actor=g.username, download=download)
    except review.TipNotFound:
        abort(404)
    response = Response(photo.data, content_type=photo.content_type)
    disposition = "attachment" if download else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{photo.filename}"'
    # An image is never a document: even opened on its own it may run nothing.
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response


@bp.post("/tips/<reference>/reply")
@page(role="detective")
def tip_reply(reference: str) -> Response:
    runtime = _runtime()
    try:
        review.reply(runtime.factory, runtime.keys.keyring, runtime.settings, reference, request.form.get("text", ""),
                     author_id=g.user_id, actor=g.username)
    except review.TipNotFound:
        abort(404)
    except review.RepliesImpossible as refused:
        return redirect(url_for("console.tip", reference=reference, error=f"Not sent: {refused.reason}."))
    except ValueError as error:
        return redirect(url_for("console.tip", reference=reference, error=f"Not sent: {error}."))
    runtime.wake_dispatcher()
    return redirect(url_for("console.tip", reference=reference, notice="Reply queued.") + "#thread-end")


@bp.post("/tips/<reference>/note")
@page(role="detective")
def tip_note(reference: str) -> Response:
    runtime = _runtime()
    try:
        review.add_note(runtime.factory, runtime.keys.keyring, reference, request.form.get("text", ""),
                        author_id=g.user_id, actor=g.username)
    except review.TipNotFound:
        abort(404)
    except ValueError as error:
        return redirect(url_for("console.tip", reference=reference, error=f"Not saved: {error}."))
    return redirect(url_for("console.tip", reference=reference, notice="Note added.") + "#thread-end")


@bp.post("/tips/<reference>/triage")
@page(role="detective")
def tip_triage(reference: str) -> Response:
    runtime = _runtime()
    form = request.form
    assignee = form.get("assignee", "")
    try:
        review.triage(
            runtime.factory, reference, status=form.get("status") or None, category=form.get("category"),
            assignee_id=int(assignee) if assignee.isdigit() else None, clear_assignee=assignee == "none",
            actor=g.username, keyring=runtime.keys.keyring,
        )
    except review.TipNotFound:
        abort(404)
    except ValueError as error:
        return redirect(url_for("console.tip", reference=reference, error=f"Not changed: {error}."))
    return redirect(url_for("console.tip", reference=reference, notice="Saved."))


# Live updates (polled by console.js; they do not extend an idle session) -----------------------------

@bp.get("/api/changes")
@page(role="detective", touch=False)
def api_changes() -> Response:
    return jsonify(review.latest_change(_runtime().factory))


@bp.get("/api/tips/<reference>/thread")
@page(role="detective", touch=False)
def api_thread(reference: str) -> Response:
    runtime = _runtime()
    try:
        after = int(request.args.get("after", "0"))
        entries, deliveries, photos = review.thread_since(runtime.factory, runtime.keys.keyring, reference, after)
    except review.TipNotFound:
        abort(404)
    except ValueError:
        abort(400, "after must be a number")
    return jsonify(
        entries=[{"seq": e.seq, "kind": e.kind, "text": e.text, "delivery": e.delivery} for e in entries],
        deliveries={str(seq): state for seq, state in deliveries.items()},
        photos={str(seq): state for seq, state in photos.items()},
    )


# Administration -------------------------------------------------------------------------------------

@bp.get("/admin/users")
@page(role="admin")
def admin_users() -> str:
    from tipline.services.accounts import list_users

    return render_template("console/admin_users.html", users=list_users(_runtime().factory), now=utcnow(),
                           created=request.args.get("created"), password=None, error=request.args.get("error"))


@bp.post("/admin/users")
@page(role="admin")
def admin_users_create() -> Response | str:
    from tipline.services.accounts import generate_password, list_users

    runtime = _runtime()
    username = request.form.get("username", "")
    roles = request.form.getlist("roles")
    password = generate_password()
    try:
        add_user(runtime.factory, username, roles, password, must_change=True)
    except UserError as error:
        audit.log_event(runtime.factory, runtime.keys.keyring, "user.create", actor=g.username, outcome="failed",
                        detail={"reason": str(error)})
        return redirect(url_for("console.admin_users", error=str(error)))
    audit.log_event(runtime.factory, runtime.keys.keyring, "user.create", actor=g.username, object_type="user",
                    object_id=username.strip().lower(), detail={"roles": sorted(roles)})
    # The one-time password is shown once, on this response only (never in a URL or the log).
    return render_template("console/admin_users.html", users=list_users(runtime.factory), now=utcnow(),
                           created=username.strip().lower(), password=password, error=None)


@bp.post("/admin/users/<username>/<action>")
@page(role="admin")
def admin_user_action(username: str, action: str) -> Response:
    runtime = _runtime()
    actions: dict[str, Callable[[], None]] = {
        "disable": lambda: set_disabled(runtime.factory, username, True),
        "enable": lambda: set_disabled(runtime.factory, username, False),
        "reset-2fa": lambda: reset_2fa(runtime.factory, username),
        "unlock": lambda: unlock(runtime.factory, username),
    }
    if action not in actions:
        abort(404)
    if action == "disable" and username == g.username:
        return redirect(url_for("console.admin_users", error="You cannot disable your own account."))
    try:
        actions[action]()
    except UserError as error:
        return redirect(url_for("console.admin_users", error=str(error)))
    audit.log_event(runtime.factory, runtime.keys.keyring, f"user.{action}", actor=g.username, object_type="user", object_id=username)
    return redirect(url_for("console.admin_users"))


@bp.get("/admin/keys")
@page(role="admin")
def admin_keys() -> str:
    from tipline.services import rotation

    runtime = _runtime()
    audit.log_event(runtime.factory, runtime.keys.keyring, "keys.status", actor=g.username)
    return render_template("console/admin_keys.html", keys=key_status(runtime.factory),
                           rotations=rotation.recent(runtime.factory), purposes=rotation.ROTATABLE,
                           notice=request.args.get("notice"), error=request.args.get("error"))


@bp.post("/admin/keys/rotate")
@page(role="admin")
def admin_keys_rotate() -> Response:
    from tipline.services import rotation
    from tipline.storage.keystore import load_master_key

    runtime = _runtime()
    purpose = request.form.get("purpose", "")
    reencrypt = request.form.get("reencrypt") == "1"
    try:
        rotation.start(runtime.factory, runtime.keys, load_master_key(runtime.settings), purpose, reencrypt=reencrypt,
                       actor=g.username)
    except rotation.RotationError as error:
        return redirect(url_for("console.admin_keys", error=str(error)))
    runtime.wake_dispatcher()
    return redirect(url_for("console.admin_keys", notice=f"Rotation of {purpose} started; progress shows below."))


@bp.get("/admin/audit")
@page(role="admin")
def admin_audit() -> str:
    runtime = _runtime()
    verification = audit.verify(runtime.factory, runtime.keys.keyring)
    audit.log_event(runtime.factory, runtime.keys.keyring, "audit.verify", actor=g.username,
                    outcome="ok" if verification.intact else "tampered")
    return render_template("console/admin_audit.html", verification=verification, entries=audit.recent(runtime.factory))


@bp.get("")
def root() -> Response:
    return redirect(url_for("console.tips"))


@bp.errorhandler(HTTPException)
def _error(error: HTTPException) -> tuple[str, int]:
    code = error.code or 500
    titles = {400: "That request could not be used", 403: "Not allowed", 404: "Not found", 405: "Not allowed"}
    messages = {
        403: "Your account does not have the role this page needs.",
        404: "There is nothing here. Check the tip reference.",
    }
    message = messages.get(code) or (error.description if code < 500 else "Something went wrong.")
    return render_template("console/error.html", code=code, title=titles.get(code, "Error"), message=message), code
