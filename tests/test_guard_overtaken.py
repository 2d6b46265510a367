"""A payment in full or a dispute that lands while the conduct guard decides a collection
contact: the contact is not made (patch `guard-overtaken-1`; seen by tests/test_crash.py's
author as a gap: the loop re-checked the loan after other awaits, not after the guard's)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest
from sqlmodel import Session, select
from temporalio import activity
from temporalio.testing import WorkflowEnvironment

import starter
from activities.guard import GuardActivities
from db.store import make_engine
from db.tables import OutboxMessage
from models import CollectionStatus, Payment, Stage
from models.arrangements import DisputeRequest
from models.conduct import GuardDecision
from models.requests import GuardRequest
from tests.conftest import make_loan
from tests.test_portfolio import daytime_zone
from worker import create_worker

Gate = tuple[asyncio.Event, asyncio.Event]


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """The guard's activity waits, on its first call only, until the test releases it."""
    entered, release = asyncio.Event(), asyncio.Event()
    real = GuardActivities.request_contact

    @activity.defn(name="request_contact")
    async def gated(self: GuardActivities, req: GuardRequest) -> GuardDecision:
        if not entered.is_set():
            entered.set()
            await release.wait()
        # Assigned to the class after the fact, the function's argument type is not seen: the
        # payload arrives as a dict.
        return real(self, GuardRequest.model_validate(req))

    monkeypatch.setattr(GuardActivities, "request_contact", gated)
    return entered, release


@pytest.fixture
async def worker_queue(env: WorkflowEnvironment, db_url: str, gate: Gate) -> AsyncIterator[str]:
    queue = f"test-{uuid.uuid4()}"
    async with create_worker(env.client, task_queue=queue, database_url=db_url):
        yield queue


def _messages(db_url: str, loan_id: str) -> list[str]:
    with Session(make_engine(db_url)) as session:
        return sorted(m.template for m in session.exec(select(OutboxMessage).where(OutboxMessage.loan_id == loan_id)))


async def test_paid_while_the_guard_decides_sends_no_reminder(
    env: WorkflowEnvironment, db_url: str, gate: Gate, worker_queue: str
) -> None:
    entered, release = gate
    loan = make_loan(dpd=1, now=await env.get_current_time(), tz=daytime_zone())  # the DPD 1 reminder is due now
    await starter.start_collection(env.client, loan, task_queue=worker_queue)
    await asyncio.wait_for(entered.wait(), 30)  # the reminder's guard decision is in flight
    receipt = await starter.register_payment(env.client, loan.loan_id, Payment(
        payment_id="P-1", amount=loan.balance().total, currency="CNY", paid_at=datetime.now(timezone.utc)))
    assert receipt.closed
    release.set()
    status = await env.client.get_workflow_handle(f"collection-{loan.loan_id}", result_type=CollectionStatus).result()
    assert status.stage is Stage.paid
    assert _messages(db_url, loan.loan_id) == ["paid_confirmation"]
    refused = [e for e in status.timeline if e.outcome == "refused"]
    assert [e.action for e in refused] == ["reminder_first"] and "GEN-OVERTAKEN" in refused[0].detail


async def test_disputed_while_the_guard_decides_sends_no_reminder(
    env: WorkflowEnvironment, db_url: str, gate: Gate, worker_queue: str
) -> None:
    entered, release = gate
    loan = make_loan(dpd=1, now=await env.get_current_time(), tz=daytime_zone())
    await starter.start_collection(env.client, loan, task_queue=worker_queue)
    await asyncio.wait_for(entered.wait(), 30)
    decision = await starter.raise_dispute(env.client, loan.loan_id, DisputeRequest(reason="not my loan"))
    assert decision.accepted
    release.set()
    await env.sleep(60)  # let the loop finish the step
    status = await starter.get_status(env.client, loan.loan_id)
    assert status.paused_reason is not None and not status.closed
    assert _messages(db_url, loan.loan_id) == []
