"""The policy's limits on what a collector may offer, as a form shows them before it is sent:
the latest promise date, the plan's length, smallest instalment and latest first due date, and
the settlement's largest discount at the loan's stage with the smallest amount it allows. The
same numbers `models.arrangements` checks a request against (`check_promise`, `plan_schedule`,
`check_settlement`); the loan still decides, so a form within these limits can be refused for the
loan's own reasons (a promise already open, too many broken), and the page shows that reason."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import ROUND_UP, Decimal

from pydantic import BaseModel

from models.money import minor_units
from models.policy import Policy


class OfferLimits(BaseModel):
    """What the forms may ask for, on the borrower's `today`."""

    today: date
    outstanding: Decimal
    currency: str
    promise_latest: date
    promise_max_broken: int
    plan_max_instalments: int
    plan_min_instalment: Decimal
    plan_first_due_latest: date
    plan_max_term_days: int
    plan_frequencies: list[str]
    settlement_max_discount: Decimal
    """The share of the outstanding the stage allows to waive (0.10: 10 %)."""
    settlement_min_amount: Decimal
    settlement_latest: date


def offer_limits(policy: Policy, stage: str, outstanding: Decimal, currency: str, today: date) -> OfferLimits:
    """The limits for a loan at `stage` owing `outstanding` on the borrower's `today`."""
    discount = policy.settlement.max_discount.get(stage, Decimal(0))
    unit = Decimal(1).scaleb(-minor_units(currency))
    return OfferLimits(
        today=today,
        outstanding=outstanding,
        currency=currency,
        promise_latest=today + timedelta(days=policy.promise.max_days),
        promise_max_broken=policy.promise.max_broken,
        plan_max_instalments=policy.plan.max_instalments,
        plan_min_instalment=policy.plan.min_instalment,
        plan_first_due_latest=today + timedelta(days=policy.plan.max_first_due_days),
        plan_max_term_days=policy.plan.max_term_days,
        plan_frequencies=list(policy.plan.frequencies),
        settlement_max_discount=discount,
        settlement_min_amount=(outstanding * (1 - discount)).quantize(unit, rounding=ROUND_UP),
        settlement_latest=today + timedelta(days=policy.settlement.max_days),
    )
