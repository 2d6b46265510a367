"""A loan that never pays walks the whole default ladder (time-skipping server)."""

from __future__ import annotations

from datetime import time, timedelta
from decimal import Decimal

from db.tables import AuditRow, CaseRow, LedgerEntry, LoanRow, OutboxMessage, PlacementRow, TaskRow
from models import Stage
from models.schedule import at_local, local_date
from tests.helpers import SCREENED_TIMELINE, TZ, Harness, dpd_of, make_loan, timeline_rows


async def test_never_paying_loan_walks_the_whole_ladder(harness: Harness) -> None:
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 600)

    status = await harness.status(loan)
    assert timeline_rows(status, loan) == SCREENED_TIMELINE
    assert status.stage is Stage.written_off and status.closed and status.charged_off
    assert not await harness.is_running(loan)

    lid = loan.loan_id
    outbox = harness.rows(OutboxMessage, lid, OutboxMessage.id)
    assert [(m.key.removeprefix(f"{lid}/"), m.status) for m in outbox] == [
        ("message@1/sms", "sent"),
        ("message@3/sms", "sent"),
        ("message@3/email", "sent"),
        ("message@30/letter", "sent"),
        ("message@120/letter", "sent"),
    ]
    assert [dpd_of(m.created_at, loan) for m in outbox] == [1, 3, 3, 30, 120]
    letter = outbox[3]
    assert "催收函" in letter.body and "10,500.00" not in letter.body  # fee 525 posted by then
    assert "11,125.00" in letter.body  # 10,000 + 500 + 100 + 525 late fee

    tasks = harness.rows(TaskRow, lid, TaskRow.id)
    assert [(t.task_id.removeprefix(f"{lid}/"), t.queue, t.outcome) for t in tasks] == [
        ("call@5/1", "collectors", "timeout"),
        ("call@5/2", "collectors", "timeout"),
        ("call@5/3", "collectors", "timeout"),
        ("call@15/1", "senior-collectors", "timeout"),
        ("call@15/2", "senior-collectors", "timeout"),
        ("field_visit@45/1", "field-agents", "timeout"),
    ]

    ledger = harness.rows(LedgerEntry, lid, LedgerEntry.id)
    fees = [(dpd_of(e.at, loan), e.amount) for e in ledger if e.kind == "fee"]
    # 5% of principal + interest each month, capped at 25% of principal (2,500) in total
    assert fees == [
        (7, Decimal("525.00")),
        (37, Decimal("525.00")),
        (67, Decimal("525.00")),
        (97, Decimal("525.00")),
        (127, Decimal("400.00")),
    ]
    charge_off = [e for e in ledger if e.kind == "charge_off"]
    assert [(dpd_of(e.at, loan), e.amount) for e in charge_off] == [(180, Decimal("13100.00"))]

    placements = harness.rows(PlacementRow, lid)
    assert len(placements) == 1
    p = placements[0]
    assert (dpd_of(p.placed_at, loan), dpd_of(p.recalled_at, loan), p.recall_reason) == (60, 120, "agency period ended")
    cases = harness.rows(CaseRow, lid)
    assert [(dpd_of(c.filed_at, loan), c.amount) for c in cases] == [(135, Decimal("13100.00"))]

    loan_row = harness.rows(LoanRow, lid)[0]
    assert loan_row.stage == "written_off"
    audit_actions = [a.action for a in harness.rows(AuditRow, lid, AuditRow.id)]
    assert audit_actions[0] == "collection_started" and audit_actions[-1] == "collection_closed"
    assert audit_actions.count("fee_posted") == 5 and audit_actions.count("message_queued") == 5


async def test_status_reports_next_action_and_open_task(harness: Harness) -> None:
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 5)

    status = await harness.status(loan)
    assert status.stage is Stage.early and status.days_past_due == 5
    assert [t.task_id for t in status.open_tasks] == [f"{loan.loan_id}/call@5/1"]
    assert status.next_action == f"outcome due: {loan.loan_id}/call@5/1"
    assert dpd_of(status.next_action_at, loan) == 6
    assert status.outstanding.total == Decimal("10600.00") and status.paid_total == 0
    assert status.paused_reason is None

    # The query is free but as of the last step; the default (an update) is as of now.
    await harness.env.sleep(timedelta(hours=2))
    assert (await harness.status(loan, fresh=False)).days_past_due == 5
    await harness.at_dpd(loan, 6, clock=time(9, 0))
    assert (await harness.status(loan)).days_past_due == 6


async def test_loan_handed_over_late_catches_up_with_the_latest_step(harness: Harness) -> None:
    loan = make_loan(dpd=40, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 41)

    status = await harness.status(loan)
    rows = timeline_rows(status, loan)
    assert rows[0] == (40, "collection_started", "", "DPD 40")
    # the demand letter (DPD 30) goes out on the day of hand-over, inside contact hours;
    # the reminders, calls and earlier fee periods are not replayed
    assert (40, "demand_letter", "letter", "sent") in rows or (41, "demand_letter", "letter", "sent") in rows
    assert [r[1] for r in rows].count("reminder_first") == 0
    assert [e for e in harness.rows(LedgerEntry, loan.loan_id) if e.kind == "fee"] == []
    assert status.stage is Stage.middle
    assert status.next_action == "field_visit@45"


async def test_a_loan_handed_over_at_dpd_3_in_the_evening_gets_only_the_dpd_3_reminder(harness: Harness) -> None:
    """Reported defect: handed over at DPD 3 in the evening (after the contact window), the loan
    sent both the DPD 1 and the DPD 3 reminders at 08:00 the next morning. Only the latest step
    already due (the DPD 3 reminder, due at 10:00 that day) runs; the DPD 1 one is not replayed."""
    now = await harness.now()
    evening = at_local(local_date(now, TZ) + timedelta(days=1), time(22, 0), TZ)
    await harness.env.sleep(evening - now)
    loan = make_loan(dpd=3, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 4)

    status = await harness.status(loan)
    sent = [(d, action, channel) for d, action, channel, outcome in timeline_rows(status, loan) if outcome == "sent"]
    assert sent == [(4, "reminder_second", "sms"), (4, "reminder_second", "email")]
    messages = harness.rows(OutboxMessage, loan.loan_id)
    assert sorted(m.template for m in messages) == ["reminder_second", "reminder_second"]
    assert all(local_date(m.created_at, TZ) == loan.due_date + timedelta(days=4) for m in messages)
