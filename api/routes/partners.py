"""Partners: an agency's progress reports and its contact requests (it asks the conduct guard
before every contact, sharing the borrower's contact budget with the lender), news of a court
case, and the audit record for supervisors and auditors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from api.auth import Principal, allow, loan_access, placed_with
from api.problems import ApiError, problem_responses
from api.schemas import AuditExport, ChainCheck
from api.state import State, in_thread
from client import report_agency, report_court, request_agency_contact
from models import AgencyReport, CollectionStatus, CourtReport
from models.conduct import GuardDecision
from models.events import AgencyContactRequest
from ops.audit import chain_summary, read_audit, to_csv

router = APIRouter(prefix="/v1", tags=["partners"])

AgencyOrSupervisor = Annotated[Principal, allow("agency", "supervisor")]
Supervisor = Annotated[Principal, allow("supervisor")]
AuditReader = Annotated[Principal, allow("supervisor", "auditor")]
LoanId = Annotated[str, Path(min_length=1, max_length=128)]


async def _agency_placement(state: State, principal: Principal, loan_id: str, placement_id: str) -> None:
    """An agency may speak only for its own placement of the loan, while it lasts."""
    await loan_access(state, principal, loan_id)
    if principal.role == "agency" and not await in_thread(placed_with, state, principal.agency, loan_id, placement_id):
        raise ApiError(404, f"placement {placement_id} of loan {loan_id} is not with agency {principal.agency}")


def _rejected(exc: ValueError) -> ApiError:
    return ApiError(422, str(exc), title="Refused", reason=str(exc))


@router.post(
    "/loans/{loan_id}/agency-reports",
    status_code=201,
    response_model=CollectionStatus,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def agency_report(
    loan_id: LoanId, body: AgencyReport, state: State, principal: AgencyOrSupervisor
) -> CollectionStatus:
    """An agency's progress report on a loan placed with it."""
    await _agency_placement(state, principal, loan_id, body.placement_id)
    try:
        return await report_agency(state.temporal, loan_id, body.model_copy(update={"reported_by": principal.actor}))
    except ValueError as exc:
        raise _rejected(exc) from exc


@router.post(
    "/loans/{loan_id}/court-reports",
    status_code=201,
    response_model=CollectionStatus,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def court_report(loan_id: LoanId, body: CourtReport, state: State, principal: Supervisor) -> CollectionStatus:
    """News of the loan's court case (a hearing, a judgment, enforcement, the case closing)."""
    try:
        return await report_court(state.temporal, loan_id, body.model_copy(update={"reported_by": principal.actor}))
    except ValueError as exc:
        raise _rejected(exc) from exc


@router.post(
    "/loans/{loan_id}/contact-requests",
    response_model=GuardDecision,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def contact_request(
    loan_id: LoanId, body: AgencyContactRequest, state: State, principal: AgencyOrSupervisor
) -> GuardDecision:
    """Ask the conduct guard before contacting the borrower: `allowed` (go ahead now),
    `deferred` (not before `at`) or `refused`, with the id of the rule that decided."""
    await _agency_placement(state, principal, loan_id, body.placement_id)
    try:
        return await request_agency_contact(state.temporal, loan_id, body.model_copy(update={"agent": principal.actor}))
    except ValueError as exc:
        raise _rejected(exc) from exc


@router.get(
    "/loans/{loan_id}/audit",
    response_model=AuditExport,
    responses=problem_responses(401, 403, 404, 422, 503)
    | {200: {"content": {"text/csv": {}}, "description": "the record (JSON, or CSV for Accept: text/csv)"}},
)
async def audit(loan_id: LoanId, request: Request, state: State, principal: AuditReader) -> Response:
    """The loan's audit record with its hash chain verified (`chain.intact`), as JSON, or as CSV
    for `Accept: text/csv` (the verdict then in the X-Chain-Intact header)."""
    entries, problems, retain_until = await in_thread(read_audit, state.engine, loan_id)
    if not entries:
        raise ApiError(404, f"no audit record for loan {loan_id}")
    if "text/csv" in request.headers.get("accept", ""):
        headers = {"X-Chain-Intact": "true" if not problems else "false"}
        return Response(to_csv(entries), media_type="text/csv; charset=utf-8", headers=headers)
    export = AuditExport(
        loan_id=loan_id,
        exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        retain_until=retain_until.isoformat() if retain_until else None,
        chain=ChainCheck(**chain_summary(entries, problems)),
        entries=entries,
    )
    return Response(export.model_dump_json(), media_type="application/json")
