"""Who is calling and what they may do. Every request but the health checks and the API's own
documents carries `Authorization: Bearer <token>` (`api.tokens`). The role decides the
operations (`allow`); for a single loan, `loan_access` decides whether the caller may see it
at all: a collector only loans they hold a task for, an agency only loans placed with it and
only while placed (any other loan is 404 to an agency, so it cannot learn which loans exist).

    role        may
    platform    hand over, pay, status, list, stats, webhooks
    collector   tasks of their queues, outcomes, negotiation, status of loans they hold tasks for
    supervisor  all a collector may, on every loan, plus list, stats, court reports and audit
    agency      status, reports and contact requests for loans placed with it
    auditor     status and audit, read only
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel import Session, or_, select

from api.problems import ApiError
from api.state import ApiState, State, in_thread
from api.tokens import find_token
from db.access import ApiToken
from db.tables import PlacementRow, TaskRow


@dataclass(frozen=True)
class Principal:
    """The holder of the token: their name is the actor on the timeline and in the audit record."""

    name: str
    role: str
    token_id: str
    agency: str = ""
    queues: tuple[str, ...] = ()

    @property
    def actor(self) -> str:
        """How the loan records what they did: the role and the name (`collector:li.wei`)."""
        return f"{self.role}:{self.name}"


def _principal(row: ApiToken) -> Principal:
    queues = tuple(q for q in row.queues.split(",") if q)
    return Principal(name=row.name, role=row.role, token_id=row.token_id, agency=row.agency, queues=queues)


async def authenticate(request: Request, state: State) -> Principal:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401, "send a bearer token: Authorization: Bearer <token>", headers={"WWW-Authenticate": "Bearer"}
        )
    principal = await _lookup(state, token.strip())
    if principal is None:
        raise ApiError(401, "the token is unknown or revoked", headers={"WWW-Authenticate": "Bearer"})
    return principal


async def _lookup(state: ApiState, token: str) -> Principal | None:
    """The token's principal, from a short-lived cache (API_TOKEN_CACHE_SECONDS) or the table."""
    ttl = state.settings.api_token_cache_seconds
    hit = state.token_cache.get(token)
    if hit is not None and time.monotonic() - hit[0] < ttl:
        return hit[1]
    row = await in_thread(find_token, state.engine, token)
    principal = _principal(row) if row is not None else None
    if ttl > 0:
        if len(state.token_cache) > 10_000:
            state.token_cache.clear()
        state.token_cache[token] = (time.monotonic(), principal)
    return principal


Caller = Annotated[Principal, Depends(authenticate)]


def allow(*roles: str) -> object:
    """A dependency admitting only these roles (403 for the others)."""

    async def check(principal: Caller) -> Principal:
        if principal.role not in roles:
            raise ApiError(403, f"a {principal.role} token may not do this (allowed: {', '.join(roles)})")
        return principal

    return Depends(check)


def _holds_task(state: ApiState, principal: Principal, loan_id: str) -> bool:
    with Session(state.engine) as session:
        query = select(TaskRow.id).where(TaskRow.loan_id == loan_id, TaskRow.status == "open")
        mine = or_(TaskRow.assignee == principal.name, TaskRow.queue.in_(principal.queues))  # type: ignore[attr-defined]
        return session.exec(query.where(mine).limit(1)).first() is not None


def placed_with(state: ApiState, agency: str, loan_id: str, placement_id: str | None = None) -> bool:
    """Whether the loan is with `agency` now (placed, not recalled, recall date not passed)."""
    now = datetime.now(UTC)
    with Session(state.engine) as session:
        query = select(PlacementRow).where(
            PlacementRow.loan_id == loan_id,
            PlacementRow.agency == agency,
            PlacementRow.recalled_at == None,  # noqa: E711
        )
        if placement_id is not None:
            query = query.where(PlacementRow.placement_id == placement_id)
        return any(row.recall_at > now for row in session.exec(query).all())


async def loan_access(state: ApiState, principal: Principal, loan_id: str) -> None:
    """Raise unless the caller may act on this loan (its role already allowed the operation)."""
    if principal.role in ("platform", "supervisor", "auditor"):
        return
    if principal.role == "collector":
        if not await in_thread(_holds_task, state, principal, loan_id):
            raise ApiError(403, "a collector may act only on loans they hold an open task for")
        return
    if principal.role == "agency":
        if not await in_thread(placed_with, state, principal.agency, loan_id):
            raise ApiError(404, f"no loan {loan_id} is placed with agency {principal.agency}")
        return
    raise ApiError(403, f"a {principal.role} token may not act on loans")
