"""People's work: the call, visit and review tasks across loans (read from the database, not by
asking workflows), claimed by one collector at a time and closed by reporting their outcome."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from sqlalchemy import or_
from sqlmodel import Session, col, select

from api import work
from api.auth import Principal, allow
from api.marks import mark
from api.problems import ApiError, problem_responses
from api.schemas import ClaimBody, OutcomeBody, TaskPage, TaskView
from api.state import ApiState, State, in_thread
from db.tables import TaskRow
from models import CollectionStatus

router = APIRouter(prefix="/v1", tags=["tasks"])

Worker = Annotated[Principal, allow("collector", "supervisor")]
TaskId = Annotated[str, Path(min_length=1, max_length=256)]


def view(row: TaskRow) -> TaskView:
    return TaskView(
        task_id=row.task_id,
        loan_id=row.loan_id,
        kind=row.kind,
        queue=row.queue,
        attempt=row.attempt,
        status=row.status,
        assignee=row.assignee,
        due_by=row.due_by,
        created_at=row.created_at,
        claimed_at=row.claimed_at,
        closed_at=row.closed_at,
        outcome=row.outcome,
        brief=row.brief,
    )


@router.get("/tasks", response_model=TaskPage, responses=problem_responses(401, 403, 422, 503))
async def list_tasks(
    state: State,
    principal: Worker,
    queue: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    status: Literal["open", "closed"] = "open",
    assignee: Annotated[str | None, Query(max_length=128)] = None,
    page_size: Annotated[int, Query(ge=1, le=500)] = 50,
    page_token: Annotated[int | None, Query(ge=0, le=10_000_000)] = None,
) -> TaskPage:
    """Tasks in priority order: the nearest outcome deadline first, then the oldest. A collector
    sees only their queues' tasks and those given to them. `assignee=` (empty) lists unclaimed
    tasks. `page_token`: the `next_page_token` of the page before."""
    if principal.role == "collector" and queue is not None and queue not in principal.queues:
        raise ApiError(403, f"queue {queue!r} is not one of yours", field="query.queue")
    offset = page_token or 0
    rows = await in_thread(_tasks, state, principal, queue, status, assignee, page_size + 1, offset)
    more = len(rows) > page_size
    token = str(offset + page_size) if more else None
    return TaskPage(tasks=[view(r) for r in rows[:page_size]], next_page_token=token)


def _tasks(
    state: ApiState, principal: Principal, queue: str | None, status: str, assignee: str | None, limit: int, offset: int
) -> list[TaskRow]:
    with Session(state.engine) as session:
        query = select(TaskRow).where(TaskRow.status == status)
        if queue is not None:
            query = query.where(TaskRow.queue == queue)
        if assignee is not None:
            query = query.where(TaskRow.assignee == assignee)
        if principal.role == "collector":
            query = query.where(or_(col(TaskRow.queue).in_(principal.queues), col(TaskRow.assignee) == principal.name))
        query = query.order_by(col(TaskRow.due_by), col(TaskRow.created_at), col(TaskRow.id))
        return list(session.exec(query.offset(offset).limit(limit)).all())


@router.post(
    "/tasks/{task_id:path}/claim", response_model=TaskView, responses=problem_responses(401, 403, 404, 409, 422)
)
async def claim_task(task_id: TaskId, state: State, principal: Worker, body: ClaimBody | None = None) -> TaskView:
    """Take an open task (a supervisor may give it to someone with `assignee`). A task someone
    else holds is a 409: two collectors never work the same task. Claiming your own again is fine."""
    return view(await work.claim(state, principal, task_id, body.assignee if body is not None else None))


@router.post(
    "/tasks/{task_id:path}/outcome",
    response_model=CollectionStatus,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def report_outcome(task_id: TaskId, body: OutcomeBody, state: State, principal: Worker) -> CollectionStatus:
    """Record what happened on the call or visit; the loan closes the task and acts on the outcome
    (a retry of an unanswered call, the next step...). The answer is the loan's status."""
    status = await work.report_outcome(state, principal, task_id, body.outcome, body.note, body.recording_ref)
    await mark(state, status)  # the desk's queue orders by it (the desk marks from the page it shows next)
    return status
