"""Negotiated repayment and the borrower's situation on the time-skipping server."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

import pytest

import starter
from db.tables import CaseRow, LedgerEntry, OutboxMessage, PlacementRow, TaskRow
from models import Payment, Stage
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
from models.loan import OverdueLoan
from tests.helpers import Harness, dpd_of, make_loan


async def pay(h: Harness, loan: OverdueLoan, amount: str | Decimal) -> None:
    await starter.register_payment(
        h.client,
        loan.loan_id,
        Payment(
            payment_id=f"P-{uuid.uuid4().hex[:8]}",
            amount=Decimal(amount),
            currency=loan.currency,
            paid_at=datetime.now(UTC),
        ),
    )


def actions(status: starter.CollectionStatus) -> list[tuple[str, str]]:
    return [(e.action, e.outcome) for e in status.timeline]


def fee_dpds(h: Harness, loan: OverdueLoan) -> list[int]:
    return [dpd_of(e.at, loan) for e in h.rows(LedgerEntry, loan.loan_id, LedgerEntry.id) if e.kind == "fee"]


async def started(h: Harness, dpd: int = 0) -> OverdueLoan:
    loan = make_loan(dpd=dpd, now=await h.now())
    await h.start(loan)
    await h.settle()
    return loan


# ------------------------------------------------------------------ promises


async def test_kept_promise_pauses_escalation_and_paused_days_do_not_count(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 5)
    d = await starter.promise_to_pay(
        h.client,
        loan.loan_id,
        PromiseRequest(amount=Decimal("1000.00"), date=await h.today(loan) + timedelta(days=5), made_by="agent-7"),
    )
    assert d.accepted, d.reason
    status = await h.status(loan)
    assert status.paused_reason == "promise to pay"
    assert status.arrangement is not None and status.arrangement.kind == "promise"
    assert status.arrangement.next_due_amount == Decimal("1000.00")
    assert ("paused", "promise to pay") in actions(status)

    await h.at_dpd(loan, 8)
    assert fee_dpds(h, loan) == []  # the DPD-7 fee waits while paused
    await pay(h, loan, "1000.00")
    await h.at_dpd(loan, 8, time(13, 0))
    status = await h.status(loan)
    assert ("promise", "kept") in actions(status) and ("resumed", "3 day(s) paused") in actions(status)
    assert status.counts.promises_kept == 1 and status.paused_reason is None and status.paused_days == 3
    assert status.days_past_due == 5
    await h.at_dpd(loan, 11)
    assert fee_dpds(h, loan) == [10]  # DPD 7 for the ladder = calendar day 10


async def test_broken_promise_resumes_escalation_where_it_stopped(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 5)
    promised_for = await h.today(loan) + timedelta(days=5)  # DPD 10; judged after DPD 12 (grace 2)
    assert (
        await starter.promise_to_pay(
            h.client, loan.loan_id, PromiseRequest(amount=Decimal("1000.00"), date=promised_for)
        )
    ).accepted
    await h.at_dpd(loan, 12)
    assert (await h.status(loan)).paused_reason == "promise to pay"
    await h.at_dpd(loan, 13)
    status = await h.status(loan)
    assert ("promise", "broken") in actions(status)
    assert status.counts.promises_broken == 1 and status.paused_reason is None and status.paused_days == 8
    await h.at_dpd(loan, 16)
    assert fee_dpds(h, loan) == [15]


async def test_promise_rejections_change_nothing(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 2)
    today = await h.today(loan)
    before = await h.status(loan)
    too_far = await starter.promise_to_pay(
        h.client, loan.loan_id, PromiseRequest(amount=Decimal("100.00"), date=today + timedelta(days=15))
    )
    assert not too_far.accepted and "more than 14 days ahead" in too_far.reason
    too_much = await starter.promise_to_pay(
        h.client, loan.loan_id, PromiseRequest(amount=Decimal("99999.00"), date=today + timedelta(days=3))
    )
    assert not too_much.accepted and "exceeds the outstanding" in too_much.reason
    after = await h.status(loan)
    assert (after.timeline, after.paused_reason, after.counts) == (before.timeline, before.paused_reason, before.counts)

    for _ in range(2):  # two promises broken ...
        day = await h.today(loan)
        assert (
            await starter.promise_to_pay(
                h.client, loan.loan_id, PromiseRequest(amount=Decimal("100.00"), date=day + timedelta(days=1))
            )
        ).accepted
        await h.on_date(loan, day + timedelta(days=4))
    assert (await h.status(loan)).counts.promises_broken == 2
    before = await h.status(loan)
    third = await starter.promise_to_pay(
        h.client, loan.loan_id, PromiseRequest(amount=Decimal("100.00"), date=await h.today(loan) + timedelta(days=1))
    )
    assert not third.accepted and "no more promises" in third.reason
    assert (await h.status(loan)).timeline == before.timeline


# ------------------------------------------------------------------ plans


async def plan_at_dpd10(h: Harness, loan: OverdueLoan, **kw: object) -> list[date]:
    await h.at_dpd(loan, 10)  # balance 10,600 + 525 fee = 11,125
    first = await h.today(loan) + timedelta(days=10)
    d = await starter.propose_plan(
        h.client, loan.loan_id, PlanProposal(instalments=3, frequency="monthly", first_due=first, **kw)
    )
    assert d.accepted, d.reason
    status = await h.status(loan)
    assert status.paused_reason == "instalment plan"
    second = first.replace(month=first.month + 1) if first.month < 12 else first.replace(year=first.year + 1, month=1)
    return [first, second]


async def test_plan_kept_to_the_end_closes_the_loan(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await plan_at_dpd10(h, loan)
    status = await h.status(loan)
    arrangement = status.arrangement
    assert arrangement is not None and arrangement.next_due_amount == Decimal("3708.33")
    for _ in range(3):
        arrangement = (await h.status(loan)).arrangement
        assert arrangement is not None and arrangement.next_due_date is not None
        await h.on_date(loan, arrangement.next_due_date)
        assert arrangement.next_due_amount is not None
        await pay(h, loan, arrangement.next_due_amount)
    await h.env.sleep(timedelta(days=5))
    status = await h.status(loan)
    assert status.stage is Stage.paid and status.closed
    assert status.counts.instalments_kept == 3 and status.counts.instalments_missed == 0
    assert ("plan", "completed") in actions(status)
    messages = [m.template for m in h.rows(OutboxMessage, loan.loan_id, OutboxMessage.id)]
    assert messages.count("plan_reminder") == 3 and messages[-1] == "paid_confirmation"
    assert fee_dpds(h, loan) == [7]  # fees frozen while the plan ran
    assert sum(e.amount for e in h.rows(LedgerEntry, loan.loan_id) if e.kind == "payment") == Decimal("11125.00")


async def next_due_date(h: Harness, loan: OverdueLoan) -> date:
    """The due date of the next instalment of the loan's plan."""
    arrangement = (await h.status(loan)).arrangement
    assert arrangement is not None and arrangement.next_due_date is not None
    return arrangement.next_due_date


