"""Money on the loan: payments (allocation, receipts, what they fulfil), late fees, waivers,
settlement and charge-off. A payment is applied to the state in the decision that takes it, so
two payments are never allocated against the same balance, and its receipt is known at once; the
ledger rows are an effect the shell writes right after (idempotently, by payment id)."""

from __future__ import annotations

from models.allocation import allocate
from models.effects import ChargeOff, PostFee, RecordPayment, Waive
from models.fees import fee_for_period
from models.lifecycle.closing import close
from models.lifecycle.contacts import cancel_tasks
from models.lifecycle.step import Rejected, Step
from models.loan import Balance, Stage
from models.negotiation import credit_payments
from models.payment import Payment, PaymentReceipt, PaymentRejected, check_payment
from models.requests import ChargeOffRequest, FeeRequest, PaymentRecord, WaiverKind, WaiverRequest
from models.schedule import PlannedAction


def check(step: Step, payment: Payment) -> None:
    s = step.s
    try:
        check_payment(payment, s.loan.currency, s.payment_ids, s.closed_as)
    except PaymentRejected as exc:
        raise Rejected(str(exc), "PaymentRejected") from exc


def take_payment(step: Step, payment: Payment) -> PaymentReceipt:
    """Apply a checked payment: allocate it in policy order, credit what it fulfils (a promise,
    instalments, a settlement), close the loan if nothing is left; returns the receipt."""
    s = step.s
    allocation, s.balance = allocate(payment.amount, s.balance, s.policy.allocation_order)
    s.paid_total += allocation.applied()
    s.payment_ids.append(payment.payment_id)
    key = f"{s.loan.loan_id}/payment/{payment.payment_id}"
    step.note(
        "payment",
        channel=payment.source,
        outcome="applied",
        key=key,
        detail=f"{payment.amount} {payment.currency}; left {s.balance.total}",
    )
    credited = credit_payments(s)
    for action, outcome, detail in credited:
        step.note(action, outcome=outcome, key=key, detail=detail)
    step.emit(
        RecordPayment(
            req=PaymentRecord(
                key=key,
                loan_id=s.loan.loan_id,
                at=step.now,
                payment=payment,
                allocation=allocation,
                balance_after=s.balance,
            )
        )
    )
    for action, outcome, detail in credited:
        step.record(f"payment/{payment.payment_id}/{action}-{outcome}", f"{action}_{outcome}", detail=detail)
    if s.settlement is not None and s.settlement.status == "paid":
        settle(step)
    elif s.balance.total == 0:
        close(step, Stage.paid)
    return PaymentReceipt(
        loan_id=s.loan.loan_id,
        payment_id=payment.payment_id,
        amount=payment.amount,
        currency=payment.currency,
        allocation=allocation,
        outstanding=s.balance,
        paid_total=s.paid_total,
        stage=step.stage(),
        closed=s.closed_as is not None,
        received_at=step.now,
    )


def reject_signalled(step: Step, payment: Payment, reason: str) -> None:
    """A bank-feed payment that cannot be applied: nobody waits for an answer, so the refusal
    goes to the timeline and the record."""
    step.note("payment", channel=payment.source, outcome="rejected", detail=reason)
    step.record(f"payment-rejected/{payment.payment_id}/{len(step.s.timeline)}", "payment_rejected")


def settle(step: Step) -> None:
    """The settlement is paid: the rest is waived and the loan closes as settled."""
    s = step.s
    assert s.settlement is not None
    waived, s.balance = s.balance, Balance()
    if plan := s.active_plan():
        plan.status = "settled"
    if promise := s.open_promise():
        promise.status = "superseded"
    if waived.total > 0:
        waive(step, waived, "waiver", f"{s.settlement.offer_id}/waiver", "settlement paid")
    close(step, Stage.settled)


def waive(step: Step, amounts: Balance, kind: WaiverKind, key: str, reason: str) -> None:
    s = step.s
    step.emit(
        Waive(
            req=WaiverRequest(
                key=key,
                loan_id=s.loan.loan_id,
                at=step.now,
                amounts=amounts,
                currency=s.loan.currency,
                kind=kind,
                reason=reason,
            )
        )
    )
    step.note(kind, channel="ledger", outcome="posted", key=key, detail=f"{amounts.total} {s.loan.currency}: {reason}")


def post_fee(step: Step, action: PlannedAction) -> None:
    """Post one period's late fee. The balance changes in the same decision, so a payment that
    comes while the ledger row is written is allocated against the fee too; the key makes it once."""
    s = step.s
    assert action.period is not None
    amount = fee_for_period(s.policy.late_fee, s.balance, s.penalties_posted, s.loan.principal, s.loan.currency)
    key = f"{s.loan.loan_id}/fee/{action.period}"
    if amount <= 0:
        step.note("late_fee", channel="ledger", outcome="capped", key=key, detail=f"period {action.period}")
        return
    s.balance = s.balance.with_component("penalties", s.balance.penalties + amount)
    s.penalties_posted += amount
    step.note(
        "late_fee",
        channel="ledger",
        outcome="posted",
        key=key,
        detail=f"period {action.period}: {amount} {s.loan.currency}",
    )
    step.emit(
        PostFee(
            req=FeeRequest(
                key=key,
                loan_id=s.loan.loan_id,
                period=action.period,
                amount=amount,
                currency=s.loan.currency,
                at=step.now,
            )
        )
    )


def write_off(step: Step) -> None:
    """Charge the balance off; nothing of the ladder runs after it, recovery goes on."""
    s = step.s
    s.charged_off_at = step.now
    s.cursor = len(step.plan)
    key = f"{s.loan.loan_id}/write-off"
    step.note(
        "write_off", channel="ledger", outcome="charged_off", key=key, detail=f"{s.balance.total} {s.loan.currency}"
    )
    step.emit(
        ChargeOff(
            req=ChargeOffRequest(
                key=key, loan_id=s.loan.loan_id, balance=s.balance, currency=s.loan.currency, at=step.now
            )
        )
    )
    step.record("written-off", "written_off")
    cancel_tasks(step, "written off")
