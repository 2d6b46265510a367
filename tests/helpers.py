"""Test harness for workflow tests on the time-skipping server: start loans, move the clock
to a given day past due, read the database."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, select
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

import starter
from models import CollectionStatus, OverdueLoan
from models.schedule import at_local, days_past_due, local_date

Row = TypeVar("Row", bound=SQLModel)


@dataclass
class Harness:
    env: WorkflowEnvironment
    engine: Engine
    task_queue: str

    @property
    def client(self) -> Client:
        return self.env.client

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def start(self, loan: OverdueLoan, policy: str = "default") -> str:
        return await starter.start_collection(self.client, loan, policy, task_queue=self.task_queue)

    async def at_dpd(self, loan: OverdueLoan, dpd: int, clock: time = time(12, 0)) -> None:
        """Skip time to `clock` local time on day `dpd` past due (noon: clear of 10:00 steps)."""
        target = at_local(loan.due_date + timedelta(days=dpd), clock, loan.borrower.timezone)
        wait = target - await self.now()
        assert wait > timedelta(0), f"already past DPD {dpd}"
        await self.env.sleep(wait)

    async def on_date(self, loan: OverdueLoan, day: date, clock: time = time(12, 0)) -> None:
        """Skip time to `clock` on calendar day `day` in the borrower's zone."""
        await self.at_dpd(loan, (day - loan.due_date).days, clock)

    async def today(self, loan: OverdueLoan) -> date:
        return local_date(await self.now(), loan.borrower.timezone)

    async def settle(self) -> None:
        """Let work already due (a catch-up step right after start) finish: a minute passes."""
        await self.env.sleep(timedelta(minutes=1))

    async def status(self, loan: OverdueLoan, fresh: bool = True) -> CollectionStatus:
        """The loan's status once the effects of everything it was told are written (a request
        is answered before its effects run, so tests that read the database wait for them)."""
        await self.quiet(loan)
        return await starter.get_status(self.client, loan.loan_id, fresh=fresh)

    async def quiet(self, loan: OverdueLoan, timeout: float = 30.0) -> None:
        """Until the loan has no effect queued or running (real time: the clock does not move)."""
        await starter.wait_quiet(self.client, loan.loan_id, timeout)

    async def is_running(self, loan: OverdueLoan, settle_seconds: float = 5.0) -> bool:
        """Whether the loan's workflow still runs, allowing a closing workflow a few real
        seconds to finish its last activities (they are not time the server can skip)."""
        handle = self.client.get_workflow_handle(f"collection-{loan.loan_id}")
        for _ in range(int(settle_seconds / 0.05)):
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return False
            await asyncio.sleep(0.05)
        return True

    def rows(self, table: type[Row], loan_id: str, order: Any = None) -> list[Row]:
        with Session(self.engine) as session:
            query = select(table).where(table.loan_id == loan_id)  # type: ignore[attr-defined]
            if order is not None:
                query = query.order_by(order)
            return list(session.exec(query).all())


def dpd_of(at: datetime, loan: OverdueLoan) -> int:
    return days_past_due(at, loan.due_date, loan.borrower.timezone)


def timeline_rows(status: CollectionStatus, loan: OverdueLoan) -> list[tuple[int, str, str, str]]:
    """(DPD, action, channel, outcome) for each timeline entry."""
    return [(dpd_of(e.at, loan), e.action, e.channel, e.outcome) for e in status.timeline]
