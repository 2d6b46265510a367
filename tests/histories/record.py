"""Record workflow histories for the replay test:
`CODEC_KEY_FILE=/nonexistent python -m tests.histories.record v3` (no codec key, so the files
hold plain payloads any checkout can replay).

Run this only when a workflow version is released: the files it writes are what running
loans look like, and `tests/replay/test_replay.py` fails any later change that would break them.
Keep old files; add new ones beside them with a new suffix.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from datetime import UTC, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

import starter
from infra.process import venv_binary
from infra.temporal import data_converter, workflow_id
from models import AgencyReport, CourtReport, Payment, TaskOutcome, TaskReport
from models.arrangements import (
    DisputeRequest,
    DisputeResolution,
    HardshipDecision,
    HardshipReport,
    PlanProposal,
    PromiseRequest,
    SettlementOffer,
    StopRequest,
)
from models.events import AgencyContactRequest, OptOutRequest
from tests.helpers import Harness, make_loan
from worker import create_worker

HERE = Path(__file__).parent


async def record(suffix: str) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=data_converter()
    )
    async with env:
        with tempfile.TemporaryDirectory() as tmp:
            db = f"sqlite:///{tmp}/record.db"
            from db.store import make_engine

            h = Harness(env=env, engine=make_engine(db), task_queue="record")
            async with create_worker(env.client, task_queue="record", database_url=db):
                await _scenarios(h, suffix)


async def _scenarios(h: Harness, suffix: str) -> None:
    names = await _collection(h) + await _negotiation(h)
    for loan_id, name in names:
        handle = h.client.get_workflow_handle(workflow_id(loan_id))
        history = await handle.fetch_history()
        path = HERE / f"{name}-{suffix}.json"
        path.write_text(history.to_json())
        print(f"wrote {path} ({len(history.events)} events)")


async def _collection(h: Harness) -> list[tuple[str, str]]:
    now = await h.now()
    ladder = make_loan("REC-LADDER", dpd=0, now=now)
    paid = make_loan("REC-PAID", dpd=0, now=now)
    reports = make_loan("REC-REPORTS", dpd=55, now=now)
    for loan in (ladder, paid, reports):
        await h.start(loan)
    await h.at_dpd(paid, 5)
    await starter.report_task_outcome(
        h.client,
        paid.loan_id,
        TaskReport(task_id=f"{paid.loan_id}/call@5/1", outcome=TaskOutcome.promised, note="promised to pay on day 9"),
    )
    await h.at_dpd(paid, 9, time(14, 0))
    await starter.register_payment(
        h.client,
        paid.loan_id,
        Payment(payment_id="REC-P1", amount=Decimal("700.00"), currency="CNY", paid_at=datetime.now(UTC)),
    )
    await starter.send_bank_payment(
        h.client,
        paid.loan_id,
        Payment(payment_id="REC-P2", amount=Decimal("1.00"), currency="USD", paid_at=datetime.now(UTC)),
    )
    await h.at_dpd(paid, 10)
    rest = (await h.status(paid)).outstanding.total
    await starter.register_payment(
        h.client, paid.loan_id, Payment(payment_id="REC-P3", amount=rest, currency="CNY", paid_at=datetime.now(UTC))
    )
    await h.at_dpd(reports, 70)
    placement = (await h.status(reports)).placement
    assert placement is not None
    await starter.report_agency(
        h.client,
        reports.loan_id,
        AgencyReport(placement_id=placement.placement_id, note="reached borrower", contacted=True),
    )
    await starter.request_agency_contact(
        h.client,
        reports.loan_id,
        AgencyContactRequest(placement_id=placement.placement_id, channel="phone", agent="agent-9"),
    )
    await starter.opt_out(h.client, reports.loan_id, OptOutRequest(channel="email"))
    await h.at_dpd(reports, 140)
    case = (await h.status(reports)).case
    assert case is not None
    await starter.report_court(h.client, reports.loan_id, CourtReport(case_id=case.case_id, event="hearing"))
    await h.at_dpd(ladder, 600)
    return [(ladder.loan_id, "ladder"), (paid.loan_id, "paid"), (reports.loan_id, "reports")]


async def _negotiation(h: Harness) -> list[tuple[str, str]]:
    """A plan kept to the end (with a promise it replaced), a dispute resolved against the
    borrower during agency placement, a lapsed then paid settlement, hardship ending in a plan
    that breaks, and a stop."""
    now = await h.now()
    plan, dispute, settle, hardship, stop = (
        make_loan(f"REC-{n}", dpd=d, now=now)
        for n, d in (("PLAN", 0), ("DISPUTE", 55), ("SETTLE", 95), ("HARDSHIP", 8), ("STOP", 130))
    )
    for loan in (plan, dispute, settle, hardship, stop):
        await h.start(loan)

    def paid(amount: Decimal, ref: str) -> Payment:
        return Payment(payment_id=ref, amount=amount, currency="CNY", paid_at=datetime.now(UTC))

    today = await h.today(plan)
    await starter.promise_to_pay(
        h.client, plan.loan_id, PromiseRequest(amount=Decimal(500), date=today + timedelta(days=3))
    )
    await starter.propose_plan(h.client, plan.loan_id, PlanProposal(instalments=3, first_due=today + timedelta(days=7)))
    await starter.offer_settlement(
        h.client, settle.loan_id, SettlementOffer(amount=Decimal(9500), deadline=today + timedelta(days=5))
    )
    await starter.report_hardship(h.client, hardship.loan_id, HardshipReport(reason="illness", evidence_ref="DOC-1"))
    await starter.stop_collection(h.client, stop.loan_id, StopRequest(reason="cease_contact"))

    async def pay_instalment(n: int) -> None:
        arrangement = (await h.status(plan)).arrangement
        assert arrangement is not None and arrangement.next_due_date and arrangement.next_due_amount
        await h.on_date(plan, arrangement.next_due_date)
        await starter.register_payment(h.client, plan.loan_id, paid(arrangement.next_due_amount, f"REC-PLAN-{n}"))

    await pay_instalment(0)  # day 7
    await h.at_dpd(dispute, 65)  # day 10
    await starter.raise_dispute(h.client, dispute.loan_id, DisputeRequest(reason="amount wrong"))
    await starter.review_hardship(
        h.client,
        hardship.loan_id,
        HardshipDecision(
            outcome="offer_plan",
            plan=PlanProposal(instalments=2, first_due=await h.today(hardship) + timedelta(days=5)),
        ),
    )
    await pay_instalment(1)
    await pay_instalment(2)
    await starter.resolve_dispute(h.client, dispute.loan_id, DisputeResolution(upheld=False))
    await starter.offer_settlement(
        h.client,
        settle.loan_id,
        SettlementOffer(amount=Decimal(9500), deadline=await h.today(settle) + timedelta(days=5)),
    )
    await starter.register_payment(h.client, settle.loan_id, paid(Decimal(9500), "REC-SETTLE"))
    await h.env.sleep(timedelta(days=700))
    return [
        (plan.loan_id, "plan"),
        (dispute.loan_id, "dispute"),
        (settle.loan_id, "settlement"),
        (hardship.loan_id, "hardship"),
        (stop.loan_id, "stop"),
    ]


if __name__ == "__main__":
    asyncio.run(record(sys.argv[1] if len(sys.argv) > 1 else "v1"))
