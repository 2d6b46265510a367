"""Who is signed in to the desk, and that a form came from the desk's own page.

A session lives in one cookie, `desk_session`, signed with DESK_SECRET_KEY by `itsdangerous`
(HMAC-SHA1 over the JSON; the project already trusts it through FastAPI's ecosystem and it is
small). Not Starlette's SessionMiddleware: that would put a session on every route of the app,
the API's included, and it knows only an absolute lifetime, while the desk wants an idle one and
a way to end a user's sessions. So the cookie holds the user's name, their `session_epoch`
(raised by an unlock: every older cookie stops working), the session's CSRF token and when the
user was last seen; it is signed, http-only, SameSite=Lax, and sent again with each page so the
idle clock restarts (DESK_IDLE_MINUTES). Nothing else of the user is in it: role and queues are
read from `desk_users` on every request, so a change takes effect at once.

CSRF: every POST carries the session's token, as a hidden `csrf` field or an `X-CSRF-Token`
header (htmx sends it from the page's `hx-headers`); a POST without the right one changes
nothing. The sign-in form, before any session, is protected the same way by a token in a
second signed cookie (`desk_signin`), and SameSite=Lax keeps other sites' forms from sending
either cookie."""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass, replace
from datetime import datetime

from itsdangerous import BadSignature, URLSafeSerializer

SESSION_COOKIE = "desk_session"
SIGNIN_COOKIE = "desk_signin"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class DeskSession:
    """What the session cookie says: who, which epoch of theirs, the CSRF token, last seen."""

    user: str
    epoch: int
    csrf: str
    seen: float
    """Unix time of the latest request (the idle clock)."""

    def touched(self, now: datetime) -> DeskSession:
        return replace(self, seen=now.timestamp())


class CookieCodec:
    """Signs and checks the desk's cookies with one secret (each kind with its own salt, so a
    cookie of one kind is never taken for the other)."""

    def __init__(self, secret: str) -> None:
        if len(secret) < 32:
            raise ValueError("the desk's secret key needs at least 32 characters")
        self._session = URLSafeSerializer(secret, salt="desk-session")
        self._signin = URLSafeSerializer(secret, salt="desk-signin")

    def session(self, s: DeskSession) -> str:
        return self._session.dumps({"u": s.user, "e": s.epoch, "c": s.csrf, "t": s.seen})

    def read_session(self, value: str | None) -> DeskSession | None:
        """The session a cookie holds, or None (missing, tampered with, or malformed)."""
        if not value:
            return None
        try:
            data = self._session.loads(value)
            return DeskSession(user=str(data["u"]), epoch=int(data["e"]), csrf=str(data["c"]), seen=float(data["t"]))
        except (BadSignature, KeyError, TypeError, ValueError):
            return None

    def signin_token(self, token: str) -> str:
        return self._signin.dumps(token)

    def read_signin_token(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            return str(self._signin.loads(value))
        except BadSignature:
            return None


def new_session(user: str, epoch: int, now: datetime) -> DeskSession:
    """A fresh session (a new CSRF token) for a user who just signed in."""
    return DeskSession(user=user, epoch=epoch, csrf=secrets.token_urlsafe(32), seen=now.timestamp())


def new_token() -> str:
    return secrets.token_urlsafe(32)


def idle_expired(s: DeskSession, now: datetime, idle_seconds: float) -> bool:
    """Whether the session has been idle longer than allowed."""
    return now.timestamp() - s.seen > idle_seconds


def same_token(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a CSRF token."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
