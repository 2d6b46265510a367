"""Record the history of a screened loan for the replay test:
`CODEC_KEY_FILE=/nonexistent python -m tests.histories.record_screened v7` (no codec key, so
the file holds plain payloads any checkout can replay).

A loan handed over with policy `auto` while the sample experiment runs
(strategies/experiments/sample.toml): its `prepare` answers with a strategy, its start writes
the strategy's timeline and audit entries and upserts the segment and arm search attributes;
then it takes a promise and a payment in full. Like `record.py`, run it only when a workflow
version is released and keep old files.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

import starter
from db.store import make_engine
from infra.process import venv_binary
from infra.settings import ROOT
from infra.temporal import data_converter, workflow_id
from models import Payment
from models.arrangements import PromiseRequest
from models.experiment import AUTO
from ops import experiments
from tests.helpers import Harness, make_loan
from worker import create_worker

HERE = Path(__file__).parent
SAMPLE = ROOT / "strategies" / "experiments" / "sample.toml"


async def record(suffix: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=data_converter()
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/record.db"
            h = Harness(env=env, engine=make_engine(db), task_queue="record")
            async with create_worker(env.client, task_queue="record", database_url=db):
                experiments.start(h.engine, SAMPLE.read_text(encoding="utf-8"), str(SAMPLE))
                loan = make_loan("REC-SCREENED", dpd=12, now=await h.now(), principal="2000.00")
                await h.start(loan, AUTO)
                status = await h.status(loan)
                assert status.strategy is not None, "the loan was not screened"
                today = await h.today(loan)
                await starter.promise_to_pay(
                    h.client, loan.loan_id, PromiseRequest(amount=Decimal(500), date=today + timedelta(days=3))
                )
                await h.at_dpd(loan, 20)
                rest = (await h.status(loan)).outstanding.total
                await starter.register_payment(
                    h.client,
                    loan.loan_id,
                    Payment(payment_id="REC-SCREENED-1", amount=rest, currency="CNY", paid_at=datetime.now(UTC)),
                )
                await h.env.sleep(timedelta(days=2))
                history = await h.client.get_workflow_handle(workflow_id(loan.loan_id)).fetch_history()
                path = HERE / f"screened-{suffix}.json"
                path.write_text(history.to_json())
                print(f"wrote {path} ({len(history.events)} events; {status.strategy.segment}, {status.strategy.arm})")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v7"))
