"""Negotiation: promises, plans, settlements, hardship, disputes, stops and opt-outs. Each body is
the domain's request type (`models.arrangements`, `models.events`); who made the request is the
caller (the body's `made_by`/`reported_by`... is replaced by the token's holder), so the loan's
timeline and audit record name them (`api.work.negotiate`, which the desk calls too). Accepted:
201 with the decision; refused by the policy or the loan's situation: 422 with the reason, and
nothing changed."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from api.auth import Principal, allow
from api.marks import mark
from api.problems import problem_responses
from api.state import State
from api.work import NEGOTIATIONS, Negotiation, negotiate
from client import get_status
from models.arrangements import Decision

router = APIRouter(prefix="/v1", tags=["negotiation"])

Negotiator = Annotated[Principal, allow("collector", "supervisor")]
LoanId = Annotated[str, Path(min_length=1, max_length=128)]


def _route(path: str, what: Negotiation) -> None:
    async def post(loan_id: LoanId, body: Any, state: State, principal: Negotiator) -> Decision:
        decision = await negotiate(state, principal, loan_id, path, body)
        # the desk's queue orders by the new dates (the desk marks on its own, from the page it shows next)
        await mark(state, await get_status(state.temporal, loan_id))
        return decision

    post.__annotations__["body"] = what.body_type
    post.__name__ = f"post_{path.strip('/').replace('/', '_').replace('-', '_')}"
    router.add_api_route(
        f"/loans/{{loan_id}}/{path}",
        post,
        methods=["POST"],
        status_code=201,
        response_model=Decision,
        responses=problem_responses(401, 403, 404, 422, 503),
        summary=what.summary,
        description=(what.send.__doc__ or "").strip(),
    )


for _path, _what in NEGOTIATIONS.items():
    _route(_path, _what)
