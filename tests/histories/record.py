"""Record workflow histories for the replay test: `python -m tests.histories.record`.

Run this only when a workflow version is released: the files it writes are what running
loans look like, and `tests/test_replay.py` fails any later change that would break them.
Keep old files; add new ones beside them with a new suffix.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import datetime, time, timezone
from decimal import Decimal
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

import config
import starter
from models import AgencyReport, CourtReport, Payment, TaskOutcome, TaskReport
from tests.conftest import make_loan
from tests.support import Harness
from worker import create_worker

HERE = Path(__file__).parent


async def record(suffix: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=config.venv_binary("temporal-test-server"), data_converter=config.DATA_CONVERTER
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/record.db"
            from db.store import make_engine

            h = Harness(env=env, engine=make_engine(db), task_queue="record")
            async with create_worker(env.client, task_queue="record", database_url=db):
                await _scenarios(h, suffix)


async def _scenarios(h: Harness, suffix: str) -> None:
    now = await h.now()
    ladder = make_loan("REC-LADDER", dpd=0, now=now)
    paid = make_loan("REC-PAID", dpd=0, now=now)
    reports = make_loan("REC-REPORTS", dpd=55, now=now)
    for loan in (ladder, paid, reports):
        await h.start(loan)
    await h.at_dpd(paid, 5)
    await starter.report_task_outcome(h.client, paid.loan_id, TaskReport(
        task_id=f"{paid.loan_id}/call@5/1", outcome=TaskOutcome.promised, note="promised to pay on day 9"))
    await h.at_dpd(paid, 9, time(14, 0))
    await starter.register_payment(h.client, paid.loan_id, Payment(
        payment_id="REC-P1", amount=Decimal("700.00"), currency="CNY", paid_at=datetime.now(timezone.utc)))
    await starter.send_bank_payment(h.client, paid.loan_id, Payment(
        payment_id="REC-P2", amount=Decimal("1.00"), currency="USD", paid_at=datetime.now(timezone.utc)))
    await h.at_dpd(paid, 10)
    rest = (await h.status(paid)).outstanding.total
    await starter.register_payment(h.client, paid.loan_id, Payment(
        payment_id="REC-P3", amount=rest, currency="CNY", paid_at=datetime.now(timezone.utc)))
    await h.at_dpd(reports, 70)
    placement = (await h.status(reports)).placement
    assert placement is not None
    await starter.report_agency(h.client, reports.loan_id, AgencyReport(
        placement_id=placement.placement_id, note="reached borrower", contacted=True))
    await h.at_dpd(reports, 140)
    case = (await h.status(reports)).case
    assert case is not None
    await starter.report_court(h.client, reports.loan_id, CourtReport(case_id=case.case_id, event="hearing"))
    await h.at_dpd(ladder, 600)
    for loan, name in ((ladder, "ladder"), (paid, "paid"), (reports, "reports")):
        handle = h.client.get_workflow_handle(config.workflow_id(loan.loan_id))
        history = await handle.fetch_history()
        path = HERE / f"{name}-{suffix}.json"
        path.write_text(history.to_json())
        print(f"wrote {path} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
