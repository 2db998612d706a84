"""The review console: detectives triage and answer tips; administrators manage accounts and keys.

Every route declares who may use it (`@page(role=...)`); nothing is reachable without a live
server-side session that passed password and TOTP. Every POST carries a CSRF token tied to the
session. Every page is sent with a strict Content-Security-Policy (no inline script) and
`Cache-Control: no-store`. Pages show a tip's alias and channel, never anything about who sent it.
The views parse the request and call the services (`review`, `auth`, `accounts`, `audit`).
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import hmac
import io
import secrets
import zoneinfo
from collections.abc import Callable
from typing import Any, ParamSpec
from urllib.parse import urlencode

import qrcode
import qrcode.image.svg
from flask import Blueprint, Response, abort, g, jsonify, make_response, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from markupsafe import Markup
from werkzeug.exceptions import HTTPException
from werkzeug.wrappers import Response as BaseResponse

from adapters.sandbox import CHANNEL as SANDBOX_CHANNEL
from tipline.core.alerting import AlertChoice
from tipline.core.times import local_time
from tipline.core.vocabulary import AttachmentStatus, MessageKind, ReplyDelivery, Role, TipStatus
from tipline.services import accounts, alerts, audit, auth, casefile, review, search
from tipline.services.auth import Stage
from tipline.services.context import ServiceContext
from tipline.web.context import current_runtime

bp = Blueprint("console", __name__, url_prefix="/console")
COOKIE = "tipline_console"
LOGIN_CSRF_COOKIE = "tipline_login_csrf"
PER_PAGE = 50
SEARCH_CHARS = 200  # the search field: a few words or a reference (search.py reads at most 12 words)
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
BUSY = "Many sign-ins are under way. Try again in a moment."
STAGE_PAGES = {Stage.ENROL: "console.enrol", Stage.PASSWORD: "console.password"}

P = ParamSpec("P")
View = Callable[P, ResponseReturnValue]


def _ctx() -> ServiceContext:
    return current_runtime().ctx


def _visit() -> auth.Visit:
    """The signed-in session of this request (set by `page`)."""
    visit = g.get("visit")
    assert isinstance(visit, auth.Visit)
    return visit


def _set_cookie(response: BaseResponse, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="Strict",
        path="/console",
        secure=current_runtime().settings.public_url.startswith("https://"),
    )


def _delete_cookie(response: BaseResponse, name: str) -> None:
    """Expire a cookie with the attributes it was set with (a bare deletion would travel without Secure)."""
    response.delete_cookie(
        name,
        httponly=True,
        samesite="Strict",
        path="/console",
        secure=current_runtime().settings.public_url.startswith("https://"),
    )


def _wants_json() -> bool:
    return request.path.startswith("/console/api/")


def _home(roles: frozenset[Role]) -> str:
    """Where a fully signed-in person starts: the tips, or account management for admins only."""
    return url_for("console.tips") if Role.DETECTIVE in roles else url_for("console.admin_users")


def _next_page(stage: Stage, roles: frozenset[Role]) -> str:
    """Where a session at `stage` goes next: the sign-in step it still lacks, or home."""
    return url_for(STAGE_PAGES[stage]) if stage in STAGE_PAGES else _home(roles)


def _not_there_yet(token: str | None, visit: auth.Visit | None) -> ResponseReturnValue:
    """The answer to a request without a session (`visit` None) or whose session is at another stage:
    a 401 for the live-update API, otherwise a redirect to where the person should be."""
    if visit is None:
        if _wants_json():
            return jsonify(error="signed out"), 401
        return redirect(url_for("console.login", expired=1) if token is not None else url_for("console.login"))
    if _wants_json():
        return jsonify(error="sign-in not complete"), 401
    return redirect(_next_page(visit.stage, visit.roles))


def page(role: Role | None = None, stage: Stage = Stage.FULL, touch: bool = True) -> Callable[[View[P]], View[P]]:
    """Guard a route: a live session at `stage`, holding `role`; CSRF checked on POST.

    `touch=False` for polling routes, so that live updates do not keep an idle session alive.
    """

    def decorate(view: View[P]) -> View[P]:
        @functools.wraps(view)
        def guarded(*args: P.args, **kwargs: P.kwargs) -> ResponseReturnValue:
            token = request.cookies.get(COOKIE)
            visit = auth.resume(_ctx(), token, touch=touch)
            if visit is None or visit.stage != stage:
                return _not_there_yet(token, visit)
            g.visit = visit
            if request.method == "POST" and not auth.same_token(request.form.get("csrf_token", ""), visit.csrf_token):
                abort(400, "The form expired or did not come from this console. Go back, reload and try again.")
            if role is not None and role not in visit.roles:
                abort(403)
            return view(*args, **kwargs)

        guarded.console_role = role  # type: ignore[attr-defined]  # read by the tests: every route declares one
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
    minutes = int((_ctx().now() - moment).total_seconds() // 60)
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes} min ago"
    if minutes < 48 * 60:
        return f"{minutes // 60} h ago"
    return f"{minutes // 1440} days ago"


@bp.app_template_filter("local")
def _local(moment: dt.datetime | None) -> str:
    """A stored UTC time as an absolute date and time in the agency's time zone (TIPLINE_TIMEZONE),
    with the zone's abbreviation, e.g. "2026-12-03 07:45 CST"."""
    return local_time(moment, _zone())


