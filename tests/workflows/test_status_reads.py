"""A status read writes nothing: `get_status` is a query (`status_at`), so a desk or platform
polling a loan adds no event to its history, and the figures that depend on the clock are
brought to the server's now by the decider's own view functions."""

from __future__ import annotations

from datetime import timedelta

import starter
from infra.temporal import workflow_id
from tests.helpers import Harness, make_loan


async def test_reading_the_status_adds_no_history_event_and_is_current(harness: Harness) -> None:
    h = harness
    loan = make_loan(dpd=3, now=await h.now())
    await h.start(loan)
    await h.settle()
    await h.quiet(loan)
    handle = h.client.get_workflow_handle(workflow_id(loan.loan_id))
    before = len((await handle.fetch_history()).events)

    for _ in range(20):
        status = await starter.get_status(h.client, loan.loan_id)
    assert status.days_past_due == 3
    assert len((await handle.fetch_history()).events) == before

    await h.at_dpd(loan, 5)
    status = await starter.get_status(h.client, loan.loan_id)
    assert status.days_past_due == 5 and abs(status.as_of - await h.now()) < timedelta(minutes=1)
    assert status.timeline == (await starter.get_status(h.client, loan.loan_id, fresh=False)).timeline
