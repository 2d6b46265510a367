"""A loan's collection from the client side: start it (hand it over), pay, report, negotiate,
ask its status, wait until it has written what it was told.

Every function takes the Temporal client (`infra.temporal.connect`, or any client: the project's
data converter is put on it). A function that starts a workflow sends it to `task_queue` when
given, else to the TEMPORAL_TASK_QUEUE setting: nothing here depends on a worker in the same
process."""

from __future__ import annotations

import asyncio
import time
import uuid
from enum import StrEnum
from typing import Any

from temporalio.client import Client, WorkflowHandle, WorkflowQueryFailedError
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from client.errors import LoanNotFound, RequestRejected
from client.protocol import (
    QUERY_TIMEOUTS,
    ask,
    execute_update,
    is_legacy,
    legacy_update,
    loan_handle,
    query_status,
    server_now,
)
from client.protocol import decide as _decide
from client.protocol import report as _report
from infra.options import REPLY_RPC_TIMEOUT
from infra.settings import task_queue as default_queue
from infra.temporal import with_converter, workflow_id
from models import (
    AgencyReport,
    CollectionInput,
    CollectionStatus,
    CourtReport,
    OverdueLoan,
    Payment,
    PaymentReceipt,
    PaymentRejected,
    TaskReport,
    lifecycle,
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
from models.conduct import GuardDecision
from models.events import AgencyContactRequest, OptOutRequest
from models.protocol import Envelope
from workflows.collection import BANK_FEED, CollectionWorkflow


class StartOutcome(StrEnum):
    """What a request to start a loan's collection found."""

    started = "started"  # a new collection workflow
    running = "running"  # the loan was in collection already: nothing started
    closed = "closed"  # its collection had ended (paid, settled, written off): never collect twice


async def start_collection(
    client: Client, loan: OverdueLoan, policy: str = "default", *, task_queue: str | None = None
) -> str:
    """Start collection for an overdue loan and return its workflow id. Starting a loan that
    is already in collection (or was, and closed) starts nothing and returns the same id."""
    await hand_over(client, loan, policy, task_queue=task_queue)
    return workflow_id(loan.loan_id)


async def hand_over(
    client: Client, loan: OverdueLoan, policy: str = "default", *, task_queue: str | None = None
) -> StartOutcome:
    """`start_collection`, saying what happened. The workflow id (`collection-<loan id>`) and
    its policies make a second start of a loan impossible at Temporal, whoever sends it. The
    task queue is `task_queue`, else the TEMPORAL_TASK_QUEUE setting."""
    try:
        handle = await with_converter(client).start_workflow(
            CollectionWorkflow.run,
            CollectionInput(loan=loan, policy=policy),
            id=workflow_id(loan.loan_id),
            task_queue=default_queue(task_queue),
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE_FAILED_ONLY,
        )
    except WorkflowAlreadyStartedError:
        return StartOutcome.closed
    return StartOutcome.started if _newly_started(handle) else StartOutcome.running


def _newly_started(handle: WorkflowHandle[Any, Any]) -> bool:
    """The server's `started` flag (false when USE_EXISTING attached to a running workflow).
    temporalio 1.35 keeps the start response on the handle without a public accessor; should
    that change, every start counts as new: only the figures would be wrong, not the starts."""
    response = getattr(handle, "_start_workflow_response", None)
    return bool(getattr(response, "started", True))


async def register_payment(
    client: Client, loan_id: str, payment: Payment, *, request_id: str | None = None
) -> PaymentReceipt:
    """Apply a payment and return the receipt. Raises PaymentRejected (bad amount, currency,
    duplicate id, closed loan) or LoanNotFound; a rejected payment changes nothing. The same
    `request_id` sent again gets the first answer (`client.protocol.ask`)."""
    reply = await ask(
        client, loan_id, lifecycle.PaymentReceived(payment=payment), PaymentRejected, request_id=request_id
    )
    if reply is None:
        return await legacy_update(client, loan_id, "pay", payment, PaymentRejected, PaymentReceipt)
    assert reply.receipt is not None
    return reply.receipt


async def send_bank_payment(client: Client, loan_id: str, payment: Payment) -> None:
    """Fire-and-forget payment for bank feeds (a signal); rejections go to the timeline."""
    handle = loan_handle(client, loan_id)
    if await is_legacy(handle, loan_id):
        await handle.signal("payment_received", payment)
        return
    env = Envelope(
        request_id=f"{BANK_FEED}{payment.payment_id}/{uuid.uuid4()}",
        request=lifecycle.PaymentReceived(payment=payment, answer=False),
        sent_at=await server_now(client),
    )
    await handle.signal(CollectionWorkflow.request, env)


async def report_task_outcome(client: Client, loan_id: str, report: TaskReport) -> CollectionStatus:
    """Report the outcome of a call or visit task."""
    return await _report(client, loan_id, lifecycle.TaskReported(report=report), "report_task", report)


async def report_agency(client: Client, loan_id: str, report: AgencyReport) -> CollectionStatus:
    """Pass on an agency's progress report."""
    return await _report(client, loan_id, lifecycle.AgencyReported(report=report), "report_agency", report)


async def report_court(client: Client, loan_id: str, report: CourtReport) -> CollectionStatus:
    """Pass on news of the court case."""
    return await _report(client, loan_id, lifecycle.CourtReported(report=report), "report_court", report)


async def promise_to_pay(client: Client, loan_id: str, req: PromiseRequest) -> Decision:
    """Record a promise to pay; escalation pauses until its date plus grace."""
    return await _decide(client, loan_id, lifecycle.PromiseMade(request=req), "promise_to_pay", req)


async def propose_plan(client: Client, loan_id: str, req: PlanProposal) -> Decision:
    """Propose (or renegotiate) an instalment plan; accepted plans pause escalation."""
    return await _decide(client, loan_id, lifecycle.PlanProposed(request=req), "propose_plan", req)


async def offer_settlement(client: Client, loan_id: str, offer: SettlementOffer) -> Decision:
    """Offer a discounted settlement; paid by its deadline, the rest is waived."""
    return await _decide(client, loan_id, lifecycle.SettlementOffered(request=offer), "offer_settlement", offer)


async def report_hardship(client: Client, loan_id: str, report: HardshipReport) -> Decision:
    """Start a breathing space (no contact, no fees) and a hardship review."""
    return await _decide(client, loan_id, lifecycle.HardshipReported(request=report), "report_hardship", report)


async def review_hardship(client: Client, loan_id: str, decision: HardshipDecision) -> Decision:
    """Apply the outcome of a hardship review."""
    return await _decide(client, loan_id, lifecycle.HardshipReviewed(request=decision), "review_hardship", decision)


async def raise_dispute(client: Client, loan_id: str, req: DisputeRequest) -> Decision:
    """Open a dispute: all collection activity stops until it is resolved."""
    return await _decide(client, loan_id, lifecycle.DisputeRaised(request=req), "raise_dispute", req)


async def resolve_dispute(client: Client, loan_id: str, res: DisputeResolution) -> Decision:
    """Resolve the open dispute: upheld closes the loan, rejected resumes collection."""
    return await _decide(client, loan_id, lifecycle.DisputeResolved(request=res), "resolve_dispute", res)


async def stop_collection(client: Client, loan_id: str, req: StopRequest) -> Decision:
    """Stop collection for bankruptcy, death or a cease-contact request."""
    return await _decide(client, loan_id, lifecycle.StopRequested(request=req), "stop_collection", req)


async def opt_out(client: Client, loan_id: str, req: OptOutRequest) -> Decision:
    """The borrower opts out of a channel (a STOP reply, an unsubscribe link, a letter)."""
    return await _decide(client, loan_id, lifecycle.OptedOut(request=req), "opt_out", req)


async def request_agency_contact(client: Client, loan_id: str, req: AgencyContactRequest) -> GuardDecision:
    """An agency asks the guard before it contacts the borrower; it shares the person's
    contact budget with the lender and every other agency. The loan asks the guard from its
    main loop (a handler runs no activity), so the answer comes a moment after the request."""
    reply = await ask(client, loan_id, lifecycle.AgencyContactAsked(request=req, key="-"), RequestRejected)
    if reply is None:
        return await legacy_update(client, loan_id, "agency_contact", req, RequestRejected, GuardDecision)
    assert reply.guard is not None
    return reply.guard


async def get_status(client: Client, loan_id: str, *, fresh: bool = True) -> CollectionStatus:
    """The loan's collection status, read by query: it adds nothing to the loan's history, however
    often it is read. `fresh`: the figures that depend on the clock (days past due, stage, what
    is due next) as of the server's now, by the decider's own functions; `fresh=False`: as of
    the loan's last step. A loan of the first workflow version answers `fresh` by its
    `current_status` update (that version has no such query; it writes a few events)."""
    handle = loan_handle(client, loan_id)
    if fresh:
        if not await is_legacy(handle, loan_id):
            return await query_status(handle, loan_id, await server_now(client))
        try:
            return await execute_update(handle, "current_status", result_type=CollectionStatus)
        except RPCError as exc:
            if exc.status != RPCStatusCode.NOT_FOUND:
                raise
    return await query_status(handle, loan_id)


async def wait_quiet(client: Client, loan_id: str, timeout: float = 30.0) -> None:
    """Wait until the loan has written the effects of everything it was told (its answers come
    first; the ledger rows, messages and tasks follow at once). Loans of the first workflow
    version and closed loans are always quiet."""
    handle = loan_handle(client, loan_id)
    give_up = time.monotonic() + timeout
    while True:
        try:
            if not await handle.query(CollectionWorkflow.busy, rpc_timeout=REPLY_RPC_TIMEOUT):
                return
        except WorkflowQueryFailedError as exc:
            if "busy" in str(exc):  # the first version has no such query: it writes before it answers
                return
            if "starting" not in str(exc):
                raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LoanNotFound(f"no collection for loan {loan_id}") from exc
            if exc.status not in QUERY_TIMEOUTS:
                raise
        if time.monotonic() > give_up:
            raise TimeoutError(f"loan {loan_id} still busy after {timeout:.0f} s")
        await asyncio.sleep(0.05)