@bp.app_context_processor
def _context() -> dict[str, Any]:
    visit = g.get("visit")
    return {
        "agency": current_runtime().settings.agency_name,
        "timezone": current_runtime().settings.timezone,  # stated on pages that show local times
        "status_labels": review.STATUS_LABELS,
        "me": visit.username if visit else None,
        "my_roles": visit.roles if visit else frozenset(),
        "csrf_token": visit.csrf_token if visit else "",
        # The vocabulary, so that templates compare with its members rather than with bare strings.
        "Role": Role,
        "MessageKind": MessageKind,
        "ReplyDelivery": ReplyDelivery,
        "AttachmentStatus": AttachmentStatus,
        "SANDBOX_CHANNEL": SANDBOX_CHANNEL,  # its tips are labelled: anyone who reached the page sent them
    }


@bp.errorhandler(auth.SessionEnded)
def _session_ended(_: auth.SessionEnded) -> ResponseReturnValue:
    return redirect(url_for("console.login"))


# Signing in -------------------------------------------------------------------------------------


@bp.get("/login")
def login() -> ResponseReturnValue:
    token = secrets.token_urlsafe(24)
    notice = "Your session ended after a period of inactivity. Sign in again." if request.args.get("expired") else None
    response = make_response(render_template("console/login.html", login_csrf=token, notice=notice, error=None))
    _set_cookie(response, LOGIN_CSRF_COOKIE, token)
    _delete_cookie(response, COOKIE)
    return response


@bp.post("/login")
def login_submit() -> ResponseReturnValue:
    sent = request.form.get("csrf_token", "")
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not auth.same_token(sent, expected):
        abort(400, "The sign-in form expired. Reload the page and try again.")
    if request.form.get("ack") != "1":
        return _login_failed("Please confirm the notice about authorised use.", 400)
    try:
        signed_in = auth.sign_in(
            _ctx(),
            request.form.get("username", "")[:64],
            request.form.get("password", "")[:1024],
            request.form.get("code", "")[:64],
            client=request.remote_addr or "?",
        )
    except auth.TooManyAttempts:
        return _login_failed("Too many attempts. Wait a minute and try again.", 429)
    except auth.Busy:
        return _login_failed(BUSY, 503)
    except auth.SignInFailed:
        return _login_failed(auth.SIGN_IN_FAILED, 401)
    response = redirect(_next_page(signed_in.visit.stage, signed_in.visit.roles))
    _set_cookie(response, COOKIE, signed_in.token)  # a fresh token at every sign-in: no session fixation
    _delete_cookie(response, LOGIN_CSRF_COOKIE)
    return response


def _login_failed(message: str, status: int) -> ResponseReturnValue:
    token = secrets.token_urlsafe(24)
    response = make_response(render_template("console/login.html", login_csrf=token, notice=None, error=message))
    _set_cookie(response, LOGIN_CSRF_COOKIE, token)
    return response, status


def _qr_svg(data: str) -> Markup:
    image = qrcode.make(data, image_factory=qrcode.image.svg.SvgPathImage, box_size=8, border=2)
    buffer = io.BytesIO()
    image.save(buffer)
    svg = buffer.getvalue().decode()
    return Markup(svg[svg.index("<svg") :])  # our own generated markup: no user input inside


@bp.get("/enrol")
@page(stage=Stage.ENROL)
def enrol() -> ResponseReturnValue:
    enrolment = auth.enrolment(_ctx(), _visit())
    return render_template(
        "console/enrol.html", secret=enrolment.secret, qr=_qr_svg(enrolment.uri), error=request.args.get("error")
    )


