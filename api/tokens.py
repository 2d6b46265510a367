"""Bearer tokens: made (the token is shown once and stored only as its SHA-256), listed, revoked
and checked. `starter.py token create|list|revoke` and the tests call these.

A token reads `lc_<token id>_<secret>`: the token id names it in lists and logs (never the
secret), the secret is 32 random bytes."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from db import migrate
from db.access import ApiToken
from db.store import make_engine

ROLES = ("platform", "collector", "supervisor", "agency", "auditor")
"""What a token may do (README, "HTTP API"; `api.auth`)."""

PREFIX = "lc_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(
    database_url: str, name: str, role: str, agency: str | None = None, *, queues: Iterable[str] = ()
) -> str:
    """Make a token for `name` with `role` and return it (the only time it is shown). `agency`:
    the agency an `agency` token acts for (required for that role, refused for the others);
    `queues`: the task queues a collector works. Brings the database's schema up to date first."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}: one of {', '.join(ROLES)}")
    if not name.strip():
        raise ValueError("a token needs a name (who holds it)")
    if (role == "agency") != bool(agency):
        raise ValueError("an agency token needs --agency, and only an agency token takes one")
    queue_list = [q.strip() for q in queues if q.strip()]
    if any("," in q for q in queue_list):
        raise ValueError("a queue name cannot contain a comma")
    migrate.upgrade(database_url)
    token_id = secrets.token_hex(6)
    token = f"{PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            session.add(
                ApiToken(
                    token_id=token_id,
                    token_hash=hash_token(token),
                    name=name.strip(),
                    role=role,
                    agency=agency or "",
                    queues=",".join(queue_list),
                )
            )
            session.commit()
    finally:
        engine.dispose()
    return token


def revoke_token(database_url: str, token_id: str) -> bool:
    """Revoke the token with this id (its public part); False if there is none or it was revoked."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            row = session.exec(select(ApiToken).where(ApiToken.token_id == token_id.removeprefix(PREFIX))).first()
            if row is None or row.revoked_at is not None:
                return False
            row.revoked_at = datetime.now(UTC)
            session.add(row)
            session.commit()
            return True
    finally:
        engine.dispose()


def list_tokens(database_url: str) -> list[dict[str, Any]]:
    """Every token (never its secret), newest first."""
    engine = make_engine(database_url, pool_size=1, max_overflow=0)
    try:
        with Session(engine) as session:
            rows = session.exec(select(ApiToken).order_by(col(ApiToken.id).desc())).all()
    finally:
        engine.dispose()
    return [
        {
            "token_id": r.token_id,
            "name": r.name,
            "role": r.role,
            "agency": r.agency,
            "queues": r.queues,
            "created_at": r.created_at.isoformat(timespec="seconds"),
            "revoked_at": r.revoked_at.isoformat(timespec="seconds") if r.revoked_at else "",
        }
        for r in rows
    ]


def find_token(engine: Engine, token: str) -> ApiToken | None:
    """The live token row for a presented token, or None (unknown, malformed or revoked)."""
    if not token.startswith(PREFIX) or len(token) > 200:
        return None
    with Session(engine) as session:
        row = session.exec(select(ApiToken).where(ApiToken.token_hash == hash_token(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row
