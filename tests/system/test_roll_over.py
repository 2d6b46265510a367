"""`roll_over` by start time (the upgrade guide's tool) finds the loans through visibility, so it
runs on the embedded dev server (the rest of roll-over: tests/workflows/test_roll_over.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

import starter
from tests.helpers import eventually, make_loan, run_ids
from worker import create_worker


async def test_roll_over_by_start_time_uses_visibility(dev_env: WorkflowEnvironment, tmp_path: Path) -> None:
    client = dev_env.client
    queue = f"roll-{uuid.uuid4()}"
    loans = [make_loan(f"RB-{n}-{uuid.uuid4().hex[:6]}", dpd=0) for n in range(3)]
    async with create_worker(client, task_queue=queue, database_url=f"sqlite:///{tmp_path / 'c.db'}"):
        for loan in loans:
            await starter.start_collection(client, loan, task_queue=queue)
        firsts = {loan.loan_id: (await run_ids(client, loan.loan_id))[0] for loan in loans}
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        await asyncio.sleep(1.5)

        async def all_asked() -> list[str]:
            asked = await starter.roll_over(client, started_before=cutoff)
            assert set(asked) >= {loan.loan_id for loan in loans}
            return asked

        await eventually(all_asked)

        async def all_rolled() -> None:
            for loan in loans:
                assert (await run_ids(client, loan.loan_id))[1] != firsts[loan.loan_id]

        await eventually(all_rolled)

        async def nothing_left() -> None:  # the new runs started after the cutoff
            assert not set(await starter.roll_over(client, started_before=cutoff)) & {ln.loan_id for ln in loans}

        await eventually(nothing_left)
