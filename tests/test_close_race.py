"""A payment in full that lands while the loop awaits an activity of its own closes the loan:
the loop runs no further ladder item (found by tests/test_crash.py, where a late fee was posted
on a loan a moment after it was paid in full; patch `closed-recheck-1`)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from sqlmodel import Session, select
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

import starter
from activities.admin import AdminActivities
from db.store import make_engine
from db.tables import LedgerEntry
from models import CollectionStatus, Payment, Stage
from tests.conftest import make_loan
from worker import create_worker


async def test_paid_while_the_loop_registers_search_attributes(
    env: WorkflowEnvironment, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    @activity.defn(name="ensure_search_attributes")
    async def gated(self: AdminActivities) -> bool:  # the loop's first await after the start
        entered.set()
        await release.wait()
        return False

    monkeypatch.setattr(AdminActivities, "ensure_search_attributes", gated)
    queue = f"test-{uuid.uuid4()}"
    loan = make_loan(dpd=200, now=await env.get_current_time())  # write-off is due at once
    async with create_worker(env.client, task_queue=queue, database_url=db_url):
        await starter.start_collection(env.client, loan, task_queue=queue)
        await asyncio.wait_for(entered.wait(), 30)
        receipt = await starter.register_payment(env.client, loan.loan_id, Payment(
            payment_id="P-1", amount=loan.balance().total, currency="CNY", paid_at=datetime.now(timezone.utc)))
        assert receipt.closed
        release.set()
        handle = env.client.get_workflow_handle(f"collection-{loan.loan_id}", result_type=CollectionStatus)
        status = await handle.result()

    assert status.stage is Stage.paid and status.outstanding.total == Decimal(0)
    assert not status.charged_off
    assert [e.action for e in status.timeline if e.action in ("write_off", "late_fee")] == []
    with Session(make_engine(db_url)) as session:
        kinds = sorted({r.kind for r in session.exec(select(LedgerEntry).where(LedgerEntry.loan_id == loan.loan_id))})
    assert kinds == ["allocation", "payment"]
