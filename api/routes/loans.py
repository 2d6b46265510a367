"""Loans: hand one over, read its status, list the portfolio, its totals."""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, date, datetime
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from sqlmodel import Session, col, select
from temporalio.service import RPCError, RPCStatusCode

from activities.screening import Screener, StrategyError
from api.auth import Caller, Principal, allow, loan_access
from api.problems import ApiError, problem_responses
from api.schemas import HandOver, HandOverResult, LoanPage, LoanRow, PortfolioStats, StageTotal
from api.state import ApiState, State, in_thread
from client import get_status, hand_over, portfolio_stats
from client.portfolio import list_loans_page
from db.tables import BorrowerRow
from db.tables import LoanRow as LoanTable
from infra.loaders import load_policy
from infra.search_attributes import DPD_BANDS
from infra.temporal import workflow_id
from models import CollectionStatus, OverdueLoan
from models.experiment import AUTO
from models.policy import PolicyError
from models.schedule import days_past_due, local_date
from models.segmentation import ScreeningError

router = APIRouter(prefix="/v1", tags=["loans"])

Platform = Annotated[Principal, allow("platform")]
Lister = Annotated[Principal, allow("platform", "supervisor")]
Reader = Annotated[Principal, allow("platform", "collector", "supervisor", "agency", "auditor")]


@router.post(
    "/loans",
    status_code=201,
    response_model=HandOverResult,
    responses=problem_responses(401, 403, 422, 503)
    | {200: {"model": HandOverResult, "description": "already in collection, or closed"}},
)
async def hand_over_loan(body: HandOver, state: State, principal: Platform, response: Response) -> HandOverResult:
    """Hand an overdue loan over for collection. The same loan again starts nothing: `200` with
    `running` (in collection) or `closed` (its collection ended; never collected twice)."""
    _check_policy(state.settings.policies_dir, body.policy)
    today = local_date(datetime.now(UTC), body.borrower.timezone)
    if body.due_date > today:
        raise ApiError(
            422,
            f"due date {body.due_date} is in the future (today is {today} in {body.borrower.timezone})",
            field="body.due_date",
        )
    loan = OverdueLoan.model_validate(body.model_dump(exclude={"policy"}))
    if body.policy == AUTO:
        await in_thread(_check_screenable, state, loan)
    outcome = await hand_over(state.temporal, loan, body.policy, task_queue=state.task_queue)
    if outcome != "started":
        response.status_code = 200
    return HandOverResult(loan_id=loan.loan_id, workflow_id=workflow_id(loan.loan_id), outcome=outcome.value)


def _check_screenable(state: ApiState, loan: OverdueLoan) -> None:
    """Policy `auto`: screen the loan now as the start activity will (`activities.screening`),
    so a loan it cannot screen (a currency without bands, a broken strategies file) gets a 422
    here instead of a 201 and a start that fails for good."""
    try:
        Screener(state.engine, state.settings.strategies_dir).strategy(loan, AUTO, datetime.now(UTC))
    except StrategyError as exc:
        field = "body.currency" if isinstance(exc.__cause__, ScreeningError) else "body.policy"
        raise ApiError(422, f"policy auto: {exc}", field=field) from exc


def _check_policy(folder: Path, name: str) -> None:
    if name == AUTO:  # chosen at the start by screening (`activities.start`)
        return
    try:
        _policy_exists(folder, name)
    except PolicyError as exc:
        raise ApiError(422, f"unknown policy {name!r}", field="body.policy") from exc


@lru_cache(maxsize=256)
def _policy_exists(folder: Path, name: str) -> bool:
    load_policy(name, folder)
    return True


@router.get(
    "/loans/{loan_id}",
    response_model=CollectionStatus,
    responses=problem_responses(401, 403, 404, 422, 503),
)
async def loan_status(loan_id: str, state: State, principal: Reader) -> CollectionStatus:
    """The loan's collection status, days past due and what is due next as of now. Read by
    query: reading it adds nothing to the loan's history."""
    await loan_access(state, principal, loan_id)
    return await get_status(state.temporal, loan_id)