@bp.post("/enrol")
@page(stage=Stage.ENROL)
def enrol_submit() -> ResponseReturnValue:
    visit = _visit()
    stage = auth.enrol(_ctx(), visit, request.form.get("code", ""))
    if stage is None:
        return redirect(url_for("console.enrol", error=1))
    return redirect(_next_page(stage, visit.roles))


@bp.get("/password")
@page(stage=Stage.PASSWORD)
def password() -> ResponseReturnValue:
    return render_template("console/password.html", error=None)


@bp.post("/password")
@page(stage=Stage.PASSWORD)
def password_submit() -> ResponseReturnValue:
    visit = _visit()
    try:
        auth.change_password(
            _ctx(), visit, request.form.get("new_password", ""), request.form.get("new_password_again", "")
        )
    except accounts.UserError as error:
        return render_template("console/password.html", error=str(error).capitalize() + "."), 400
    return redirect(_home(visit.roles))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if not auth.sign_out(_ctx(), request.cookies.get(COOKIE), request.form.get("csrf_token", "")):
        abort(400, "The form expired. Reload and try again.")
    response = redirect(url_for("console.login"))
    _delete_cookie(response, COOKIE)
    return response


# Tips --------------------------------------------------------------------------------------------------


def _number(value: str) -> int | None:
    """A small non-negative number from a form or query, or None: ASCII digits only ("²".isdigit()
    is true), and few enough that no database column overflows."""
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def _filter_from_args() -> review.TipFilter:
    args = request.args
    status = args.get("status", "")
    assignee = args.get("assignee", "")
    if args.get("mine") == "1":  # "Mine": the tips assigned to the signed-in detective
        assignee = str(_visit().user_id)
    return review.TipFilter(
        status=TipStatus(status) if status in review.STATUSES else None,
        urgent={"yes": True, "no": False}.get(args.get("urgent", "")),
        channel=args.get("channel") or None,
        category=args.get("category") if args.get("category") in review.CATEGORIES else None,
        assignee_id=0 if assignee == "none" else _number(assignee),
        text=args.get("q", "").strip()[:SEARCH_CHARS] or None,
    )


