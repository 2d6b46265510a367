"""A worker cloned from `create_worker`'s `config()` (what outside suites and tuning scripts do)
runs loans the same way: with the single-batch job processing the decider's shell relies on
(worker.SingleBatchRunner), recorded in the loan's history."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal

from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import starter
from infra.temporal import workflow_id
from models import CollectionStatus, Payment, Stage
from tests.helpers import SINGLE_BATCH, lang_flags, make_loan
from worker import SingleBatchRunner, create_worker


async def test_a_cloned_worker_keeps_the_single_batch_flag(env: WorkflowEnvironment, db_url: str) -> None:
    original = create_worker(env.client, task_queue=f"test-{uuid.uuid4()}", database_url=db_url)
    config = original.config()
    assert isinstance(config.get("workflow_runner"), SingleBatchRunner)
    queue = config["task_queue"] = f"test-{uuid.uuid4()}"  # one worker per queue and client (the core's rule)
    async with Worker(**config):  # the clone; the original never runs
        loan = make_loan(dpd=3, now=await env.get_current_time())
        await starter.start_collection(env.client, loan, "default", task_queue=queue)
        receipt = await starter.register_payment(
            env.client,
            loan.loan_id,
            Payment(payment_id="P-clone", amount=loan.balance().total, currency="CNY", paid_at=datetime.now(UTC)),
        )
        assert receipt.outstanding.total == Decimal(0)
        handle = env.client.get_workflow_handle(workflow_id(loan.loan_id), result_type=CollectionStatus)
        assert (await handle.result()).stage is Stage.paid
        history = await handle.fetch_history()
    assert SINGLE_BATCH in lang_flags(history)
