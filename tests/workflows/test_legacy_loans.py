"""Loans started before the decider (workflow type `CollectionWorkflow`, workflows/legacy) keep
running on the first version's code, and the client still serves them: a payment, a report, a
negotiation request and a fresh status reach them through that version's updates."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from temporalio.client import WorkflowExecutionStatus

import starter
from infra.temporal import workflow_id
from models import CollectionInput, Payment, Stage
from models.arrangements import PromiseRequest
from tests.helpers import Harness, make_loan


async def test_a_loan_of_the_first_version_is_served_through_its_updates(harness: Harness) -> None:
    h = harness
    loan = make_loan(dpd=3, now=await h.now())
    await h.client.start_workflow(
        "CollectionWorkflow",
        CollectionInput(loan=loan, policy="default"),
        id=workflow_id(loan.loan_id),
        task_queue=h.task_queue,
    )
    await h.settle()
    status = await starter.get_status(h.client, loan.loan_id)
    assert status.days_past_due == 3 and status.stage is Stage.early

    receipt = await starter.register_payment(
        h.client,
        loan.loan_id,
        Payment(
            payment_id=f"P-{uuid.uuid4().hex[:6]}", amount=Decimal("100.00"), currency="CNY", paid_at=datetime.now(UTC)
        ),
    )
    assert receipt.outstanding.total == loan.balance().total - Decimal("100.00")
    decision = await starter.promise_to_pay(
        h.client, loan.loan_id, PromiseRequest(amount=Decimal(500), date=await h.today(loan) + timedelta(days=3))
    )
    assert decision.accepted, decision.reason

    desc = await h.client.get_workflow_handle(workflow_id(loan.loan_id)).describe()
    assert desc.workflow_type == "CollectionWorkflow" and desc.status == WorkflowExecutionStatus.RUNNING
    status = await starter.get_status(h.client, loan.loan_id)
    assert status.paused_reason == "promise to pay" and status.paid_total == Decimal("100.00")
