"""Record the histories of a loan that continued as new, for the replay test:
`CODEC_KEY_FILE=/nonexistent python -m tests.histories.record_continued v4`.

The time-skipping server never suggests continue-as-new below 4,096 events, so this runs on
the embedded dev server with a tiny `limit.historyCount.suggestContinueAsNew`. One loan takes
payments, a promise and status calls until it has rolled over twice, then is paid in full.
Each run is written on its own (`continued-run1-v4.json` ends in ContinuedAsNew,
`continued-run2-v4.json` starts from the carried state and ends in ContinuedAsNew,
`continued-run3-v4.json` starts from carried state and completes), so the replay test
covers both ends of the boundary: the drain before it and a run that begins from state.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment

import starter
from infra.process import exit_process, venv_binary
from infra.temporal import data_converter, with_converter
from models import Payment
from models.arrangements import PromiseRequest
from models.schedule import local_date
from tests.helpers import TZ, make_loan
from worker import create_worker

HERE = Path(__file__).parent
THRESHOLD = 40
CAN = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW


def _payment(n: int, amount: str, source: str = "api") -> Payment:
    return Payment(
        payment_id=f"REC-CAN-{n}", amount=Decimal(amount), currency="CNY", paid_at=datetime.now(UTC), source=source
    )


async def _runs(client: Client, wf_id: str, run_id: str | None) -> list[WorkflowHistory]:
    """Every run of `wf_id` from the first, following the continued-as-new events."""
    runs: list[WorkflowHistory] = []
    while run_id is not None:
        history = await client.get_workflow_handle(wf_id, run_id=run_id).fetch_history()
        runs.append(history)
        last = history.events[-1]
        run_id = (
            last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
            if last.event_type == CAN
            else None
        )
    return runs


async def _drive(client: Client, queue: str) -> list[WorkflowHistory]:
    loan = make_loan("REC-CAN", dpd=0)
    wf_id = await starter.start_collection(client, loan, task_queue=queue)
    first_run = (await client.get_workflow_handle(wf_id).describe()).run_id
    today = local_date(datetime.now(UTC), TZ)
    await starter.promise_to_pay(
        client, loan.loan_id, PromiseRequest(amount=Decimal(300), date=today + timedelta(days=5))
    )
    n = 0
    while len(await _runs(client, wf_id, first_run)) < 3:
        n += 1
        if n > 200:
            raise RuntimeError("no continue-as-new after 200 requests: is the threshold applied?")
        if n % 3 == 0:
            await starter.send_bank_payment(client, loan.loan_id, _payment(n, "10.00", source="bank"))
        else:
            await starter.register_payment(client, loan.loan_id, _payment(n, "10.00"))
        await starter.get_status(client, loan.loan_id)
    rest = (await starter.get_status(client, loan.loan_id)).outstanding.total
    await starter.register_payment(client, loan.loan_id, _payment(n + 1, str(rest)))
    await client.get_workflow_handle(wf_id).result()
    return await _runs(client, wf_id, first_run)


async def record(suffix: str) -> None:
    env = await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=data_converter(),
        dev_server_extra_args=[
            "--dynamic-config-value",
            f"limit.historyCount.suggestContinueAsNew={THRESHOLD}",
            "--log-level",
            "error",
        ],
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            queue = f"record-{uuid.uuid4()}"
            async with create_worker(env.client, task_queue=queue, database_url=f"sqlite:///{tmp}/record.db"):
                runs = await _drive(with_converter(env.client), queue)
    for i, history in enumerate(runs, start=1):
        path = HERE / f"continued-run{i}-{suffix}.json"
        path.write_text(history.to_json())
        print(f"wrote {path} ({len(history.events)} events, ends with {EventType.Name(history.events[-1].event_type)})")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v4"))
    exit_process(0)
