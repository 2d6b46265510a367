"""People's work: the call, visit and review tasks across loans (read from the database, not by
asking workflows), claimed by one collector at a time and closed by reporting their outcome."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from api.auth import Principal, allow
from api.problems import ApiError, problem_responses
from api.schemas import ClaimBody, OutcomeBody, TaskPage, TaskView
from api.state import ApiState, State, in_thread
from client import report_task_outcome
from db.tables import TaskRow
from models import CollectionStatus, TaskReport

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


def _task(state: ApiState, task_id: str) -> TaskRow | None:
    with Session(state.engine) as session:
        return session.exec(select(TaskRow).where(TaskRow.task_id == task_id)).first()


def _may_work(principal: Principal, row: TaskRow) -> None:
    if principal.role == "collector" and row.queue not in principal.queues and row.assignee != principal.name:
        raise ApiError(403, "this task is in a queue that is not yours")


async def _find(state: ApiState, principal: Principal, task_id: str) -> TaskRow:
    row = await in_thread(_task, state, task_id)
    if row is None:
        raise ApiError(404, f"no task {task_id}")
    _may_work(principal, row)
    return row


@router.post(
    "/tasks/{task_id:path}/claim", response_model=TaskView, responses=problem_responses(401, 403, 404, 409, 422)
)
async def claim_task(task_id: TaskId, state: State, principal: Worker, body: ClaimBody | None = None) -> TaskView:
    """Take an open task (a supervisor may give it to someone with `assignee`). A task someone
    else holds is a 409: two collectors never work the same task. Claiming your own again is fine."""
    row = await _find(state, principal, task_id)
    who = principal.name
    if body is not None and body.assignee is not None and body.assignee != principal.name:
        if principal.role != "supervisor":
            raise ApiError(403, "only a supervisor may give a task to someone else", field="body.assignee")
        who = body.assignee
    if row.status != "open":
        raise ApiError(409, f"task {task_id} is closed ({row.outcome})")
    taken = await in_thread(_claim, state, task_id, who, principal.role == "supervisor")
    if not taken:
        raise ApiError(409, f"task {task_id} is held by someone else")
    found = await in_thread(_task, state, task_id)
    assert found is not None
    return view(found)


def _claim(state: ApiState, task_id: str, who: str, reassign: bool) -> bool:
    """Set the assignee if the task is open and free (or already theirs; a supervisor may move it)."""
    with Session(state.engine) as session:
        query = update(TaskRow).where(col(TaskRow.task_id) == task_id, col(TaskRow.status) == "open")
        if not reassign:
            query = query.where(or_(col(TaskRow.assignee) == "", col(TaskRow.assignee) == who))
        done = session.execute(query.values(assignee=who, claimed_at=datetime.now(UTC)))
        session.commit()
        return bool(done.rowcount)  # type: ignore[attr-defined]


@router.post(
    "/tasks/{task_id:path}/outcome",
    response_model=CollectionStatus,
    responses=problem_responses(401, 403, 404, 409, 422, 503),
)
async def report_outcome(task_id: TaskId, body: OutcomeBody, state: State, principal: Worker) -> CollectionStatus:
    """Record what happened on the call or visit; the loan closes the task and acts on the outcome
    (a retry of an unanswered call, the next step...). The answer is the loan's status."""
    row = await _find(state, principal, task_id)
    if row.status != "open":
        raise ApiError(409, f"task {task_id} is closed ({row.outcome})")
    if row.assignee and row.assignee != principal.name and principal.role != "supervisor":
        raise ApiError(409, f"task {task_id} is held by {row.assignee}")
    report = TaskReport(
        task_id=task_id,
        outcome=body.outcome,
        note=body.note,
        recording_ref=body.recording_ref,
        reported_by=principal.actor,
    )
    try:
        return await report_task_outcome(state.temporal, row.loan_id, report)
    except ValueError as exc:  # RequestRejected: the loan no longer waits for this task
        raise ApiError(409, str(exc), reason=str(exc)) from exc
