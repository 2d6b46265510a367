"""The work queue: the open tasks of the visitor's queues across all loans (a supervisor: every
queue), in priority order, a page at a time, read from the database in one query (never by
asking the loans' workflows); and "take next", which claims the top unclaimed task through the
API's own claim (`api.work.claim`: one conditional UPDATE, so two collectors never get one task).

The order (explained on the page, `PRIORITY`):
1. tasks whose outcome deadline has passed;
2. loans with an arrangement due within DUE_SOON_DAYS (as the desk last read them, `db.desk_marks`);
3. most days past due (the earliest due date), then the largest balance (the last read
   outstanding, else the amount handed over); ties by the outcome deadline, then age."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Float, and_, case, cast, func, or_
from sqlmodel import Session, col, select

from api import work
from api.auth import Principal
from api.problems import ApiError
from api.state import in_thread
from db.desk_marks import LoanMark
from db.tables import BorrowerRow, LoanRow, TaskRow
from desk.contact import TASK_CHANNEL, Person, histories, preview
from desk.state import PREFIX, Desk, DeskDep, DeskRoute, Me, redirect, render
from models.conduct import GuardDecision, Situation

router = APIRouter(prefix=PREFIX, route_class=DeskRoute, include_in_schema=False)

PAGE_SIZE = 50
DUE_SOON_DAYS = 3
TAKE_TRIES = 20
"""How many of the top unclaimed tasks "take next" tries before it says there is none (others
may be claiming the same ones at the same moment)."""


@dataclass(frozen=True)
class QueueRow:
    task: TaskRow
    currency: str
    due_date: date | None
    balance: Decimal | None
    next_due: date | None
    person: Person | None

    def dpd(self, now: datetime) -> int | None:
        """Calendar days past due on the borrower's calendar (the loan's own figure may be lower
        while a hold stops the clock: its page shows that one)."""
        if self.due_date is None:
            return None
        zone = self.person.timezone if self.person is not None else "UTC"
        try:
            today = now.astimezone(ZoneInfo(zone)).date()
        except (KeyError, ValueError):
            today = now.date()
        return max((today - self.due_date).days, 0)


def _balance_order() -> Any:
    handed_over = (
        cast(LoanRow.principal, Float)
        + cast(LoanRow.interest, Float)
        + cast(LoanRow.fees, Float)
        + cast(LoanRow.penalties, Float)
    )
    return func.coalesce(cast(LoanMark.outstanding, Float), handed_over)


def priority(now: datetime) -> list[Any]:
    """ORDER BY of the queue (module docstring)."""
    soon = now.date() + timedelta(days=DUE_SOON_DAYS)
    return [
        case((col(TaskRow.due_by) < now, 0), else_=1),
        case((and_(col(LoanMark.next_due).is_not(None), col(LoanMark.next_due) <= soon), 0), else_=1),
        col(LoanRow.due_date).asc().nulls_last(),
        _balance_order().desc().nulls_last(),
        col(TaskRow.due_by),
        col(TaskRow.id),
    ]


def _mine(principal: Principal) -> Any:
    """The tasks a collector may see: their queues' and those given to them."""
    return or_(col(TaskRow.queue).in_(principal.queues), col(TaskRow.assignee) == principal.name)


def _base(principal: Principal, queue: str | None) -> Any:
    query = (
        select(TaskRow, LoanRow, LoanMark, BorrowerRow.timezone)
        .join(LoanRow, col(LoanRow.loan_id) == col(TaskRow.loan_id), isouter=True)
        .join(LoanMark, col(LoanMark.loan_id) == col(TaskRow.loan_id), isouter=True)
        .join(BorrowerRow, col(BorrowerRow.borrower_id) == col(LoanRow.borrower_id), isouter=True)
        .where(col(TaskRow.status) == "open")
    )
    if principal.role == "collector":
        query = query.where(_mine(principal))
    if queue:
        query = query.where(col(TaskRow.queue) == queue)
    return query