async def test_missed_instalment_then_caught_up(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await plan_at_dpd10(h, loan)
    first = await next_due_date(h, loan)
    await h.on_date(loan, first + timedelta(days=4))  # grace 3 days: missed
    status = await h.status(loan)
    assert ("instalment", "missed") in actions(status) and status.counts.instalments_missed == 1
    assert status.paused_reason == "instalment plan"  # one miss is allowed
    await pay(h, loan, "7416.66")  # the first two instalments
    status = await h.status(loan)
    assert ("instalment", "caught_up") in actions(status) and ("instalment", "kept") in actions(status)
    assert status.counts.instalments_kept == 1
    assert status.arrangement is not None and status.arrangement.next_due_amount == Decimal("3708.34")


async def test_plan_broken_after_the_allowed_misses(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await plan_at_dpd10(h, loan)
    first = await next_due_date(h, loan)
    await h.on_date(loan, first + timedelta(days=40))
    status = await h.status(loan)
    assert status.counts.instalments_missed == 2 and status.counts.plans_broken == 1
    assert ("plan", "broken") in actions(status) and status.paused_reason is None
    assert any(a == "resumed" for a, _ in actions(status))


async def test_plan_over_limits_is_rejected_and_a_plan_can_be_renegotiated(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 10)
    today = await h.today(loan)
    before = await h.status(loan)
    for proposal, why in [
        (PlanProposal(instalments=24, first_due=today + timedelta(days=5)), "exceed the maximum of 12"),
        (
            PlanProposal(instalments=12, frequency="weekly", first_due=today + timedelta(days=60)),
            "more than 30 days ahead",
        ),
        (PlanProposal(instalments=3, first_due=today - timedelta(days=1)), "in the past"),
        (PlanProposal(instalments=2, first_due=today, down_payment=Decimal(11000)), "below the smallest"),
    ]:
        d = await starter.propose_plan(h.client, loan.loan_id, proposal)
        assert not d.accepted and why in d.reason, d.reason
    assert (await h.status(loan)).timeline == before.timeline

    assert (
        await starter.promise_to_pay(
            h.client, loan.loan_id, PromiseRequest(amount=Decimal("500.00"), date=today + timedelta(days=3))
        )
    ).accepted
    first = await starter.propose_plan(
        h.client,
        loan.loan_id,
        PlanProposal(instalments=4, first_due=today + timedelta(days=7), down_payment=Decimal("1125.00")),
    )
    assert first.accepted
    second = await starter.propose_plan(
        h.client, loan.loan_id, PlanProposal(instalments=10, first_due=today + timedelta(days=14))
    )
    assert second.accepted
    status = await h.status(loan)
    assert [o for a, o in actions(status) if a == "plan"] == ["accepted", "renegotiated"]
    assert status.arrangement is not None
    assert status.arrangement.kind == "plan" and status.arrangement.next_due_amount == Decimal("1112.50")
    promise_refused = await starter.promise_to_pay(
        h.client, loan.loan_id, PromiseRequest(amount=Decimal("100.00"), date=today + timedelta(days=2))
    )
    assert not promise_refused.accepted and "renegotiate the plan" in promise_refused.reason


# ------------------------------------------------------------------ settlements


async def test_settlement_paid_waives_the_rest_and_settles(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 100)  # late: up to 30 % off 12,700
    status = await h.status(loan)
    assert status.stage is Stage.late and status.outstanding.total == Decimal("12700.00")
    deadline = await h.today(loan) + timedelta(days=10)
    too_deep = await starter.offer_settlement(
        h.client, loan.loan_id, SettlementOffer(amount=Decimal("8000.00"), deadline=deadline)
    )
    assert not too_deep.accepted and "exceeds the 30% allowed at stage late" in too_deep.reason
    assert (
        await starter.offer_settlement(
            h.client, loan.loan_id, SettlementOffer(amount=Decimal("9000.00"), deadline=deadline)
        )
    ).accepted
    await pay(h, loan, "4000.00")
    arrangement = (await h.status(loan)).arrangement
    assert arrangement is not None and arrangement.next_due_amount == Decimal("5000.00")
    receipt = await starter.register_payment(
        h.client,
        loan.loan_id,
        Payment(payment_id="SETTLE-2", amount=Decimal("5000.00"), currency="CNY", paid_at=datetime.now(UTC)),
    )
    assert receipt.closed and receipt.stage is Stage.settled and receipt.outstanding.total == 0
    await h.settle()
    status = await h.status(loan)
    assert status.stage is Stage.settled and not await h.is_running(loan)
    waivers = [e.amount for e in h.rows(LedgerEntry, loan.loan_id) if e.kind == "waiver"]
    assert sum(waivers) == Decimal("3700.00")
    assert h.rows(OutboxMessage, loan.loan_id, OutboxMessage.id)[-1].template == "settled_confirmation"
    assert all(p.recalled_at is not None for p in h.rows(PlacementRow, loan.loan_id))


async def test_settlement_not_paid_lapses_and_escalation_resumes(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 35)
    early_refused = await starter.offer_settlement(
        h.client,
        loan.loan_id,
        SettlementOffer(amount=Decimal("10000.00"), deadline=await h.today(loan) + timedelta(days=5)),
    )
    assert not early_refused.accepted  # 10.1 % off at stage middle (limit 10 %)
    assert (
        await starter.offer_settlement(
            h.client,
            loan.loan_id,
            SettlementOffer(amount=Decimal("10100.00"), deadline=await h.today(loan) + timedelta(days=5)),
        )
    ).accepted
    await h.at_dpd(loan, 41)
    status = await h.status(loan)
    assert ("settlement", "lapsed") in actions(status) and status.counts.settlements_lapsed == 1
    assert status.paused_reason is None and status.paused_days == 6 and status.stage is Stage.middle


# ------------------------------------------------------------------ hardship


@pytest.mark.parametrize(
    "outcome", ["offer_plan", "waive_interest", "waive_fees", "extend_term", "resume", "refer_to_write_off"]
)
async def test_hardship_breathing_space_and_each_review_outcome(harness: Harness, outcome: str) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 10)
    d = await starter.report_hardship(
        h.client, loan.loan_id, HardshipReport(reason="lost job", evidence_ref="DOC-42", reported_by="agent-3")
    )
    assert d.accepted
    status = await h.status(loan)
    assert status.paused_reason == "hardship breathing space" and status.holds[0].kind == "hardship"
    review = [t for t in h.rows(TaskRow, loan.loan_id) if t.kind == "hardship_review"]
    assert len(review) == 1 and review[0].queue == "hardship-review" and "lost job" in review[0].brief
    sent_before = len(h.rows(OutboxMessage, loan.loan_id))

    await h.at_dpd(loan, 40)  # a month later: no contact, no fee
    assert len(h.rows(OutboxMessage, loan.loan_id)) == sent_before and fee_dpds(h, loan) == [7]

    today = await h.today(loan)
    decision = HardshipDecision(
        outcome=outcome,
        decided_by="reviewer-1",
        plan=PlanProposal(instalments=6, first_due=today + timedelta(days=14)) if outcome == "offer_plan" else None,
        extend_days=30 if outcome == "extend_term" else None,
    )
    assert (await starter.review_hardship(h.client, loan.loan_id, decision)).accepted
    status = await h.status(loan)
    closed = next(t for t in h.rows(TaskRow, loan.loan_id) if t.kind == "hardship_review")
    assert (closed.status, closed.outcome) == ("closed", outcome)
    ledger = h.rows(LedgerEntry, loan.loan_id)
    if outcome == "offer_plan":
        assert status.paused_reason == "instalment plan"
        assert status.arrangement is not None and status.arrangement.kind == "plan"
    elif outcome == "waive_interest":
        assert status.outstanding.interest == 0 and status.paused_reason is None
        assert [e.amount for e in ledger if e.kind == "waiver"] == [Decimal("500.00")]
    elif outcome == "waive_fees":
        assert (status.outstanding.fees, status.outstanding.penalties) == (Decimal(0), Decimal(0))
        assert sum(e.amount for e in ledger if e.kind == "waiver") == Decimal("625.00")
    elif outcome == "extend_term":
        assert status.paused_reason == "hardship breathing space"
        assert dpd_of(status.holds[0].until, loan) == 70
    elif outcome == "resume":
        assert status.paused_reason is None and ("resumed", "30 day(s) paused") in actions(status)
    else:
        assert status.stage is Stage.written_off and status.charged_off
        assert [e.kind for e in ledger if e.kind == "charge_off"] == ["charge_off"]


async def test_breathing_space_ends_by_itself_without_a_review(harness: Harness) -> None:
    h = harness
    loan = await started(h)
    await h.at_dpd(loan, 10)
    assert (await starter.report_hardship(h.client, loan.loan_id, HardshipReport(reason="illness"))).accepted
    await h.at_dpd(loan, 71)
    status = await h.status(loan)
    assert ("hardship", "ended") in actions(status) and status.paused_reason is None and status.days_past_due == 11
    review = next(t for t in h.rows(TaskRow, loan.loan_id) if t.kind == "hardship_review")
    assert review.outcome == "timeout"


# ------------------------------------------------------------------ disputes


async def test_dispute_during_agency_placement_recalls_and_silences(harness: Harness) -> None:
    h = harness
    loan = await started(h, dpd=55)
    await h.at_dpd(loan, 65)
    assert (await h.status(loan)).placement is not None
    assert (await starter.raise_dispute(h.client, loan.loan_id, DisputeRequest(reason="amount wrong"))).accepted
    status = await h.status(loan)
    assert status.placement is None and status.paused_reason == "dispute open"
    placement = h.rows(PlacementRow, loan.loan_id)[0]
    assert placement.recall_reason == "dispute raised" and dpd_of(placement.recalled_at, loan) == 65
    refused = await starter.offer_settlement(
        h.client,
        loan.loan_id,
        SettlementOffer(amount=Decimal("1000.00"), deadline=await h.today(loan) + timedelta(days=3)),
    )
    assert not refused.accepted and "dispute is open" in refused.reason
    sent, fees = len(h.rows(OutboxMessage, loan.loan_id)), fee_dpds(h, loan)

    await h.at_dpd(loan, 150)  # nothing at all while the dispute is open
    assert len(h.rows(OutboxMessage, loan.loan_id)) == sent and fee_dpds(h, loan) == fees
    assert h.rows(CaseRow, loan.loan_id) == []
    assert (await starter.resolve_dispute(h.client, loan.loan_id, DisputeResolution(upheld=False))).accepted
    status = await h.status(loan)
    assert status.paused_reason is None and status.days_past_due == 65 and status.paused_days == 85
    await h.at_dpd(loan, 150 + 55 + 1)  # ladder DPD 120: pre-litigation letter
    assert [m.template for m in h.rows(OutboxMessage, loan.loan_id)][-1] == "pre_litigation_notice"


async def test_upheld_dispute_cancels_the_balance_and_closes(harness: Harness) -> None:
    h = harness
    loan = await started(h, dpd=20)
    assert (await starter.raise_dispute(h.client, loan.loan_id, DisputeRequest(reason="not my loan"))).accepted
    assert (await starter.resolve_dispute(h.client, loan.loan_id, DisputeResolution(upheld=True))).accepted
    await h.settle()
    status = await h.status(loan)
    assert status.stage is Stage.dispute_upheld and status.closed and status.outstanding.total == 0
    assert sum(e.amount for e in h.rows(LedgerEntry, loan.loan_id) if e.kind == "cancellation") == Decimal("10600.00")
    assert not await h.is_running(loan)


# ------------------------------------------------------------------ stop


async def test_stop_during_litigation_goes_to_legal_review_and_silences(harness: Harness) -> None:
    h = harness
    loan = await started(h, dpd=130)
    await h.at_dpd(loan, 140)
    assert len(h.rows(CaseRow, loan.loan_id)) == 1
    d = await starter.stop_collection(h.client, loan.loan_id, StopRequest(reason="bankruptcy", evidence_ref="COURT-9"))
    assert d.accepted
    status = await h.status(loan)
    assert status.stop is not None and status.stop.route == "legal_review"
    assert status.paused_reason == "stopped: bankruptcy (legal_review)"
    legal = [t for t in h.rows(TaskRow, loan.loan_id) if t.kind == "legal_review"]
    assert len(legal) == 1 and legal[0].queue == "legal"
    sent = len(h.rows(OutboxMessage, loan.loan_id))
    await h.at_dpd(loan, 400)
    assert len(h.rows(OutboxMessage, loan.loan_id)) == sent and not (await h.status(loan)).charged_off
    assert not (
        await starter.promise_to_pay(
            h.client, loan.loan_id, PromiseRequest(amount=Decimal("10.00"), date=await h.today(loan))
        )
    ).accepted
    again = await starter.stop_collection(h.client, loan.loan_id, StopRequest(reason="bankruptcy"))
    assert not again.accepted and "already stopped" in again.reason
    d = await starter.stop_collection(h.client, loan.loan_id, StopRequest(reason="bankruptcy", route="write_off"))
    assert d.accepted and (await h.status(loan)).stage is Stage.written_off


async def test_stop_for_death_writes_off_and_recalls_the_agency(harness: Harness) -> None:
    h = harness
    loan = await started(h, dpd=59)
    await h.at_dpd(loan, 61)
    assert (await h.status(loan)).placement is not None
    assert (await starter.stop_collection(h.client, loan.loan_id, StopRequest(reason="death"))).accepted
    status = await h.status(loan)
    assert status.stage is Stage.written_off and status.placement is None
    assert h.rows(PlacementRow, loan.loan_id)[0].recall_reason == "collection stopped (death)"
    assert [e.kind for e in h.rows(LedgerEntry, loan.loan_id) if e.kind == "charge_off"] == ["charge_off"]
