"""What every desk page shares: the API's state (Temporal client, database engine, settings),
the cookie codec, the templates, the lock-out policy and the idle limit (one `Desk` per app, on
`app.state.desk`); who is signed in (`visitor`, a dependency that also checks the CSRF token of
every POST); and `render`, which fills a template in the visitor's language and sends the
session cookie again (the idle clock restarts with each page)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs
from zoneinfo import ZoneInfo

from fastapi import Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates
from temporalio.service import RPCError

from api.auth import Principal
from api.problems import ApiError
from api.state import ApiState, in_thread
from client import LoanNotFound, RequestPending
from db.desk_users import DeskUser
from desk.i18n import translator
from desk.sessions import (
    CSRF_FIELD,
    CSRF_HEADER,
    SESSION_COOKIE,
    CookieCodec,
    DeskSession,
    idle_expired,
    same_token,
)
from desk.users import find_user
from infra.loaders import load_holidays, load_policy, load_ruleset
from models.lockout import LockoutPolicy
from models.policy import Policy
from models.requests import ConductRules

HERE = Path(__file__).resolve().parent
PREFIX = "/desk"
MAX_FORM_BYTES = 64 * 1024


@dataclass
class Desk:
    api: ApiState
    codec: CookieCodec
    templates: Jinja2Templates
    lockout: LockoutPolicy
    idle_seconds: float
    secure_cookies: bool
    zone: ZoneInfo
    """The business day's zone (SCAN_TIMEZONE): what "today" means on the supervisor's page."""
    _policies: dict[str, Policy | None] = field(default_factory=dict)
    _rules: dict[str, ConductRules | None] = field(default_factory=dict)

    def policy(self, name: str) -> Policy | None:
        """The policy file `name` as it is now (None if it cannot be read), read once per process."""
        if name not in self._policies:
            try:
                self._policies[name] = load_policy(name, self.api.settings.policies_dir)
            except (ValueError, OSError):
                self._policies[name] = None
        return self._policies[name]

    def rules(self, policy_name: str) -> ConductRules | None:
        """The conduct rules the policy names, with its holidays (None if they cannot be read)."""
        if policy_name not in self._rules:
            policy = self.policy(policy_name)
            rules = None
            if policy is not None:
                try:
                    folder = self.api.settings.rulesets_dir
                    ruleset = load_ruleset(policy.conduct.ruleset, folder, policy.conduct.overrides)
                    holidays = load_holidays(ruleset.hours.holidays, folder)
                    rules = ConductRules(ruleset=ruleset, holidays=sorted(holidays))
                except (ValueError, OSError):
                    rules = None
            self._rules[policy_name] = rules
        return self._rules[policy_name]


def desk_state(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


DeskDep = Annotated[Desk, Depends(desk_state)]


class SignInRequired(Exception):
    """No valid session: the page asks to sign in (`expired`: it ended for being idle)."""

    def __init__(self, expired: bool = False) -> None:
        super().__init__("sign in")
        self.expired = expired


class CsrfRefused(Exception):
    """A POST without the session's CSRF token: refused, nothing changed."""


@dataclass
class Visitor:
    """The signed-in user: their row, the principal the API's rules know them as, the session
    (touched: seen now) and the POSTed form, if any."""

    user: DeskUser
    principal: Principal
    session: DeskSession
    form: dict[str, str]

    @property
    def language(self) -> str:
        return self.user.language


def principal_of(user: DeskUser) -> Principal:
    """The desk user as `api.auth` knows callers: so the same access rules apply, and the loan's
    timeline names them `<role>:<name>`."""
    queues = tuple(q for q in user.queues.split(",") if q)
    return Principal(name=user.name, role=user.role, token_id="desk", queues=queues)


async def read_form(request: Request) -> dict[str, str]:
    """A POSTed urlencoded form (the desk's forms and htmx send nothing else), the last value of
    each field. Parsed here rather than by python-multipart: the desk uploads no files."""
    if request.method != "POST":
        return {}
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise ApiError(413, "the form is too large")
    if "application/x-www-form-urlencoded" not in request.headers.get("content-type", "") and body:
        raise ApiError(415, "send the form urlencoded")
    parsed = parse_qs(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    return {key: values[-1] for key, values in parsed.items()}


async def visitor(request: Request, desk: DeskDep) -> Visitor:
    """The signed-in user of this request; raises SignInRequired (no, a tampered, an idle or an
    ended session) or CsrfRefused (a POST without the session's token)."""
    now = datetime.now(UTC)
    session = desk.codec.read_session(request.cookies.get(SESSION_COOKIE))
    if session is None:
        raise SignInRequired()
    if idle_expired(session, now, desk.idle_seconds):
        raise SignInRequired(expired=True)
    user = await in_thread(find_user, desk.api.engine, session.user)
    if user is None or user.session_epoch != session.epoch:
        raise SignInRequired()
    form = await read_form(request)
    found = Visitor(user=user, principal=principal_of(user), session=session.touched(now), form=form)
    request.state.visitor = found
    if request.method == "POST" and not (
        same_token(session.csrf, request.headers.get(CSRF_HEADER)) or same_token(session.csrf, form.get(CSRF_FIELD))
    ):
        raise CsrfRefused()
    return found


Me = Annotated[Visitor, Depends(visitor)]


def set_session_cookie(response: Response, desk: Desk, session: DeskSession) -> None:
    response.set_cookie(
        SESSION_COOKIE,
        desk.codec.session(session),
        httponly=True,
        samesite="lax",
        secure=desk.secure_cookies,
        path=PREFIX,
    )


def render(
    request: Request, desk: Desk, template: str, context: dict[str, Any], *, me: Visitor | None, status: int = 200
) -> HTMLResponse:
    """The page `template` in the visitor's language (or the one asked for), not cached, with
    the session cookie sent again."""
    language = me.language if me is not None else str(context.get("language", "zh"))
    base = {
        "t": translator(language),
        "language": language,
        "me": me,
        "csrf": me.session.csrf if me is not None else context.get("csrf", ""),
        "prefix": PREFIX,
    }
    response = desk.templates.TemplateResponse(request, template, base | context, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    if me is not None:
        set_session_cookie(response, desk, me.session)
    return response


def redirect(url: str, request: Request) -> Response:
    """Go to `url` after a POST: htmx follows HX-Redirect, a plain form a 303."""
    if request.headers.get("hx-request"):
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def make_templates() -> Jinja2Templates:
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals["money"] = lambda v: f"{v:,.2f}" if v is not None else ""
    return templates


_PAGE_ERRORS = {403: "forbidden", 404: "not_found", 503: "unavailable"}


class DeskRoute(APIRoute):
    """A desk route: an error the API's code raises (forbidden, not found, a loan that does not
    answer...) becomes a page in the visitor's language instead of a problem+json document."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as exc:
                return error_page(request, exc.status, exc.reason or exc.detail)
            except LoanNotFound as exc:
                return error_page(request, 404, str(exc))
            except (RequestPending, RPCError):
                return error_page(request, 503, "")

        return run


def error_page(request: Request, status: int, detail: str, *, message: str = "") -> HTMLResponse:
    """An error as a page: its title by status, `detail` as the API's code said it, `message`
    (a key of `desk.i18n`) in the visitor's language."""
    desk: Desk = request.app.state.desk
    me: Visitor | None = getattr(request.state, "visitor", None)
    title = _PAGE_ERRORS.get(status, "bad_input")
    context = {"title": title, "detail": detail, "message": message}
    return render(request, desk, "error.html", context, me=me, status=status)
