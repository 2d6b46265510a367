"""Late-fee arithmetic: how much the fee of a period is, given what was posted before."""

from __future__ import annotations

from decimal import Decimal

from models.loan import Balance
from models.money import ZERO, quantize
from models.policy import FeeKind, LateFee


def fee_cap(rule: LateFee, original_principal: Decimal, currency: str) -> Decimal:
    """Most late fees a loan may ever carry: a share of the principal at hand-over."""
    return quantize(original_principal * rule.cap_ratio, currency)


def fee_for_period(
    rule: LateFee,
    balance: Balance,
    penalties_so_far: Decimal,
    original_principal: Decimal,
    currency: str,
) -> Decimal:
    """The late fee to post for one period, never pushing total penalties over the cap.

    A percent fee is charged on the overdue principal and interest at posting time (not on
    fees or earlier penalties), so partial payments lower later fees. Zero means nothing to
    post (capped, or nothing overdue).
    """
    match rule.kind:
        case FeeKind.none:
            return ZERO
        case FeeKind.flat:
            assert rule.amount is not None
            raw = rule.amount
        case FeeKind.percent:
            assert rule.rate is not None
            raw = (balance.principal + balance.interest) * rule.rate
        case _:
            raise ValueError(f"unknown late-fee kind {rule.kind!r}")
    room = fee_cap(rule, original_principal, currency) - penalties_so_far
    return max(ZERO, quantize(min(raw, room), currency))
