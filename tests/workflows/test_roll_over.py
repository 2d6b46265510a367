"""A run continues as new at HISTORY_CAP events even when the server never suggests it, and
when an operator asks (`roll_over`, the upgrade guide's tool), carrying its whole state
(time-skipping server; `roll_over` by start time needs visibility: tests/system/test_roll_over.py)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import UnsandboxedWorkflowRunner

import starter
import workflows.collection as collection
from client.errors import RequestRejected
from client.protocol import ask
from db.tables import LedgerEntry
from infra.temporal import workflow_id
from models import Payment, Stage
from models.protocol import StatusAsked
from tests.helpers import Harness, make_loan, run_ids
from worker import create_worker


def _payment(pid: str, amount: str) -> Payment:
    return Payment(payment_id=pid, amount=Decimal(amount), currency="CNY", paid_at=datetime.now(UTC))


def _payments_in_ledger(h: Harness, loan_id: str) -> list[tuple[str, Decimal]]:
    """(reference, amount) of each payment row of the loan."""
    with Session(h.engine) as session:
        query = select(LedgerEntry).where(LedgerEntry.loan_id == loan_id, LedgerEntry.kind == "payment")
        rows = session.exec(query).all()
    return sorted((r.reference, r.amount) for r in rows)


async def _status_when_rolled(h: Harness, loan_id: str, first_run: str) -> None:
    """Wait (real time, the clock does not move) until the loan runs a new run."""
    for _ in range(100):
        if (await run_ids(h.client, loan_id))[1] != first_run:
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the loan did not continue as new")


@pytest.fixture
async def capped(
    env: WorkflowEnvironment, db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Harness]:
    """A worker whose workflows see HISTORY_CAP = 80 (unsandboxed, so the patched module
    constant is the one the workflow reads; the server's suggestion stays at 4,096)."""
    monkeypatch.setattr(collection, "HISTORY_CAP", 80)
    queue = f"cap-{uuid.uuid4()}"
    async with create_worker(
        env.client, task_queue=queue, database_url=db_url, workflow_runner=UnsandboxedWorkflowRunner()
    ):
        yield Harness(env=env, engine=engine, task_queue=queue)


async def test_history_cap_continues_as_new_without_the_servers_suggestion(capped: Harness) -> None:
    h = capped
    loan = make_loan(dpd=0, now=await h.now())
    await h.start(loan)
    first, _ = await run_ids(h.client, loan.loan_id)
    paid = []
    for n in range(20):  # each request (a status request, a payment) adds a handful of events
        if n % 4 == 0:
            receipt = await starter.register_payment(h.client, loan.loan_id, _payment(f"CAP-{n}", "10.00"))
            paid.append(receipt.payment_id)
        await ask(h.client, loan.loan_id, StatusAsked(), RequestRejected)  # a request, unlike get_status
    await _status_when_rolled(h, loan.loan_id, first)
    history = await h.client.get_workflow_handle(workflow_id(loan.loan_id), run_id=first).fetch_history()
    assert len(history.events) < 4096  # the server never suggested it: the cap did
    status = await h.status(loan)
    assert status.paid_total == Decimal("50.00") and status.stage is Stage.early
    assert _payments_in_ledger(h, loan.loan_id) == sorted((p, Decimal("10.00")) for p in paid)
    with pytest.raises(Exception, match=r"duplicate|already"):  # the carried state still knows the ids
        await starter.register_payment(h.client, loan.loan_id, _payment("CAP-0", "10.00"))


async def test_roll_over_carries_state_and_skips_closed_loans(harness: Harness) -> None:
    h = harness
    now = await h.now()
    open_loan, paid_loan = (
        make_loan(dpd=3, now=now),
        make_loan(dpd=3, now=now, principal="100.00", interest="0.00", fees="0.00"),
    )
    for loan in (open_loan, paid_loan):
        await h.start(loan)
    await h.settle()
    await starter.register_payment(h.client, open_loan.loan_id, _payment("RO-1", "250.00"))
    await starter.register_payment(h.client, paid_loan.loan_id, _payment("RO-2", "100.00"))
    await h.settle()  # the paid loan finishes (confirmation sent) and completes
    assert (await h.status(paid_loan)).closed
    before = await h.status(open_loan)
    first, _ = await run_ids(h.client, open_loan.loan_id)

    asked = await starter.roll_over(h.client, [open_loan.loan_id, paid_loan.loan_id, "NO-SUCH-LOAN"])
    assert asked == [open_loan.loan_id]
    await _status_when_rolled(h, open_loan.loan_id, first)
    after = await h.status(open_loan)
    assert after.paid_total == before.paid_total == Decimal("250.00")
    assert after.outstanding == before.outstanding and after.timeline[: len(before.timeline)] == before.timeline
    await h.at_dpd(open_loan, 5)  # the ladder goes on in the new run: the DPD 5 call task is open
    assert any(t.task_id.startswith(f"{open_loan.loan_id}/call@5") for t in (await h.status(open_loan)).open_tasks)
