"""Mounting the desk on the API's app (`mount`, called by `api.create_app`): its pages under
/desk (left out of the OpenAPI document: they are pages, not API), its static files (htmx,
vendored, and the style sheet: nothing is fetched from elsewhere at run time) under
/desk/static, and / sends a browser to the desk. The desk shares the API's state: the same
Temporal client, database engine and settings, so it needs nothing started of its own."""

from __future__ import annotations

import os
import secrets
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles

from api.state import ApiState
from desk import loan, queue, signin, supervisor
from desk.sessions import CookieCodec
from desk.state import HERE, PREFIX, CsrfRefused, Desk, SignInRequired, error_page, make_templates
from infra.settings import Settings
from models.lockout import LockoutPolicy


def secret_key(cfg: Settings) -> str:
    """DESK_SECRET_KEY, else the key kept in DESK_SECRET_FILE, made there (mode 600) the first
    time: `make run` and a single process need no setting; replicas set the same key."""
    given = cfg.desk_secret_key.get_secret_value()
    if given:
        return given
    path = cfg.desk_secret_file
    if path.is_file():
        kept = path.read_text(encoding="utf-8").strip()
        if len(kept) >= 32:
            return kept
    path.parent.mkdir(parents=True, exist_ok=True)
    made = secrets.token_urlsafe(48)
    fresh = path.with_name(f".{path.name}.{os.getpid()}")
    fresh.write_text(made + "\n", encoding="utf-8")
    os.chmod(fresh, 0o600)
    os.replace(fresh, path)  # whole or not at all: another process never reads half a key
    return path.read_text(encoding="utf-8").strip()


def mount(app: FastAPI, state: ApiState, *, secret: str | None = None) -> Desk:
    """Serve the desk from `app`, over the API's `state`. `secret`: the cookie-signing key
    (None: `secret_key(settings)`)."""
    cfg = state.settings
    desk = Desk(
        api=state,
        codec=CookieCodec(secret or secret_key(cfg)),
        templates=make_templates(),
        lockout=LockoutPolicy(max_failures=cfg.desk_max_failures, lock_minutes=cfg.desk_lock_minutes),
        idle_seconds=cfg.desk_idle_minutes * 60.0,
        secure_cookies=cfg.desk_secure_cookies,
        zone=ZoneInfo(cfg.scan_timezone),
    )
    app.state.desk = desk
    for module in (signin, queue, loan, supervisor):
        app.include_router(module.router)
    app.mount(f"{PREFIX}/static", StaticFiles(directory=HERE / "static"), name="desk-static")

    @app.exception_handler(SignInRequired)
    async def _sign_in(request: Request, exc: SignInRequired) -> Response:
        url = f"{PREFIX}/login" + ("?expired=1" if exc.expired else "")
        if request.headers.get("hx-request"):
            return Response(status_code=200, headers={"HX-Redirect": url})
        return RedirectResponse(url, status_code=303)

    @app.exception_handler(CsrfRefused)
    async def _csrf(request: Request, exc: CsrfRefused) -> Response:
        return error_page(request, 403, "", message="form_expired")

    @app.get("/", include_in_schema=False)
    async def _root() -> RedirectResponse:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    return desk