@router.get("/loans", response_model=LoanPage, responses=problem_responses(400, 401, 403, 422, 503))
async def list_loans(
    state: State,
    principal: Lister,
    stage: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    policy: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
    agency: Annotated[str | None, Query(min_length=1, max_length=128, pattern=r"^[^'\"\\]+$")] = None,
    status: Annotated[str | None, Query(pattern=r"^(running|completed|failed|canceled|terminated|timed_out)$")] = None,
    dpd_min: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    dpd_max: Annotated[int | None, Query(ge=0, le=100_000)] = None,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 100,
    page_token: Annotated[str | None, Query(max_length=4096)] = None,
) -> LoanPage:
    """One row per loan, newest first, from the server's visibility store. `dpd_min`/`dpd_max`
    filter on calendar days past due (since the due date, on the borrower's calendar); a page
    filtered by DPD can hold fewer than `page_size` rows: follow `next_page_token` until it is null."""
    if dpd_min is not None and dpd_max is not None and dpd_min > dpd_max:
        raise ApiError(422, "dpd_min is above dpd_max", field="query.dpd_min")
    bands = None if dpd_min is None and dpd_max is None else _bands(dpd_min or 0, dpd_max)
    try:
        rows, token = await list_loans_page(
            state.temporal,
            status=status,
            stage=stage,
            policy=policy,
            agency=agency,
            dpd_bands=bands,
            page_size=page_size,
            page_token=_decode_token(page_token),
        )
    except RPCError as exc:
        if exc.status != RPCStatusCode.INVALID_ARGUMENT or page_token is None or "search attribute" in str(exc).lower():
            raise
        raise ApiError(
            422, "page_token does not fit this listing (its filters changed?)", field="query.page_token"
        ) from exc
    dpd = await in_thread(_calendar_dpd, state, [r["loan_id"] for r in rows])
    out = []
    for row in rows:
        days = dpd.get(row["loan_id"])
        if bands is not None and (days is None or days < (dpd_min or 0) or (dpd_max is not None and days > dpd_max)):
            continue
        out.append(LoanRow(**row, days_past_due=days))
    return LoanPage(loans=out, next_page_token=base64.urlsafe_b64encode(TOKEN_TAG + token).decode() if token else None)


def _bands(low: int, high: int | None) -> list[str]:
    """The DPD bands that overlap [low, high]."""
    found: list[str] = []
    ceiling: int | None = None
    for floor, label in DPD_BANDS:  # highest first
        top: int | None = ceiling - 1 if ceiling is not None else None
        if (high is None or floor <= high) and (top is None or top >= low):
            found.append(label)
        ceiling = floor
    return found


TOKEN_TAG = b"lc1:"
"""Marks the page tokens this API gives out (the server's own token follows)."""


def _decode_token(token: str | None) -> bytes | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token.encode())
    except (binascii.Error, ValueError):
        raw = b""
    if not raw.startswith(TOKEN_TAG) or len(raw) == len(TOKEN_TAG):
        raise ApiError(422, "page_token is not a token this API gave out", field="query.page_token")
    return raw[len(TOKEN_TAG) :]


def _calendar_dpd(state: ApiState, loan_ids: list[str]) -> dict[str, int]:
    """Calendar days past due of these loans, from their due dates and the borrowers' zones."""
    if not loan_ids:
        return {}
    now = datetime.now(UTC)
    with Session(state.engine) as session:
        query = (
            select(col(LoanTable.loan_id), col(LoanTable.due_date), col(BorrowerRow.timezone))
            .join(BorrowerRow, col(BorrowerRow.borrower_id) == col(LoanTable.borrower_id))
            .where(col(LoanTable.loan_id).in_(loan_ids))
        )
        found: list[tuple[str, date, str]] = list(session.exec(query).all())
    return {loan_id: days_past_due(now, due, tz) for loan_id, due, tz in found}


@router.get("/portfolio/stats", response_model=PortfolioStats, responses=problem_responses(401, 403, 422, 503))
async def stats(
    state: State,
    principal: Lister,
    policy: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_-]{1,64}$")] = None,
) -> PortfolioStats:
    """Loans and outstanding totals per stage and currency (from visibility)."""
    totals: list[dict[str, Any]] = await portfolio_stats(state.temporal, policy=policy)
    return PortfolioStats(totals=[StageTotal(**t) for t in totals])


__all__ = ["Caller", "router"]