def queue_rows(
    desk: Desk, principal: Principal, now: datetime, page: int, size: int = PAGE_SIZE, queue: str | None = None
) -> tuple[list[QueueRow], int]:
    """One page of the queue in priority order, and how many open tasks it has in all."""
    with Session(desk.api.engine) as session:
        count_query = select(func.count()).select_from(TaskRow).where(col(TaskRow.status) == "open")
        if principal.role == "collector":
            count_query = count_query.where(_mine(principal))
        if queue:
            count_query = count_query.where(col(TaskRow.queue) == queue)
        total = int(session.exec(count_query).one())
        found = session.exec(_base(principal, queue).order_by(*priority(now)).offset(page * size).limit(size)).all()
    rows = []
    for task, loan, mark, tz in found:
        person = None
        if loan is not None:
            situation = Situation()
            if mark is not None:
                opted = [c for c in mark.opted_out.split(",") if c]
                situation = Situation(stopped=mark.stopped, held=mark.held, paused=mark.paused, opted_out=opted)
            person = Person(
                loan_id=loan.loan_id,
                borrower_id=loan.borrower_id,
                timezone=tz or "UTC",
                policy=loan.policy,
                situation=situation,
            )
        balance = (
            mark.outstanding
            if mark is not None
            else (loan.principal + loan.interest + loan.fees + loan.penalties if loan is not None else None)
        )
        rows.append(
            QueueRow(
                task=task,
                currency=loan.currency if loan is not None else "",
                due_date=loan.due_date if loan is not None else None,
                balance=balance,
                next_due=mark.next_due if mark is not None else None,
                person=person,
            )
        )
    return rows, total


def contact_answers(desk: Desk, rows: list[QueueRow], now: datetime) -> dict[str, GuardDecision | None]:
    """The guard's preview for each row's task (by task id; None: no contact or no rules)."""
    people = [r.person for r in rows if r.person is not None]
    history = histories(desk, people, now)
    answers: dict[str, GuardDecision | None] = {}
    for r in rows:
        channel = TASK_CHANNEL.get(r.task.kind)
        if r.person is None or channel is None:
            answers[r.task.task_id] = None
            continue
        answers[r.task.task_id] = preview(desk, r.person, channel, history.get(r.person.borrower_id, []), now)
    return answers


def local(at: datetime | None, zone: str) -> str:
    """A moment on the borrower's wall clock, as the page shows it."""
    if at is None:
        return ""
    try:
        return at.astimezone(ZoneInfo(zone)).strftime("%m-%d %H:%M")
    except (KeyError, ValueError):
        return at.astimezone(UTC).strftime("%m-%d %H:%M UTC")


def page_context(desk: Desk, principal: Principal, page: int, queue: str | None) -> dict[str, Any]:
    now = datetime.now(UTC)
    rows, total = queue_rows(desk, principal, now, page, queue=queue)
    return {
        "rows": rows,
        "total": total,
        "page": page,
        "pages": max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
        "answers": contact_answers(desk, rows, now),
        "now": now,
        "soon": now.date() + timedelta(days=DUE_SOON_DAYS),
        "local": local,
        "queue": queue or "",
    }


@router.get("/", response_class=HTMLResponse)
async def queue_page(
    request: Request,
    desk: DeskDep,
    me: Me,
    page: Annotated[int, Query(ge=0, le=100_000)] = 0,
    queue: Annotated[str | None, Query(max_length=128)] = None,
    empty: Annotated[int, Query(ge=0, le=1)] = 0,
) -> HTMLResponse:
    if queue and me.principal.role == "collector" and queue not in me.principal.queues:
        raise ApiError(403, f"queue {queue!r} is not one of yours")
    context = await in_thread(page_context, desk, me.principal, page, queue)
    return render(request, desk, "queue.html", context | {"empty": empty}, me=me)


def top_unclaimed(desk: Desk, principal: Principal, now: datetime, limit: int) -> list[str]:
    """The ids of the first unclaimed open tasks the visitor may take, in priority order."""
    with Session(desk.api.engine) as session:
        query = _base(principal, None).where(col(TaskRow.assignee) == "").order_by(*priority(now)).limit(limit)
        return [task.task_id for task, *_ in session.exec(query).all()]


async def take_next(desk: Desk, principal: Principal) -> TaskRow | None:
    """Claim the top unclaimed task (the API's claim: a task someone took a moment earlier is a
    409 there, and the next one is tried). None: nothing left to take."""
    candidates = await in_thread(top_unclaimed, desk, principal, datetime.now(UTC), TAKE_TRIES)
    for task_id in candidates:
        try:
            return await work.claim(desk.api, principal, task_id)
        except ApiError as exc:
            if exc.status != 409:
                raise
    return None


@router.post("/next")
async def next_task(request: Request, desk: DeskDep, me: Me) -> Response:
    taken = await take_next(desk, me.principal)
    if taken is None:
        return redirect(f"{PREFIX}/?empty=1", request)
    return redirect(f"{PREFIX}/loans/{taken.loan_id}?task={taken.task_id}", request)


@router.post("/tasks/{task_id:path}/claim")
async def claim_task(task_id: str, request: Request, desk: DeskDep, me: Me) -> Response:
    """Claim one task from the list (a task of another queue is refused by the API's rule)."""
    taken = await work.claim(desk.api, me.principal, task_id)
    return redirect(f"{PREFIX}/loans/{taken.loan_id}?task={taken.task_id}", request)
