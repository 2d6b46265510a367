"""What a collector or supervisor does, whichever door they come in by: the HTTP API's routes
(`api.routes.tasks`, `api.routes.negotiation`) and the collectors' desk (`desk`) both call these,
so the rules of who may claim, report and negotiate are written once. Each takes the caller as
an `api.auth.Principal` and raises `ApiError` (status and detail) when the caller may not, or
the task or loan refuses; the desk shows the detail on the page."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import or_, update
from sqlmodel import Session, col, select
from temporalio.client import Client

from api.auth import Principal, loan_access
from api.problems import ApiError
from api.state import ApiState, in_thread
from client import (
    offer_settlement,
    opt_out,
    promise_to_pay,
    propose_plan,
    raise_dispute,
    report_hardship,
    report_task_outcome,
    resolve_dispute,
    review_hardship,
    stop_collection,
)
from db.tables import TaskRow
from models import CollectionStatus, TaskReport
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

# ------------------------------------------------------------------ tasks


def task_row(state: ApiState, task_id: str) -> TaskRow | None:
    with Session(state.engine) as session:
        return session.exec(select(TaskRow).where(TaskRow.task_id == task_id)).first()


def may_work(principal: Principal, row: TaskRow) -> None:
    """A collector works only their queues' tasks and those given to them."""
    if principal.role == "collector" and row.queue not in principal.queues and row.assignee != principal.name:
        raise ApiError(403, "this task is in a queue that is not yours")


async def find_task(state: ApiState, principal: Principal, task_id: str) -> TaskRow:
    """The task, if it exists (404) and the caller may work it (403)."""
    row = await in_thread(task_row, state, task_id)
    if row is None:
        raise ApiError(404, f"no task {task_id}")
    may_work(principal, row)
    return row


async def claim(state: ApiState, principal: Principal, task_id: str, assignee: str | None = None) -> TaskRow:
    """Take an open task (a supervisor may give it to `assignee`). A task someone else holds is
    a 409: two collectors never work the same task. Claiming your own again is fine."""
    row = await find_task(state, principal, task_id)
    who = principal.name
    if assignee is not None and assignee != principal.name:
        if principal.role != "supervisor":
            raise ApiError(403, "only a supervisor may give a task to someone else", field="body.assignee")
        who = assignee
    if row.status != "open":
        raise ApiError(409, f"task {task_id} is closed ({row.outcome})")
    taken = await in_thread(claim_row, state, task_id, who, principal.role == "supervisor")
    if not taken:
        raise ApiError(409, f"task {task_id} is held by someone else")
    found = await in_thread(task_row, state, task_id)
    assert found is not None
    return found


def claim_row(state: ApiState, task_id: str, who: str, reassign: bool) -> bool:
    """Set the assignee if the task is open and free (or already theirs; a supervisor may move
    it), in one conditional UPDATE: of two collectors racing for a task, one changes a row and
    the other none."""
    with Session(state.engine) as session:
        query = update(TaskRow).where(col(TaskRow.task_id) == task_id, col(TaskRow.status) == "open")
        if not reassign:
            query = query.where(or_(col(TaskRow.assignee) == "", col(TaskRow.assignee) == who))
        done = session.execute(query.values(assignee=who, claimed_at=datetime.now(UTC)))
        session.commit()
        return bool(done.rowcount)  # type: ignore[attr-defined]


async def report_outcome(
    state: ApiState, principal: Principal, task_id: str, outcome: str, note: str = "", recording_ref: str = ""
) -> CollectionStatus:
    """Record what happened on the call or visit, in the caller's name; the loan closes the
    task and acts on the outcome. A closed task, or one another collector holds, is a 409."""
    row = await find_task(state, principal, task_id)
    if row.status != "open":
        raise ApiError(409, f"task {task_id} is closed ({row.outcome})")
    if row.assignee and row.assignee != principal.name and principal.role != "supervisor":
        raise ApiError(409, f"task {task_id} is held by {row.assignee}")
    report = TaskReport(
        task_id=task_id, outcome=outcome, note=note, recording_ref=recording_ref, reported_by=principal.actor
    )
    try:
        return await report_task_outcome(state.temporal, row.loan_id, report)
    except ValueError as exc:  # RequestRejected: the loan no longer waits for this task
        raise ApiError(409, str(exc), reason=str(exc)) from exc


# ------------------------------------------------------------------ negotiation

Send = Callable[[Client, str, Any], Awaitable[Decision]]


class Negotiation(BaseModel):
    """One kind of negotiation request: its body type, the client call that sends it and the
    body field that names who made it (set to the caller, whatever the body said)."""

    body_type: type[BaseModel]
    send: Any  # Send (a callable does not validate as a pydantic field type)
    actor_field: str
    summary: str


NEGOTIATIONS: dict[str, Negotiation] = {
    "promises": Negotiation(
        body_type=PromiseRequest, send=promise_to_pay, actor_field="made_by", summary="Record a promise to pay"
    ),
    "plans": Negotiation(
        body_type=PlanProposal,
        send=propose_plan,
        actor_field="made_by",
        summary="Propose or renegotiate an instalment plan",
    ),
    "settlements": Negotiation(
        body_type=SettlementOffer, send=offer_settlement, actor_field="made_by", summary="Offer a discounted settlement"
    ),
    "hardship": Negotiation(
        body_type=HardshipReport, send=report_hardship, actor_field="reported_by", summary="Report hardship"
    ),
    "hardship/review": Negotiation(
        body_type=HardshipDecision,
        send=review_hardship,
        actor_field="decided_by",
        summary="Apply a hardship review's outcome",
    ),
    "disputes": Negotiation(
        body_type=DisputeRequest, send=raise_dispute, actor_field="raised_by", summary="Open a dispute"
    ),
    "disputes/resolution": Negotiation(
        body_type=DisputeResolution,
        send=resolve_dispute,
        actor_field="resolved_by",
        summary="Resolve the open dispute",
    ),
    "stops": Negotiation(
        body_type=StopRequest, send=stop_collection, actor_field="requested_by", summary="Stop collection"
    ),
    "opt-outs": Negotiation(
        body_type=OptOutRequest,
        send=opt_out,
        actor_field="requested_by",
        summary="The borrower opts out of a channel",
    ),
}
"""By the path under /v1/loans/{id}/ the API serves each at."""


async def negotiate(state: ApiState, principal: Principal, loan_id: str, kind: str, body: BaseModel) -> Decision:
    """Send a negotiation request in the caller's name, if they may act on the loan. Accepted:
    the decision; refused by the policy or the loan's situation: a 422 carrying the loan's
    reason (nothing changed)."""
    await loan_access(state, principal, loan_id)
    what = NEGOTIATIONS[kind]
    request = body.model_copy(update={what.actor_field: principal.actor})
    decision: Decision = await what.send(state.temporal, loan_id, request)
    if not decision.accepted:
        raise ApiError(422, decision.reason or "refused", title="Refused", reason=decision.reason)
    return decision
