"""Record the daily scan's histories for the replay test (`tests/replay/test_scan_histories.py`):
`CODEC_KEY_FILE=/nonexistent .venv/bin/python -m tests.histories.scan.record v1` (no codec key,
so the files hold plain payloads any checkout can replay).

A scan over a small book with pages of 2 rows and continue-as-new every 2 pages, on the
time-skipping server: its first run (two pages, then continue-as-new) and its last (the short
page that ends the walk) are written as `scan-first-<suffix>.json` and `scan-last-<suffix>.json`.
Run it only when a version of the scan workflow is released; keep old files beside new ones.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from db.book import BookLoan
from db.store import make_engine
from infra.process import venv_binary
from infra.temporal import data_converter
from models.scan import ScanInput, scan_date
from worker import create_worker
from workflows.scan import OverdueScanWorkflow

HERE = Path(__file__).parent
SCAN_ID = "recorded-scan"
QUEUE = "record-scan"


async def record(suffix: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=data_converter()
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/record.db"
            as_of = scan_date(await env.get_current_time(), "Asia/Shanghai")
            with Session(make_engine(db)) as session:
                session.add_all(
                    BookLoan(
                        loan_id=f"REC-SCAN-{i}",
                        borrower_id=f"B-{i}",
                        borrower_name="刘洋",
                        currency="CNY",
                        principal=Decimal("900.00"),
                        due_date=as_of - timedelta(days=1 + i % 3),
                        grace_days=i % 2,
                    )
                    for i in range(9)
                )
                session.commit()
            async with create_worker(env.client, task_queue=QUEUE, database_url=db):
                handle = await env.client.start_workflow(
                    OverdueScanWorkflow.run,
                    ScanInput(as_of=as_of, page_size=2, pages_per_run=2),
                    id=SCAN_ID,
                    task_queue=QUEUE,
                )
                print(f"scan totals: {await handle.result()}")
                first = env.client.get_workflow_handle(SCAN_ID, run_id=handle.first_execution_run_id)
                for name, run in (("first", first), ("last", env.client.get_workflow_handle(SCAN_ID))):
                    history = await run.fetch_history()
                    path = HERE / f"scan-{name}-{suffix}.json"
                    path.write_text(history.to_json())
                    print(f"wrote {path} ({len(history.events)} events)")


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
