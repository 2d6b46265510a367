"""A payment in full or a dispute that comes while the conduct guard decides a reminder: the loan
takes the request at its next quiet moment, once that contact is done (`workflows/collection.py`,
`_next`: taken anywhere else, what the loan does could differ between a live run and its replay).
The reminder, decided before the request came, goes out once; then the request takes effect and
nothing more is sent: paid, only the confirmation follows; disputed, the loan pauses and contacts
no one. (The decider itself refuses a contact overtaken while the guard decided, GEN-OVERTAKEN,
for a driver that applies requests at once: tests/unit/test_lifecycle.py.)"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

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
from tests.helpers import daytime_zone, make_loan
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


async def test_paid_while_the_guard_decides_the_reminder_goes_and_then_only_the_confirmation(
    env: WorkflowEnvironment, db_url: str, gate: Gate, worker_queue: str
) -> None:
    entered, release = gate
    loan = make_loan(dpd=1, now=await env.get_current_time(), tz=daytime_zone())  # the DPD 1 reminder is due now
    await starter.start_collection(env.client, loan, task_queue=worker_queue)
    await asyncio.wait_for(entered.wait(), 30)  # the reminder's guard decision is in flight
    paying = asyncio.create_task(
        starter.register_payment(
            env.client,
            loan.loan_id,
            Payment(payment_id="P-1", amount=loan.balance().total, currency="CNY", paid_at=datetime.now(UTC)),
        )
    )
    await asyncio.sleep(1)
    assert not paying.done()  # recorded, waiting for the contact in flight
    release.set()
    assert (await paying).closed
    status = await env.client.get_workflow_handle(f"collection-{loan.loan_id}", result_type=CollectionStatus).result()
    assert status.stage is Stage.paid
    assert _messages(db_url, loan.loan_id) == ["paid_confirmation", "reminder_first"]
    actions = [(e.action, e.outcome) for e in status.timeline]
    assert actions.index(("reminder_first", "sent")) < actions.index(("payment", "applied"))


async def test_disputed_while_the_guard_decides_the_reminder_goes_and_then_nothing(
    env: WorkflowEnvironment, db_url: str, gate: Gate, worker_queue: str
) -> None:
    entered, release = gate
    loan = make_loan(dpd=1, now=await env.get_current_time(), tz=daytime_zone())
    await starter.start_collection(env.client, loan, task_queue=worker_queue)
    await asyncio.wait_for(entered.wait(), 30)
    disputing = asyncio.create_task(
        starter.raise_dispute(env.client, loan.loan_id, DisputeRequest(reason="not my loan"))
    )
    await asyncio.sleep(1)
    release.set()
    assert (await disputing).accepted
    await env.sleep(timedelta(days=10))  # the DPD 3 reminders and the DPD 5 call would fall in here
    status = await starter.get_status(env.client, loan.loan_id)
    assert status.paused_reason == "dispute open" and not status.closed
    assert _messages(db_url, loan.loan_id) == ["reminder_first"]
    assert status.open_tasks == []
