"""Signing in and out, and the language of the pages. A wrong name or password is answered the
same way whichever was wrong; repeated wrong passwords lock the account (`desk.users.sign_in`).
The sign-in form carries a token from a signed cookie of its own (`desk.sessions`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from api.state import in_thread
from desk.i18n import LANGUAGES
from desk.sessions import CSRF_FIELD, SESSION_COOKIE, SIGNIN_COOKIE, new_session, new_token, same_token
from desk.state import PREFIX, DeskDep, DeskRoute, Me, read_form, redirect, render, set_session_cookie
from desk.users import set_language, sign_in

router = APIRouter(prefix=PREFIX, route_class=DeskRoute, include_in_schema=False)


def _language(request: Request, asked: str | None) -> str:
    """The sign-in page's language: the one asked for, else the browser's first choice of ours."""
    if asked in LANGUAGES:
        return str(asked)
    accept = request.headers.get("accept-language", "").lower()
    return "en" if accept.startswith("en") else "zh"


def _signin_page(
    request: Request, desk: DeskDep, language: str, *, message: str = "", until: str = "", status: int = 200
) -> HTMLResponse:
    token = new_token()
    page = render(
        request,
        desk,
        "signin.html",
        {"language": language, "csrf": token, "message": message, "until": until},
        me=None,
        status=status,
    )
    page.set_cookie(
        SIGNIN_COOKIE,
        desk.codec.signin_token(token),
        httponly=True,
        samesite="lax",
        secure=desk.secure_cookies,
        path=PREFIX,
    )
    return page


@router.get("/login", response_class=HTMLResponse)
async def signin_form(
    request: Request,
    desk: DeskDep,
    lang: Annotated[str | None, Query(max_length=8)] = None,
    expired: Annotated[int, Query(ge=0, le=1)] = 0,
    out: Annotated[int, Query(ge=0, le=1)] = 0,
) -> HTMLResponse:
    message = "expired" if expired else "signed_out" if out else ""
    return _signin_page(request, desk, _language(request, lang), message=message)


@router.post("/login", response_class=HTMLResponse)
async def signin(request: Request, desk: DeskDep) -> Response:
    form = await read_form(request)
    language = _language(request, form.get("lang"))
    expected = desk.codec.read_signin_token(request.cookies.get(SIGNIN_COOKIE))
    if expected is None or not same_token(expected, form.get(CSRF_FIELD)):
        return _signin_page(request, desk, language, message="form_expired", status=403)
    name, password = form.get("name", "")[:64], form.get("password", "")[:1024]
    now = datetime.now(UTC)
    outcome = await in_thread(sign_in, desk.api.engine, name, password, now, desk.lockout)
    if outcome.user is None:
        if outcome.refused == "locked" and outcome.locked_until is not None:
            until = outcome.locked_until.astimezone(desk.zone).strftime("%Y-%m-%d %H:%M")
            return _signin_page(request, desk, language, message="locked", until=until, status=423)
        return _signin_page(request, desk, language, message="wrong", status=401)
    response = RedirectResponse(f"{PREFIX}/", status_code=303)
    set_session_cookie(response, desk, new_session(outcome.user.name, outcome.user.session_epoch, now))
    response.delete_cookie(SIGNIN_COOKIE, path=PREFIX)
    return response


@router.post("/logout")
async def signout(request: Request, me: Me) -> Response:
    response = redirect(f"{PREFIX}/login?out=1", request)
    response.delete_cookie(SESSION_COOKIE, path=PREFIX)
    return response


@router.post("/language")
async def choose_language(request: Request, desk: DeskDep, me: Me) -> Response:
    """Keep the user's choice (their next sign-in opens in it too) and show the page again."""
    language = me.form.get("language", "")
    if language in LANGUAGES:
        await in_thread(set_language, desk.api.engine, me.user.name, language)
    back = me.form.get("back", "")
    response = redirect(back if back.startswith(f"{PREFIX}/") else f"{PREFIX}/", request)
    set_session_cookie(response, desk, me.session)
    return response
