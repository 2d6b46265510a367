"""A payment in full that lands while the loop runs an activity of its own closes the loan, and
nothing of the ladder runs after it (found by tests/system/test_crash.py in the first workflow version,
where a late fee was posted a moment after a payment in full). In the decider's shell the handler
records the payment; the loop takes it at its next quiet moment, once the batch in flight is
done, and never feeds the ladder another moment."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlmodel import Session, select
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

import starter
from activities.effects import EffectActivities
from db.store import make_engine
from db.tables import LedgerEntry
from models import CollectionStatus, Payment, Stage
from models.effects import BatchResult, EffectBatch
from tests.helpers import make_loan
from worker import create_worker


async def test_paid_while_the_loop_writes_off(
    env: WorkflowEnvironment, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    real = EffectActivities.perform

    @activity.defn(name="perform")
    async def gated(self: EffectActivities, batch: EffectBatch) -> BatchResult:  # the write-off's batch
        if not entered.is_set():
            entered.set()
            await release.wait()
        return await asyncio.to_thread(real, self, EffectBatch.model_validate(batch))

    monkeypatch.setattr(EffectActivities, "perform", gated)
    queue = f"test-{uuid.uuid4()}"
    loan = make_loan(dpd=200, now=await env.get_current_time())  # write-off is due at once
    async with create_worker(env.client, task_queue=queue, database_url=db_url):
        await starter.start_collection(env.client, loan, task_queue=queue)
        await asyncio.wait_for(entered.wait(), 30)
        paying = asyncio.create_task(
            starter.register_payment(
                env.client,
                loan.loan_id,
                Payment(payment_id="P-1", amount=loan.balance().total, currency="CNY", paid_at=datetime.now(UTC)),
            )
        )
        await asyncio.sleep(1)  # the payment is recorded while the batch waits
        assert not paying.done()
        release.set()
        receipt = await paying
        assert receipt.closed and receipt.stage is Stage.paid
        handle = env.client.get_workflow_handle(f"collection-{loan.loan_id}", result_type=CollectionStatus)
        status = await handle.result()

    assert status.stage is Stage.paid and status.outstanding.total == Decimal(0)
    actions = [e.action for e in status.timeline]
    assert actions.index("write_off") < actions.index("payment") < actions.index("collection_closed")
    assert "recovery_ended" not in actions and "late_fee" not in actions
    with Session(make_engine(db_url)) as session:
        rows = session.exec(select(LedgerEntry).where(LedgerEntry.loan_id == loan.loan_id)).all()
    assert sorted({r.kind for r in rows}) == ["allocation", "charge_off", "payment"]
    assert [r.reference for r in rows if r.kind == "payment"] == ["P-1"]
