"""Payments: allocation, closing in full at every stage, partial payments, rejections."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

import starter
from db.tables import LedgerEntry, OutboxMessage, PlacementRow, TaskRow
from models import Payment, PaymentRejected, Stage
from tests.helpers import Harness, dpd_of, make_loan


def payment(amount: str, currency: str = "CNY", payment_id: str | None = None) -> Payment:
    return Payment(
        payment_id=payment_id or f"P-{uuid.uuid4().hex[:8]}",
        amount=Decimal(amount),
        currency=currency,
        paid_at=datetime.now(UTC),
    )


@pytest.mark.parametrize(
    ("dpd", "stage", "penalties"),
    [
        (3, Stage.early, "0.00"),  # before the first fee
        (10, Stage.early, "525.00"),  # one fee posted, a call task open
        (35, Stage.middle, "525.00"),  # after the demand letter
        (100, Stage.late, "2100.00"),  # with the agency
        (200, Stage.written_off, "2500.00"),  # a recovery after charge-off
    ],
)
async def test_payment_in_full_closes_the_loan_at_every_stage(
    harness: Harness, dpd: int, stage: Stage, penalties: str
) -> None:
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, dpd)
    before = await harness.status(loan)
    assert before.stage is stage
    assert before.outstanding.penalties == Decimal(penalties)
    total = before.outstanding.total

    receipt = await starter.register_payment(harness.client, loan.loan_id, payment(str(total)))

    assert receipt.closed and receipt.stage is Stage.paid
    assert receipt.outstanding.total == 0 and receipt.paid_total == total
    a = receipt.allocation
    assert (a.penalties, a.fees, a.interest, a.principal, a.unapplied) == (
        Decimal(penalties),
        Decimal("100.00"),
        Decimal("500.00"),
        Decimal("10000.00"),
        Decimal(0),
    )
    paid_at = receipt.received_at

    await harness.at_dpd(loan, 600)  # far beyond every remaining step
    after = await harness.status(loan)
    assert after.stage is Stage.paid and after.closed and after.outstanding.total == 0
    assert after.next_action is None
    assert not await harness.is_running(loan)

    late = [e.action for e in after.timeline if e.at >= paid_at and e.action != "payment"]
    assert set(late) <= {"paid_confirmation", "collection_closed", "call_outcome", "agency_recall"}
    assert late[-2:] == ["paid_confirmation", "collection_closed"]

    lid = loan.loan_id
    messages = harness.rows(OutboxMessage, lid, OutboxMessage.id)
    assert messages[-1].template == "paid_confirmation" and "已全部结清" in messages[-1].body
    assert [m for m in messages if m.created_at >= paid_at and m.template != "paid_confirmation"] == []
    ledger = harness.rows(LedgerEntry, lid, LedgerEntry.id)
    assert [e for e in ledger if e.kind == "fee" and e.at >= paid_at] == []
    allocations = {e.component: e.amount for e in ledger if e.kind == "allocation"}
    assert sum(allocations.values()) == total
    assert all(t.status == "closed" for t in harness.rows(TaskRow, lid))
    assert all(p.recalled_at is not None for p in harness.rows(PlacementRow, lid))
    if dpd == 100:
        assert harness.rows(PlacementRow, lid)[0].recall_reason == "loan closed (paid)"


async def test_partial_payments_allocate_in_order_and_escalation_goes_on(harness: Harness) -> None:
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 10)  # penalties 525 posted at DPD 7

    first = await starter.register_payment(harness.client, loan.loan_id, payment("600.00"))
    assert (first.allocation.penalties, first.allocation.fees, first.allocation.interest) == (
        Decimal("525.00"),
        Decimal("75.00"),
        Decimal(0),
    )
    second = await starter.register_payment(harness.client, loan.loan_id, payment("1000.00"))
    assert (second.allocation.fees, second.allocation.interest, second.allocation.principal) == (
        Decimal("25.00"),
        Decimal("500.00"),
        Decimal("475.00"),
    )
    assert not second.closed and second.outstanding.total == Decimal("9525.00")
    assert second.paid_total == Decimal("1600.00")

    await harness.at_dpd(loan, 38)
    status = await harness.status(loan)
    assert status.stage is Stage.middle
    letters = [m for m in harness.rows(OutboxMessage, loan.loan_id) if m.channel == "letter"]
    assert [dpd_of(m.created_at, loan) for m in letters] == [30]
    assert "9,525.00" in letters[0].body
    fees = [e.amount for e in harness.rows(LedgerEntry, loan.loan_id, LedgerEntry.id) if e.kind == "fee"]
    assert fees == [Decimal("525.00"), Decimal("476.25")]  # 5% of the 9,525 principal left
    assert status.outstanding.total == Decimal("10001.25")


async def test_overpayment_closes_and_records_the_surplus(harness: Harness) -> None:
    loan = make_loan(dpd=2, now=await harness.now())
    await harness.start(loan)
    receipt = await starter.register_payment(harness.client, loan.loan_id, payment("10700.00"))
    assert receipt.closed and receipt.allocation.unapplied == Decimal("100.00")
    await harness.env.sleep(timedelta(minutes=1))
    ledger = harness.rows(LedgerEntry, loan.loan_id)
    assert [e.amount for e in ledger if e.kind == "overpayment"] == [Decimal("100.00")]


async def _snapshot(harness: Harness, loan_id: str) -> tuple[object, ...]:
    await harness.settle()
    status = await starter.get_status(harness.client, loan_id)
    ledger = len(harness.rows(LedgerEntry, loan_id))
    return status.outstanding, status.paid_total, len(status.timeline), ledger


@pytest.mark.parametrize(
    ("amount", "currency", "message"),
    [
        ("0.00", "CNY", "must be positive"),
        ("-50.00", "CNY", "must be positive"),
        ("100.00", "USD", "currency USD differs"),
        ("100.001", "CNY", "more decimals"),
    ],
)
async def test_bad_payments_are_rejected_and_change_nothing(
    harness: Harness, amount: str, currency: str, message: str
) -> None:
    loan = make_loan(dpd=8, now=await harness.now())
    await harness.start(loan)
    before = await _snapshot(harness, loan.loan_id)
    with pytest.raises(PaymentRejected, match=message):
        await starter.register_payment(harness.client, loan.loan_id, payment(amount, currency))
    assert await _snapshot(harness, loan.loan_id) == before


async def test_duplicate_payment_id_is_rejected(harness: Harness) -> None:
    loan = make_loan(dpd=8, now=await harness.now())
    await harness.start(loan)
    await starter.register_payment(harness.client, loan.loan_id, payment("100.00", payment_id="BANK-1"))
    before = await _snapshot(harness, loan.loan_id)
    with pytest.raises(PaymentRejected, match="BANK-1 was already applied"):
        await starter.register_payment(harness.client, loan.loan_id, payment("100.00", payment_id="BANK-1"))
    assert await _snapshot(harness, loan.loan_id) == before
    assert len([e for e in harness.rows(LedgerEntry, loan.loan_id) if e.kind == "payment"]) == 1


async def test_payment_to_a_closed_loan_is_rejected(harness: Harness) -> None:
    loan = make_loan(dpd=8, now=await harness.now())
    await harness.start(loan)
    await starter.register_payment(harness.client, loan.loan_id, payment("10600.00"))
    await harness.env.sleep(timedelta(hours=1))
    assert not await harness.is_running(loan)
    ledger = len(harness.rows(LedgerEntry, loan.loan_id))
    with pytest.raises(PaymentRejected, match=r"closed \(paid\)"):
        await starter.register_payment(harness.client, loan.loan_id, payment("10.00"))
    assert len(harness.rows(LedgerEntry, loan.loan_id)) == ledger
    # starting it again is harmless: same id, nothing new
    assert await harness.start(loan) == f"collection-{loan.loan_id}"
    assert (await harness.status(loan)).stage is Stage.paid


async def test_payment_to_an_unknown_loan_is_refused(harness: Harness) -> None:
    with pytest.raises(starter.LoanNotFound):
        await starter.register_payment(harness.client, "NO-SUCH-LOAN", payment("10.00"))
    with pytest.raises(starter.LoanNotFound):
        await starter.get_status(harness.client, "NO-SUCH-LOAN")


async def test_bank_feed_signal_applies_payments_and_records_rejections(harness: Harness) -> None:
    loan = make_loan(dpd=8, now=await harness.now())
    await harness.start(loan)
    await starter.send_bank_payment(harness.client, loan.loan_id, payment("300.00", payment_id="FEED-1"))
    await starter.send_bank_payment(harness.client, loan.loan_id, payment("300.00", payment_id="FEED-1"))
    await starter.send_bank_payment(harness.client, loan.loan_id, payment("5.00", "USD"))
    status = await harness.status(loan)
    assert status.paid_total == Decimal("300.00")
    outcomes = [(e.action, e.outcome) for e in status.timeline if e.action == "payment"]
    assert outcomes == [("payment", "applied"), ("payment", "rejected"), ("payment", "rejected")]
    await harness.env.sleep(timedelta(minutes=1))
    assert len([e for e in harness.rows(LedgerEntry, loan.loan_id) if e.kind == "payment"]) == 1


async def test_starting_twice_keeps_the_running_workflow(harness: Harness) -> None:
    loan = make_loan(dpd=3, now=await harness.now())
    first = await harness.start(loan)
    await starter.register_payment(harness.client, loan.loan_id, payment("100.00"))
    second = await harness.start(loan)
    assert first == second
    assert (await harness.status(loan)).paid_total == Decimal("100.00")
