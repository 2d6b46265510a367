"""The desk's queue read from the database (SQLite and PostgreSQL): the order (a passed outcome
deadline first, then an arrangement due within three days, then the most days past due, then
the largest balance), a collector's view limited to their queues and the tasks given to them,
paging, and "take next" racing: twenty collectors taking next at once get twenty different
tasks (the API's conditional claim), and nobody gets a task someone holds."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import Session, select

from api import create_app
from api.auth import Principal
from db.desk_marks import LoanMark
from db.tables import BorrowerRow, LoanRow, TaskRow
from desk.queue import queue_rows, take_next
from desk.state import Desk

NOW = datetime.now(UTC)
TODAY = NOW.date()
SECRET = "db-tests-desk-secret-0123456789abcdef"


def add_loan(
    session: Session,
    loan_id: str,
    *,
    dpd: int,
    principal: str = "1000.00",
    queue: str = "collectors",
    due_by: datetime | None = None,
    next_due: int | None = None,
    assignee: str = "",
) -> None:
    session.add(BorrowerRow(borrower_id=f"B-{loan_id}", name="x", timezone="Asia/Shanghai", language="zh"))
    session.add(
        LoanRow(
            loan_id=loan_id,
            borrower_id=f"B-{loan_id}",
            currency="CNY",
            principal=Decimal(principal),
            interest=Decimal(0),
            fees=Decimal(0),
            penalties=Decimal(0),
            due_date=TODAY - timedelta(days=dpd),
        )
    )
    session.add(
        TaskRow(
            task_id=f"{loan_id}/call",
            loan_id=loan_id,
            workflow_id=f"collection-{loan_id}",
            kind="call",
            queue=queue,
            template="call",
            attempt=1,
            brief="",
            due_by=due_by or NOW + timedelta(hours=24),
            assignee=assignee,
        )
    )
    if next_due is not None:
        session.add(
            LoanMark(
                loan_id=loan_id,
                outstanding=Decimal(principal),
                currency="CNY",
                next_due=TODAY + timedelta(days=next_due),
            )
        )


def desk_of(db_url: str) -> Desk:
    app = create_app(database_url=db_url, deliver_webhooks=False, desk_secret=SECRET)
    desk: Desk = app.state.desk
    return desk


SUPERVISOR = Principal(name="boss", role="supervisor", token_id="desk")
COLLECTOR = Principal(name="li.wei", role="collector", token_id="desk", queues=("collectors",))


def test_the_queue_is_in_priority_order_and_a_collector_sees_their_own(db_url: str, engine: Engine) -> None:
    with Session(engine) as session:
        add_loan(session, "DPD-90-SMALL", dpd=90, principal="100.00")
        add_loan(session, "DPD-90-LARGE", dpd=90, principal="9000.00")
        add_loan(session, "DPD-10", dpd=10)
        add_loan(session, "OVERDUE-TASK", dpd=5, due_by=NOW - timedelta(hours=1))
        add_loan(session, "PROMISE-SOON", dpd=6, next_due=2)
        add_loan(session, "PROMISE-LATER", dpd=7, next_due=10)
        add_loan(session, "FIELD", dpd=120, queue="field-agents")
        add_loan(session, "FIELD-GIVEN", dpd=50, queue="field-agents", assignee="li.wei")
        session.commit()
    desk = desk_of(db_url)
    rows, total = queue_rows(desk, SUPERVISOR, NOW, 0)
    assert total == 8
    assert [r.task.loan_id for r in rows] == [
        "OVERDUE-TASK",
        "PROMISE-SOON",
        "FIELD",
        "DPD-90-LARGE",
        "DPD-90-SMALL",
        "FIELD-GIVEN",
        "DPD-10",
        "PROMISE-LATER",
    ]
    mine, count = queue_rows(desk, COLLECTOR, NOW, 0)
    assert (
        count == 7 and "FIELD" not in [r.task.loan_id for r in mine] and "FIELD-GIVEN" in [r.task.loan_id for r in mine]
    )
    second, _ = queue_rows(desk, SUPERVISOR, NOW, 1, size=3)
    assert [r.task.loan_id for r in second] == ["DPD-90-LARGE", "DPD-90-SMALL", "FIELD-GIVEN"]
    desk.api.engine.dispose()


async def test_collectors_taking_next_at_once_get_different_tasks(db_url: str, engine: Engine) -> None:
    with Session(engine) as session:
        for n in range(20):
            add_loan(session, f"RACE-{n:02d}", dpd=5 + n)
        add_loan(session, "HELD", dpd=200, assignee="someone.else")
        session.commit()
    desk = desk_of(db_url)
    people = [Principal(name=f"c{n}", role="collector", token_id="desk", queues=("collectors",)) for n in range(20)]
    taken = await asyncio.gather(*(take_next(desk, p) for p in people))
    assert all(t is not None for t in taken)
    ids = [t.task_id for t in taken if t is not None]
    assert len(set(ids)) == 20 and "HELD/call" not in ids
    with Session(engine) as session:
        held = {r.task_id: r.assignee for r in session.exec(select(TaskRow)).all()}
    assert {held[t.task_id] for t in taken if t is not None} == {p.name for p in people}
    assert held["HELD/call"] == "someone.else"
    assert await take_next(desk, people[0]) is None  # nothing left to take
    desk.api.engine.dispose()
