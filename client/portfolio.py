"""The portfolio from the client side: loans in collection and their totals from the server's
visibility store (search attributes, no workflow queried), and asking running loans to continue
as new after a deploy (`roll_over`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from temporalio.client import Client, WorkflowExecution
from temporalio.service import RPCError, RPCStatusCode

from client.protocol import loan_handle
from infra import search_attributes as sa
from infra.temporal import COLLECTION_TYPES, WORKFLOW_ID_PREFIX, with_converter
from models.money import minor_units
from workflows.collection import CollectionWorkflow


async def list_loans(
    client: Client,
    status: str | None = None,
    *,
    stage: str | None = None,
    policy: str | None = None,
    agency: str | None = None,
    limit: int | None = 1000,
) -> list[dict[str, Any]]:
    """Loans in collection from the server's visibility store, filtered by workflow status,
    stage, policy and agency (the portfolio's search attributes), newest first. A loan that
    continued as new is one row (its current run)."""
    query = _portfolio_query(status, stage, policy, agency)
    return [loan_row(wf) async for wf in with_converter(client).list_workflows(query, limit=limit)]


async def list_loans_page(
    client: Client,
    *,
    status: str | None = None,
    stage: str | None = None,
    policy: str | None = None,
    agency: str | None = None,
    dpd_bands: list[str] | None = None,
    page_size: int = 100,
    page_token: bytes | None = None,
) -> tuple[list[dict[str, Any]], bytes | None]:
    """One page of `list_loans` (and the token of the next, None after the last), optionally
    only loans in the given DPD bands (`infra.search_attributes.DPD_BANDS` labels)."""
    query = _portfolio_query(status, stage, policy, agency, dpd_bands)
    pages = with_converter(client).list_workflows(query, page_size=page_size, next_page_token=page_token)
    await pages.fetch_next_page()
    return [loan_row(wf) for wf in pages.current_page or []], pages.next_page_token or None


def loan_row(wf: WorkflowExecution) -> dict[str, Any]:
    """A listing row from a workflow's visibility record (no personal data: search attributes)."""
    attrs = wf.typed_search_attributes
    currency = attrs.get(sa.CURRENCY) or ""
    minor = attrs.get(sa.OUTSTANDING)
    return {
        "loan_id": wf.id.removeprefix(WORKFLOW_ID_PREFIX),
        "workflow_id": wf.id,
        "status": wf.status.name.lower() if wf.status else "",
        "stage": attrs.get(sa.STAGE) or "",
        "dpd_band": attrs.get(sa.DPD_BAND) or "",
        "policy": attrs.get(sa.POLICY) or "",
        "agency": attrs.get(sa.AGENCY) or "",
        "currency": currency,
        "outstanding": str(Decimal(minor).scaleb(-minor_units(currency))) if minor is not None and currency else "",
        "started": wf.start_time.isoformat(timespec="seconds"),
        "closed": wf.close_time.isoformat(timespec="seconds") if wf.close_time else "",
    }


async def roll_over(
    client: Client, loan_ids: list[str] | None = None, *, started_before: datetime | None = None
) -> list[str]:
    """Ask running loans to continue as new at their next quiet moment, so they take the
    current code's patched branches (docs/upgrading.md). Either the given loans,
    or every running collection whose current run started before `started_before`. Returns
    the loan ids asked; a loan that is not running is skipped."""
    if loan_ids is None:
        if started_before is None:
            raise ValueError("give loan ids or started_before")
        when = started_before.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        query = f'{_types_clause()} AND ExecutionStatus="Running" AND StartTime < "{when}"'
        loan_ids = [wf.id.removeprefix(WORKFLOW_ID_PREFIX) async for wf in client.list_workflows(query)]
    asked = []
    for loan_id in loan_ids:
        try:
            await loan_handle(client, loan_id).signal(CollectionWorkflow.roll_over)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
            continue
        asked.append(loan_id)
    return asked


async def portfolio_stats(client: Client, *, policy: str | None = None) -> list[dict[str, Any]]:
    """Loans and outstanding totals per stage and currency, from visibility (no workflow is
    queried, so it costs the same for ten loans or a hundred thousand)."""
    totals: dict[tuple[str, str], list[Any]] = {}
    for row in await list_loans(client, policy=policy, limit=None):
        entry = totals.setdefault((row["stage"] or "starting", row["currency"]), [0, Decimal(0)])
        entry[0] += 1
        entry[1] += Decimal(row["outstanding"] or 0)
    return [
        {"stage": stage, "currency": currency, "loans": count, "outstanding": str(amount)}
        for (stage, currency), (count, amount) in sorted(totals.items())
    ]


def _types_clause() -> str:
    """Loans of either collection workflow type (docs/upgrading.md)."""
    return "(" + " OR ".join(f"WorkflowType = '{name}'" for name in COLLECTION_TYPES) + ")"


def _portfolio_query(
    status: str | None,
    stage: str | None,
    policy: str | None,
    agency: str | None,
    dpd_bands: list[str] | None = None,
) -> str:
    clauses = [_types_clause()]
    if status:
        clauses.append(f"ExecutionStatus = '{_status_name(status)}'")
    else:  # a run that continued as new is the same loan as its successor
        clauses.append("ExecutionStatus != 'ContinuedAsNew'")
    for key, value in ((sa.STAGE, stage), (sa.POLICY, policy), (sa.AGENCY, agency)):
        if value:
            clauses.append(f"{key.name} = '{_literal(value)}'")
    if dpd_bands is not None:
        if not dpd_bands:
            clauses.append("1 = 0")
        else:
            clauses.append(f"{sa.DPD_BAND.name} IN ({', '.join(repr(_literal(b)) for b in dpd_bands)})")
    return " AND ".join(clauses)


_STATUSES = {
    "running": "Running",
    "completed": "Completed",
    "failed": "Failed",
    "canceled": "Canceled",
    "terminated": "Terminated",
    "timed_out": "TimedOut",
    "continued_as_new": "ContinuedAsNew",
}


def _status_name(status: str) -> str:
    """The visibility store's name of a workflow status (`running`, `completed`...)."""
    try:
        return _STATUSES[status.lower()]
    except KeyError:
        raise ValueError(f"unknown status {status!r}: one of {', '.join(_STATUSES)}") from None


def _literal(value: str) -> str:
    if "'" in value or "\\" in value or '"' in value:
        raise ValueError(f"invalid filter value {value!r}")
    return value
