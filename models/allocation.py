"""Payment allocation: which part of the balance a payment pays off, in policy order."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, ConfigDict

from models.loan import Balance
from models.money import ZERO, Amount


class Allocation(BaseModel):
    """How one payment was split; `unapplied` is money beyond the balance (a refund due)."""

    model_config = ConfigDict(frozen=True)

    penalties: Amount = ZERO
    fees: Amount = ZERO
    interest: Amount = ZERO
    principal: Amount = ZERO
    unapplied: Amount = ZERO

    def applied(self) -> Decimal:
        return self.penalties + self.fees + self.interest + self.principal


def allocate(amount: Decimal, balance: Balance, order: list[str]) -> tuple[Allocation, Balance]:
    """Split `amount` over the balance components in `order`; returns the split and new balance."""
    left = amount
    parts: dict[str, Decimal] = {}
    for name in order:
        take = min(left, balance.component(name))
        parts[name] = take
        balance = balance.with_component(name, balance.component(name) - take)
        left -= take
    return Allocation(**parts, unapplied=left), balance
