"""Payments into a loan and the receipt that answers them."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models.allocation import Allocation
from models.loan import Balance, Stage
from models.money import Amount, Currency, quantize


class Payment(BaseModel):
    """Money received for a loan. `payment_id` is the payer side's unique reference."""

    model_config = ConfigDict(frozen=True)

    payment_id: str = Field(min_length=1, max_length=128)
    amount: Amount
    currency: Currency
    paid_at: AwareDatetime
    source: str = "platform"
    reference: str = ""


class PaymentRejected(ValueError):
    """A payment that changes nothing; the message says why."""


class PaymentReceipt(BaseModel):
    """What a payment did: the split, the balance left, and where the loan stands now."""

    loan_id: str
    payment_id: str
    amount: Amount
    currency: str
    allocation: Allocation
    outstanding: Balance
    paid_total: Amount
    stage: Stage
    closed: bool
    received_at: datetime


def check_payment(payment: Payment, currency: str, seen: list[str], closed_as: Stage | None) -> None:
    """Raise PaymentRejected unless the payment may be applied to the loan."""
    if closed_as is not None:
        raise PaymentRejected(f"the loan is closed ({closed_as}); payment {payment.payment_id} not applied")
    if payment.amount <= Decimal(0):
        raise PaymentRejected(f"payment amount must be positive, got {payment.amount}")
    if payment.currency != currency:
        raise PaymentRejected(f"payment currency {payment.currency} differs from the loan's {currency}")
    if quantize(payment.amount, currency) != payment.amount:
        raise PaymentRejected(f"payment amount {payment.amount} has more decimals than {currency} allows")
    if payment.payment_id in seen:
        raise PaymentRejected(f"payment {payment.payment_id} was already applied")