@bp.get("/")
@page(role=Role.DETECTIVE)
def tips() -> ResponseReturnValue:
    runtime = current_runtime()
    flt = _filter_from_args()
    page_number = max(_number(request.args.get("page", "1")) or 1, 1)
    summaries, total = review.list_tips(runtime.ctx, page_number, PER_PAGE, flt, actor=_visit().username)
    if flt.text and total == 1 and page_number == 1 and search.names(flt.text, summaries[0].reference):
        # A reference typed in full or in part, and only one tip has it: open it.
        return redirect(url_for("console.tip", reference=summaries[0].reference))
    kept = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template(
        "console/tips.html",
        tips=summaries,
        total=total,
        page=page_number,
        pages=max((total + PER_PAGE - 1) // PER_PAGE, 1),
        args=request.args,
        query=urlencode(kept),
        statuses=review.STATUSES,
        categories=review.CATEGORIES,
        detectives=review.detectives(runtime.ctx),
        channels=sorted(set(runtime.channels) | {"sms"}),
        fingerprint=review.latest_change(runtime.ctx),
        mine=request.args.get("mine") == "1",
        my_id=_visit().user_id,
        notice=LIST_NOTICES.get(request.args.get("notice", "")),
    )


@bp.get("/tips/<reference>")
@page(role=Role.DETECTIVE)
def tip(reference: str) -> ResponseReturnValue:
    try:
        detail = review.read_tip(_ctx(), reference, actor=_visit().username)
    except review.TipNotFound:
        abort(404)
    return render_template(
        "console/tip.html",
        tip=detail,
        photo_reasons=PHOTO_REASONS,
        statuses=review.STATUSES,
        categories=review.CATEGORIES,
        detectives=review.detectives(_ctx()),
        notice=_heard("notice"),
        error=_heard("error"),
        last_seq=detail.thread[-1].seq if detail.thread else 0,
        my_id=_visit().user_id,
    )


@bp.get("/tips/<reference>/photos/<attachment_id>")
@page(role=Role.DETECTIVE)
def tip_photo(reference: str, attachment_id: str) -> ResponseReturnValue:
    """A cleaned photo, inline or (with ?download=1) as a file named after the tip; audited either way."""
    download = request.args.get("download") == "1"
    try:
        photo = review.read_photo(_ctx(), reference, attachment_id, actor=_visit().username, download=download)
    except review.TipNotFound:
        abort(404)
    response = Response(photo.data, content_type=photo.content_type)
    disposition = "attachment" if download else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{photo.filename}"'
    # An image is never a document: even opened on its own it may run nothing.
    response.headers["Content-Security-Policy"] = "default-src 'none'; img-src 'self'; sandbox"
    return response


def _said(**messages: str | None) -> dict[str, Any]:
    """URL arguments carrying what an action tells the person on the page it redirects to, each with
    a tag keyed by their session's CSRF token: `_heard` shows only what this console said to this
    session, so that a crafted link cannot make the console say something else ("re-enter your
    password at ...")."""
    said: dict[str, Any] = {}
    for name, text in messages.items():
        if text:
            said[name] = text
            said[f"{name}_tag"] = _tag(name, text)
    return said


def _heard(name: str) -> str | None:
    """The message `_said` put in this request's URL under `name`, or None if it was not ours."""
    text, tag = request.args.get(name), request.args.get(f"{name}_tag", "")
    return text if text and auth.same_token(tag, _tag(name, text)) else None


def _tag(name: str, text: str) -> str:
    key = _visit().csrf_token.encode()
    return hmac.new(key, f"{name}\n{text}".encode(), hashlib.sha256).hexdigest()[:24]


def _back_to_tip(
    reference: str,
    *,
    notice: str | None = None,
    error: str | None = None,
    end: bool = False,
) -> BaseResponse:
    """Back to the tip's page with a notice or an error; `end` scrolls to the thread's newest entry."""
    url = url_for("console.tip", reference=reference, **_said(notice=notice, error=error))
    return redirect(url + "#thread-end" if end else url)


@bp.post("/tips/<reference>/reply")
@page(role=Role.DETECTIVE)
def tip_reply(reference: str) -> ResponseReturnValue:
    runtime = current_runtime()
    visit = _visit()
    try:
        review.reply(
            runtime.ctx, reference, request.form.get("text", ""), author_id=visit.user_id, actor=visit.username
        )
    except review.TipNotFound:
        abort(404)
    except review.RepliesImpossible as refused:
        return _back_to_tip(reference, error=f"Not sent: {refused.reason}.")
    except ValueError as error:
        return _back_to_tip(reference, error=f"Not sent: {error}.")
    runtime.wake_dispatcher()
    return _back_to_tip(reference, notice="Reply queued.", end=True)


@bp.post("/tips/<reference>/note")
@page(role=Role.DETECTIVE)
def tip_note(reference: str) -> ResponseReturnValue:
    visit = _visit()
    try:
        review.add_note(_ctx(), reference, request.form.get("text", ""), author_id=visit.user_id, actor=visit.username)
    except review.TipNotFound:
        abort(404)
    except ValueError as error:
        return _back_to_tip(reference, error=f"Not saved: {error}.")
    return _back_to_tip(reference, notice="Note added.", end=True)


@bp.post("/tips/<reference>/triage")
@page(role=Role.DETECTIVE)
def tip_triage(reference: str) -> ResponseReturnValue:
    form = request.form
    assignee = form.get("assignee", "")
    try:
        review.triage(
            _ctx(),
            reference,
            status=form.get("status") or None,
            category=form.get("category"),
            assignee_id=_number(assignee),
            clear_assignee=assignee == "none",
            actor=_visit().username,
        )
    except review.TipNotFound:
        abort(404)
    except ValueError as error:
        return _back_to_tip(reference, error=f"Not changed: {error}.")
    return _back_to_tip(reference, notice="Saved.")


@bp.post("/tips/<reference>/sender/<action>")
@page(role=Role.DETECTIVE)
def tip_mute(reference: str, action: str) -> ResponseReturnValue:
    """Mute or unmute the tip's sender (abuse control): their messages are still stored, unanswered."""
    if action not in ("mute", "unmute"):
        abort(404)
    try:
        review.set_muted(_ctx(), reference, action == "mute", actor=_visit().username)
    except review.TipNotFound:
        abort(404)
    except ValueError as error:
        return _back_to_tip(reference, error=f"Not changed: {error}.")
    return _back_to_tip(reference, notice="Sender muted." if action == "mute" else "Sender unmuted.")


# Case file (issue 13 part 4): a tip as PDF --------------------------------------------------------------


@bp.get("/tips/<reference>/case-file.pdf")
@page(role=Role.DETECTIVE)
def tip_case_file(reference: str) -> ResponseReturnValue:
    """The tip as a PDF to file or print; the export is audited before the bytes are made, and the
    response is never cached (`no-store`, set for every console page)."""
    try:
        case = casefile.export(_ctx(), reference, actor=_visit().username)
    except review.TipNotFound:
        abort(404)
    response = Response(case.data, content_type="application/pdf")
    response.headers["Content-Disposition"] = f'attachment; filename="{case.filename}"'
    # A PDF opened on its own may run nothing and load nothing.
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    return response


# Urgent by hand and "Assign to me" (issue 13 parts 1 and 5) -----------------------------------------

# Notices on the list page, chosen by key: never text taken from the URL.
LIST_NOTICES = {
    "draft-hidden": "The tip is no longer urgent. The tipster is still writing it, so it left the list "
    "until they submit it.",
}


@bp.post("/tips/<reference>/urgent")
@page(role=Role.DETECTIVE)
def tip_urgent(reference: str) -> ResponseReturnValue:
    """Set or clear "urgent" by hand (audited as tip.urgent). A draft cleared of it leaves the list."""
    urgent = request.form.get("urgent") == "1"
    try:
        _, still_seen = review.set_urgent(_ctx(), reference, urgent, actor=_visit().username)
    except review.TipNotFound:
        abort(404)
    if not still_seen:
        return redirect(url_for("console.tips", notice="draft-hidden"))
    return _back_to_tip(reference, notice="Marked urgent." if urgent else "No longer urgent.")


@bp.post("/tips/<reference>/assign-to-me")
@page(role=Role.DETECTIVE)
def tip_assign_to_me(reference: str) -> ResponseReturnValue:
    """One click for the most common assignment (audited as a triage, like the assignee field)."""
    visit = _visit()
    try:
        review.triage(_ctx(), reference, assignee_id=visit.user_id, actor=visit.username)
    except review.TipNotFound:
        abort(404)
    except ValueError as error:
        return _back_to_tip(reference, error=f"Not changed: {error}.")
    return _back_to_tip(reference, notice="Assigned to you.")


bp.add_app_template_global(review.who_wrote, "entry_who")  # the page and the live updates say it alike


# Live updates (polled by console.js; they do not extend an idle session) -----------------------------


@bp.get("/api/changes")
@page(role=Role.DETECTIVE, touch=False)
def api_changes() -> ResponseReturnValue:
    return jsonify(review.latest_change(_ctx()))


@bp.get("/api/tips/<reference>/thread")
@page(role=Role.DETECTIVE, touch=False)
def api_thread(reference: str) -> ResponseReturnValue:
    try:
        after = _number(request.args.get("after", "0"))
        if after is None:
            raise ValueError("after")
        # Audited (before anything is sent) whenever the answer carries thread entries.
        entries, deliveries, photos = review.thread_since(_ctx(), reference, after, actor=_visit().username)
    except review.TipNotFound:
        abort(404)
    except ValueError:
        abort(400, "after must be a number")
    alias = review.alias_of(_ctx(), reference) if entries else ""
    # What the page shows of an entry, so that one added live looks like the others.
    return jsonify(
        entries=[
            {
                "seq": e.seq,
                "kind": e.kind,
                "who": review.who_wrote(e, alias),
                "text": e.text,
                "delivery": e.delivery,
                "age": _age(e.at),
                "local": _local(e.at),
            }
            for e in entries
        ],
        deliveries={str(seq): state for seq, state in deliveries.items()},
        photos={str(seq): state for seq, state in photos.items()},
    )


# Administration -------------------------------------------------------------------------------------


@bp.get("/admin/users")
@page(role=Role.ADMIN)
def admin_users() -> ResponseReturnValue:
    return _accounts_page(error=_heard("error"), notice=_user_action_done())


def _accounts_page(
    *,
    created: str | None = None,
    reset: str | None = None,
    password: str | None = None,
    error: str | None = None,
    notice: str | None = None,
) -> str:
    return render_template(
        "console/admin_users.html",
        users=accounts.list_users(_ctx()),
        now=_ctx().now(),
        created=created,
        reset=reset,
        password=password,
        error=error,
        notice=notice,
    )


@bp.post("/admin/users")
@page(role=Role.ADMIN)
def admin_users_create() -> ResponseReturnValue:
    ctx, actor = _ctx(), _visit().username
    username = accounts.normalise_username(request.form.get("username", ""))
    password = accounts.generate_password()
    try:
        accounts.add_user_from_console(ctx, username, request.form.getlist("roles"), password, actor=actor)
    except accounts.ShellOnly as refused:  # audited by the service
        return _accounts_page(error=str(refused)), 403
    except accounts.UserError as error:
        audit.log_event(ctx, "user.create", actor=actor, outcome="failed", detail={"reason": str(error)})
        return redirect(url_for("console.admin_users", **_said(error=str(error))))
    # The one-time password is shown once, on this response only (never in a URL or the log).
    return _accounts_page(created=username, password=password)


USER_ACTIONS: dict[str, Callable[[ServiceContext, str, str], None]] = {
    "disable": lambda ctx, username, actor: accounts.set_disabled(ctx, username, True, actor=actor),
    "enable": lambda ctx, username, actor: accounts.set_disabled(ctx, username, False, actor=actor),
    "reset-2fa": lambda ctx, username, actor: accounts.reset_2fa_from_console(ctx, username, actor=actor),
    "unlock": lambda ctx, username, actor: accounts.unlock(ctx, username, actor=actor),
    "grant-admin": lambda ctx, username, actor: accounts.grant_role_from_console(
        ctx, username, Role.ADMIN, actor=actor
    ),
    "remove-admin": lambda ctx, username, actor: accounts.remove_role_from_console(
        ctx, username, Role.ADMIN, actor=actor
    ),
    # Refused with ShellOnly, and the refusal audited: no console form offers it, but a forged POST is logged.
    "grant-detective": lambda ctx, username, actor: accounts.grant_role_from_console(
        ctx, username, Role.DETECTIVE, actor=actor
    ),
    "remove-detective": lambda ctx, username, actor: accounts.remove_role_from_console(
        ctx, username, Role.DETECTIVE, actor=actor
    ),
}
# Actions an admin may not take on their own account in the console (another admin, or the shell, can).
NOT_ON_ONESELF = {
    "disable": "You cannot disable your own account.",
    "grant-admin": "You cannot change your own roles.",
    "remove-admin": "You cannot change your own roles.",
    "grant-detective": "You cannot change your own roles.",
    "remove-detective": "You cannot change your own roles.",
    "reset-password": "You cannot reset your own password in the console.",
}


# What each account action will do (asked before it, on a page the server renders, so that it holds
# without JavaScript) and what it did (said after it). The notice is built here from the action's
# name and a username that exists, never taken from the URL as text, so a crafted link cannot make
# the console say something else.
USER_ACTION_QUESTIONS = {
    "disable": (
        "Disable {name}'s account?",
        "{name} is signed out at once, everywhere, and cannot sign in until an administrator enables the account.",
        "Disable the account",
    ),
    "enable": ("Enable {name}'s account?", "{name} can sign in again.", "Enable the account"),
    "reset-2fa": (
        "Reset {name}'s authenticator?",
        "{name} is signed out at once and sets up a new authenticator app at the next sign-in.",
        "Reset the authenticator",
    ),
    "unlock": (
        "Unlock {name}'s account?",
        "{name} can try to sign in again at once, instead of waiting for the lock to end.",
        "Unlock the account",
    ),
    "grant-admin": (
        "Make {name} an administrator?",
        "{name} is signed out at once and, at the next sign-in, manages accounts and keys and reads the audit log.",
        "Grant the admin role",
    ),
    "remove-admin": (
        "Remove {name}'s admin role?",
        "{name} is signed out at once and no longer manages accounts, keys or the audit log.",
        "Remove the admin role",
    ),
    "reset-password": (
        "Reset {name}'s password?",
        "{name} is signed out at once. The next page shows a one-time password, once: give it to {name}, who "
        "signs in with it and their authenticator app, then chooses a password of their own.",
        "Reset the password",
    ),
    "remove-detective": (
        "Remove {name}'s detective role?",
        "{name} is signed out at once and no longer reads or answers tips. Only the server's command line "
        "can give the role back.",
        "Remove the detective role",
    ),
}
USER_ACTIONS_DONE = {
    "disable": "{name}'s account is disabled; their sessions ended.",
    "enable": "{name}'s account is enabled; they can sign in again.",
    "reset-2fa": "{name}'s authenticator is reset; their sessions ended, and they set up a new one at next sign-in.",
    "unlock": "{name}'s account is unlocked.",
    "grant-admin": "{name} is now an administrator; their sessions ended.",
    "remove-admin": "{name} is no longer an administrator; their sessions ended.",
    "remove-detective": "{name} is no longer a detective; their sessions ended.",
}


def _user_action_done() -> str | None:
    """What the last action did, from the URL it redirected to; said only when the account is now in
    that state, so that a crafted link cannot make the console claim something that did not happen."""
    action, username = request.args.get("done", ""), request.args.get("user", "")
    user = next((u for u in accounts.list_users(_ctx()) if u.username == username), None)
    if action not in USER_ACTIONS_DONE or user is None:
        return None
    now = _ctx().now()
    holds = {
        "disable": user.disabled,
        "enable": not user.disabled,
        "reset-2fa": user.totp_secret_ct is None,
        "unlock": user.locked_until is None or user.locked_until <= now,
        "grant-admin": Role.ADMIN in user.role_set,
        "remove-admin": Role.ADMIN not in user.role_set,
        "remove-detective": Role.DETECTIVE not in user.role_set,
    }
    return USER_ACTIONS_DONE[action].format(name=username) if holds[action] else None


@bp.get("/admin/users/<username>/<action>")
@page(role=Role.ADMIN)
def admin_user_confirm(username: str, action: str) -> ResponseReturnValue:
    """Ask before an account action; the form on this page is the one that acts."""
    if action not in USER_ACTION_QUESTIONS or username not in {u.username for u in accounts.list_users(_ctx())}:
        abort(404)
    question, consequence, verb = USER_ACTION_QUESTIONS[action]
    return render_template(
        "console/admin_confirm.html",
        title=question.format(name=username),
        consequence=consequence.format(name=username),
        verb=verb,
        action_url=url_for("console.admin_user_action", username=username, action=action),
        fields={},
        back=url_for("console.admin_users"),
    )


@bp.post("/admin/users/<username>/<action>")
@page(role=Role.ADMIN)
def admin_user_action(username: str, action: str) -> ResponseReturnValue:
    actor = _visit().username
    if action not in USER_ACTIONS:
        abort(404)
    if action in NOT_ON_ONESELF and accounts.normalise_username(username) == actor:
        return redirect(url_for("console.admin_users", **_said(error=NOT_ON_ONESELF[action])))
    try:
        USER_ACTIONS[action](_ctx(), username, actor)
    except accounts.ShellOnly as refused:  # audited by the service
        return _accounts_page(error=str(refused)), 403
    except accounts.UserError as error:
        return redirect(url_for("console.admin_users", **_said(error=str(error))))
    return redirect(url_for("console.admin_users", done=action, user=username))


@bp.post("/admin/users/<username>/reset-password")
@page(role=Role.ADMIN)
def admin_user_reset_password(username: str) -> ResponseReturnValue:
    """A new one-time password for an admin-only account, shown once on this response (never in a
    URL or the log); a detective's is refused (ShellOnly): the admin would read the password."""
    ctx, actor = _ctx(), _visit().username
    if accounts.normalise_username(username) == actor:  # as the service finds the account: ALEX is alex
        return redirect(url_for("console.admin_users", **_said(error=NOT_ON_ONESELF["reset-password"])))
    password = accounts.generate_password()
    try:
        user = accounts.reset_password_from_console(ctx, username, password, actor=actor)
    except accounts.ShellOnly as refused:  # audited by the service
        return _accounts_page(error=str(refused)), 403
    except accounts.UserError as error:
        return redirect(url_for("console.admin_users", **_said(error=str(error))))
    return _accounts_page(reset=user.username, password=password)


@bp.get("/admin/keys")
@page(role=Role.ADMIN)
def admin_keys() -> ResponseReturnValue:
    from tipline.services import rotation

    runtime = current_runtime()
    audit.log_event(runtime.ctx, "keys.status", actor=_visit().username)
    return render_template(
        "console/admin_keys.html",
        keys=rotation.key_versions(runtime.ctx),
        rotations=rotation.recent(runtime.ctx),
        purposes=rotation.ROTATABLE,
        notice=_heard("notice"),
        error=_heard("error"),
    )


@bp.get("/admin/keys/rotate")
@page(role=Role.ADMIN)
def admin_keys_confirm() -> ResponseReturnValue:
    """Ask before a rotation (the keys page's form comes here); the form on this page starts it."""
    from tipline.services import rotation

    purpose = request.args.get("purpose", "")
    if purpose not in rotation.ROTATABLE:
        return redirect(url_for("console.admin_keys", **_said(error="Choose a key purpose to rotate.")))
    reencrypt = request.args.get("reencrypt") == "1"
    mode = "re-encrypt every row under a fresh data key" if reencrypt else "re-wrap existing rows in the background"
    return render_template(
        "console/admin_confirm.html",
        title=f"Rotate the {purpose} key?",
        consequence=f"A new {purpose} key version becomes primary at once; the tip line will {mode} while it "
        "keeps working. This cannot be undone, but the old version stays until you retire it.",
        verb="Rotate the key",
        action_url=url_for("console.admin_keys_rotate"),
        fields={"purpose": purpose, **({"reencrypt": "1"} if reencrypt else {})},
        back=url_for("console.admin_keys"),
    )


@bp.post("/admin/keys/rotate")
@page(role=Role.ADMIN)
def admin_keys_rotate() -> ResponseReturnValue:
    from tipline.services import rotation

    runtime = current_runtime()
    purpose = request.form.get("purpose", "")
    reencrypt = request.form.get("reencrypt") == "1"
    try:
        rotation.start(
            runtime.ctx,
            rotation.master_key(runtime.ctx),
            purpose,
            reencrypt=reencrypt,
            actor=_visit().username,
        )
    except rotation.RotationError as error:
        return redirect(url_for("console.admin_keys", **_said(error=str(error))))
    runtime.wake_dispatcher()
    return redirect(
        url_for("console.admin_keys", **_said(notice=f"Rotation of {purpose} started; progress shows below."))
    )


@bp.get("/admin/activity")
@page(role=Role.ADMIN)
def admin_activity() -> ResponseReturnValue:
    """New senders per hour over the last day (counts only), with a warning for a burst."""
    from tipline.services import abuse

    return render_template("console/admin_activity.html", activity=abuse.new_senders(_ctx()))


def _zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(current_runtime().settings.timezone)


@bp.get("/admin/audit")
@page(role=Role.ADMIN)
def admin_audit() -> ResponseReturnValue:
    """The chain's verification, then the entries 50 to a page, filtered by action, actor and dates."""
    ctx = _ctx()
    verification = audit.verify(ctx)
    audit.log_event(ctx, "audit.verify", actor=_visit().username, outcome="ok" if verification.intact else "tampered")
    query = audit.Query.from_args(request.args, _zone())
    found = audit.search(ctx, query)
    return render_template(
        "console/admin_audit.html",
        verification=verification,
        found=found,
        query=query,
        choices=audit.choices(ctx),
        page_url=lambda number: url_for("console.admin_audit") + "?" + urlencode(found.query.args(page=number)),
    )


# Alerts (issue 13 part 2): each person sets their own email and choice; the list's tab counts new tips ---


@bp.get("/alerts")
@page(role=Role.DETECTIVE)  # admin-only accounts read no tips, so get no tip alerts
def alerts_page() -> ResponseReturnValue:
    return _alerts_form(notice=_heard("notice"))


def _alerts_form(*, notice: str | None = None, error: str | None = None, email: str | None = None) -> str:
    ctx = _ctx()
    mine = alerts.preferences(ctx, _visit().username)
    return render_template(
        "console/alerts.html",
        prefs=mine,
        email=mine.email if email is None else email,
        choices=list(AlertChoice),
        escalate_minutes=ctx.settings.escalate_minutes,
        mail_on=ctx.settings.smtp is not None,
        notice=notice,
        error=error,
    )


@bp.post("/alerts")
@page(role=Role.DETECTIVE)  # admin-only accounts read no tips, so get no tip alerts
def alerts_save() -> ResponseReturnValue:
    """A person changes their own alerts only (the username comes from the session, never the form)."""
    me, email = _visit().username, request.form.get("email", "")
    try:
        alerts.set_preferences(_ctx(), me, email=email, choice=request.form.get("alerts"), actor=me)
    except alerts.PreferenceError as error:
        return _alerts_form(error=str(error), email=email), 400
    return redirect(url_for("console.alerts_page", **_said(notice="Your alert settings are saved.")))


@bp.get("/api/alerts/fresh")
@page(role=Role.DETECTIVE, touch=False)
def api_fresh() -> ResponseReturnValue:
    """Tips a detective can see above `since` (an id): references and urgency only, for the tab title
    and desktop notifications. Polled, so it does not keep an idle session alive."""
    since = _number(request.args.get("since", "0")) or 0
    newest, fresh = alerts.fresh_since(_ctx(), since)
    return jsonify(newest=newest, fresh=[{"id": f.id, "reference": f.reference, "urgent": f.urgent} for f in fresh])


@bp.get("")
def root() -> ResponseReturnValue:
    return redirect(url_for("console.tips"))


@bp.errorhandler(HTTPException)
def _error(error: HTTPException) -> ResponseReturnValue:
    code = error.code or 500
    titles = {400: "That request could not be used", 403: "Not allowed", 404: "Not found", 405: "Not allowed"}
    messages = {
        403: "Your account does not have the role this page needs.",
        404: "There is nothing here. Check the tip reference.",
    }
    message = messages.get(code) or (error.description if code < 500 else "Something went wrong.")
    return render_template("console/error.html", code=code, title=titles.get(code, "Error"), message=message), code
