"""Negotiation: promises, plans, settlements, hardship, disputes, stops and opt-outs. Each body is
the domain's request type (`models.arrangements`, `models.events`); who made the request is the
caller (the body's `made_by`/`reported_by`... is replaced by the token's holder), so the loan's
timeline and audit record name them. Accepted: 201 with the decision; refused by the policy or
the loan's situation: 422 with the reason, and nothing changed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Path
from pydantic import BaseModel
from temporalio.client import Client

from api.auth import Principal, allow, loan_access
from api.problems import ApiError, problem_responses
from api.state import State
from client import (
    offer_settlement,
    opt_out,
    promise_to_pay,
    propose_plan,
    raise_dispute,
    report_hardship,
    resolve_dispute,
    review_hardship,
    stop_collection,
)
from models.arrangements import (
    Decision,
    DisputeRequest,
    DisputeResolution,
    HardshipDecision,
    HardshipReport,
    PlanProposal,
    PromiseRequest,
    SettlementOffer,
    StopRequest,
)
from models.events import OptOutRequest

router = APIRouter(prefix="/v1", tags=["negotiation"])

Negotiator = Annotated[Principal, allow("collector", "supervisor")]
LoanId = Annotated[str, Path(min_length=1, max_length=128)]

Send = Callable[[Client, str, Any], Awaitable[Decision]]


def _route(path: str, body_type: type[BaseModel], send: Send, actor_field: str, summary: str) -> None:
    async def negotiate(loan_id: LoanId, body: Any, state: State, principal: Negotiator) -> Decision:
        await loan_access(state, principal, loan_id)
        request = body.model_copy(update={actor_field: principal.actor})
        decision = await send(state.temporal, loan_id, request)
        if not decision.accepted:
            raise ApiError(422, decision.reason or "refused", title="Refused", reason=decision.reason)
        return decision

    negotiate.__annotations__["body"] = body_type
    negotiate.__name__ = f"post_{path.strip('/').replace('/', '_').replace('-', '_')}"
    router.add_api_route(
        f"/loans/{{loan_id}}/{path}",
        negotiate,
        methods=["POST"],
        status_code=201,
        response_model=Decision,
        responses=problem_responses(401, 403, 404, 422, 503),
        summary=summary,
        description=(send.__doc__ or "").strip(),
    )


_route("promises", PromiseRequest, promise_to_pay, "made_by", "Record a promise to pay")
_route("plans", PlanProposal, propose_plan, "made_by", "Propose or renegotiate an instalment plan")
_route("settlements", SettlementOffer, offer_settlement, "made_by", "Offer a discounted settlement")
_route("hardship", HardshipReport, report_hardship, "reported_by", "Report hardship")
_route("hardship/review", HardshipDecision, review_hardship, "decided_by", "Apply a hardship review's outcome")
_route("disputes", DisputeRequest, raise_dispute, "raised_by", "Open a dispute")
_route("disputes/resolution", DisputeResolution, resolve_dispute, "resolved_by", "Resolve the open dispute")
_route("stops", StopRequest, stop_collection, "requested_by", "Stop collection")
_route("opt-outs", OptOutRequest, opt_out, "requested_by", "The borrower opts out of a channel")
