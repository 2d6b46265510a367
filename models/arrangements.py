"""Negotiated repayment and the borrower's situation: requests, their state, and the pure rules
that accept or refuse them.

Arrangements (promise, plan, settlement) pause escalation while they run and are kept or
broken by their dates. Holds (hardship, dispute) stop contact and fees and freeze the
arrangements' dates for as long as they last. A stop ends contact for good.

Overlap rules (enforced by `refuse_arrangement` and the workflow):
- nothing can be arranged while a dispute is open, after a stop, or on a closed loan;
- one promise at a time; a promise is refused while a plan is active (renegotiate the plan);
- a plan replaces an open promise (the promise counts neither kept nor broken);
- a new plan proposal while a plan is active renegotiates it (up to the policy's limit);
- one settlement offer at a time; it runs beside a promise or plan and ends them only when
  paid (the loan is then settled); if it lapses they go on;
- hardship allows arrangements (a plan is a usual outcome of its review);
- a stop cancels every open arrangement.
"""

from __future__ import annotations

import calendar
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from pydantic import BaseModel, Field

from models.money import ZERO, Amount, minor_units, quantize
from models.policy import Frequency, Policy, StopRoute


class ArrangementRejected(ValueError):
    """A request the policy or the loan's situation does not allow; nothing changes."""


# ------------------------------------------------------------------ requests


class PromiseRequest(BaseModel):
    """The borrower promises to pay `amount` by `date` (their local calendar)."""

    amount: Amount = Field(gt=0)
    date: date
    note: str = ""
    made_by: str = "agent"


class PlanProposal(BaseModel):
    """An instalment plan: an optional down payment now, then `instalments` equal payments
    every `frequency` from `first_due`."""

    instalments: int = Field(ge=1)
    frequency: Frequency = "monthly"
    first_due: date
    down_payment: Amount = Field(default=ZERO, ge=0)
    note: str = ""
    made_by: str = "agent"


class SettlementOffer(BaseModel):
    """A discounted lump sum that settles the loan if paid by `deadline`."""

    amount: Amount = Field(gt=0)
    deadline: date
    note: str = ""
    made_by: str = "agent"


class HardshipReport(BaseModel):
    """The borrower reports real difficulty; `evidence_ref` points at the documents."""

    reason: str = Field(min_length=1)
    evidence_ref: str = ""
    reported_by: str = "agent"


ReviewOutcome = Literal["offer_plan", "waive_interest", "waive_fees", "extend_term", "resume", "refer_to_write_off"]


class HardshipDecision(BaseModel):
    """The outcome of a hardship review, applied to the loan."""

    outcome: ReviewOutcome
    plan: PlanProposal | None = None
    extend_days: int | None = Field(default=None, ge=1, le=365)
    note: str = ""
    decided_by: str = "reviewer"


class DisputeRequest(BaseModel):
    """The borrower disputes the debt (amount, identity, or that it is owed at all)."""

    reason: str = Field(min_length=1)
    raised_by: str = "borrower"


class DisputeResolution(BaseModel):
    """`upheld`: the borrower was right and the balance is cancelled; else collection resumes."""

    upheld: bool
    note: str = ""
    resolved_by: str = "disputes-team"


StopReason = Literal["bankruptcy", "death", "cease_contact"]


class StopRequest(BaseModel):
    """Collection must stop: bankruptcy, death or a cease-contact request. `route` overrides
    the policy's route (a legal review may later decide to write off)."""

    reason: StopReason
    evidence_ref: str = ""
    route: StopRoute | None = None
    requested_by: str = "agent"


# ------------------------------------------------------------------ state


class Promise(BaseModel):
    promise_id: str
    amount: Amount
    due: date
    made_at: datetime
    paid_at_start: Amount
    held_at_start: int
    made_by: str
    status: Literal["open", "kept", "broken", "superseded", "cancelled"] = "open"


class Instalment(BaseModel):
    number: int  # 0 is the down payment
    due: date
    amount: Amount
    cumulative: Amount  # total due up to and including this instalment
    status: Literal["pending", "kept", "missed", "caught_up"] = "pending"
    reminded: bool = False


class Plan(BaseModel):
    plan_id: str
    total: Amount
    frequency: Frequency
    instalments: list[Instalment]
    made_at: datetime
    paid_at_start: Amount
    held_at_start: int
    made_by: str
    renegotiation: int = 0
    missed: int = 0
    status: Literal["active", "completed", "broken", "renegotiated", "cancelled", "settled"] = "active"

    def next_open(self) -> Instalment | None:
        """The first instalment not yet judged."""
        return next((i for i in self.instalments if i.status == "pending"), None)


class Settlement(BaseModel):
    offer_id: str
    amount: Amount
    deadline: date
    discount: Decimal
    made_at: datetime
    paid_at_start: Amount
    held_at_start: int
    made_by: str
    status: Literal["open", "paid", "lapsed", "cancelled"] = "open"


class Hold(BaseModel):
    """Hardship breathing space or an open dispute."""

    kind: Literal["hardship", "dispute"]
    reason: str
    evidence_ref: str = ""
    started_at: datetime
    until: datetime | None = None  # hardship only
    review_task_id: str = ""
    by: str


class StopInfo(BaseModel):
    reason: StopReason
    route: StopRoute
    at: datetime
    by: str
    evidence_ref: str = ""
    legal_task_id: str = ""


class ArrangementInfo(BaseModel):
    """The active arrangement as the status shows it."""

    kind: Literal["promise", "plan", "settlement"]
    ref: str
    next_due_date: date | None
    next_due_amount: Amount | None
    status: str


class NegotiationCounts(BaseModel):
    promises_kept: int = 0
    promises_broken: int = 0
    instalments_kept: int = 0
    instalments_missed: int = 0
    plans_broken: int = 0
    settlements_lapsed: int = 0


class Decision(BaseModel):
    """Answer to a negotiation request: accepted, or rejected with the reason."""

    accepted: bool
    reason: str = ""
    ref: str = ""


# ------------------------------------------------------------------ rules


def refuse_arrangement(*, closed: bool, stopped: bool, disputed: bool) -> None:
    """Situations in which nothing can be arranged."""
    if closed:
        raise ArrangementRejected("the loan is closed")
    if stopped:
        raise ArrangementRejected("collection is stopped for this loan")
    if disputed:
        raise ArrangementRejected("a dispute is open; nothing can be arranged until it is resolved")


def check_promise(
    req: PromiseRequest,
    *,
    today: date,
    outstanding: Decimal,
    currency: str,
    broken: int,
    promise_open: bool,
    plan_active: bool,
    policy: Policy,
) -> None:
    rule = policy.promise
    if broken >= rule.max_broken:
        raise ArrangementRejected(f"{broken} promises already broken; the policy allows no more promises")
    if promise_open:
        raise ArrangementRejected("a promise is already open")
    if plan_active:
        raise ArrangementRejected("an instalment plan is active; renegotiate the plan instead")
    if req.date < today:
        raise ArrangementRejected(f"the promise date {req.date} is in the past")
    if req.date > today + timedelta(days=rule.max_days):
        raise ArrangementRejected(f"the promise date {req.date} is more than {rule.max_days} days ahead")
    _check_amount(req.amount, currency, outstanding, "promised amount")


def _check_amount(amount: Decimal, currency: str, outstanding: Decimal, what: str) -> None:
    if quantize(amount, currency) != amount:
        raise ArrangementRejected(f"{what} {amount} has more decimals than {currency} allows")
    if amount > outstanding:
        raise ArrangementRejected(f"{what} {amount} exceeds the outstanding {outstanding}")


def add_periods(start: date, frequency: Frequency, n: int) -> date:
    """`start` moved by n periods; months keep the day, clamped to the month's end."""
    if frequency == "weekly":
        return start + timedelta(weeks=n)
    if frequency == "biweekly":
        return start + timedelta(weeks=2 * n)
    month = start.month - 1 + n
    year, month = start.year + month // 12, month % 12 + 1
    return date(year, month, min(start.day, calendar.monthrange(year, month)[1]))


def plan_schedule(
    req: PlanProposal, *, total: Decimal, currency: str, today: date, policy: Policy, renegotiations: int = 0
) -> list[Instalment]:
    """The instalments of an acceptable proposal; raises ArrangementRejected otherwise.

    Equal instalments rounded down to the currency unit; the last one takes the remainder,
    so the plan adds up to `total` exactly.
    """
    rule = policy.plan
    if renegotiations > rule.max_renegotiations:
        raise ArrangementRejected(f"the plan was renegotiated {rule.max_renegotiations} times already")
    if req.frequency not in rule.frequencies:
        raise ArrangementRejected(f"frequency {req.frequency} is not allowed ({', '.join(rule.frequencies)})")
    if req.instalments > rule.max_instalments:
        raise ArrangementRejected(f"{req.instalments} instalments exceed the maximum of {rule.max_instalments}")
    if req.first_due < today:
        raise ArrangementRejected(f"the first due date {req.first_due} is in the past")
    if req.first_due > today + timedelta(days=rule.max_first_due_days):
        raise ArrangementRejected(f"the first due date is more than {rule.max_first_due_days} days ahead")
    _check_amount(req.down_payment, currency, total, "down payment")
    last_due = add_periods(req.first_due, req.frequency, req.instalments - 1)
    if (last_due - today).days > rule.max_term_days:
        raise ArrangementRejected(
            f"the plan would end on {last_due}, beyond the longest term of {rule.max_term_days} days"
        )
    rest = total - req.down_payment
    unit = Decimal(1).scaleb(-minor_units(currency))
    each = (rest / req.instalments).quantize(unit, rounding=ROUND_DOWN)
    if each < rule.min_instalment:
        raise ArrangementRejected(f"instalments of {each} are below the smallest allowed, {rule.min_instalment}")
    amounts = [each] * (req.instalments - 1) + [rest - each * (req.instalments - 1)]
    schedule: list[tuple[date, Decimal]] = [(today, req.down_payment)] if req.down_payment > 0 else []
    schedule += [(add_periods(req.first_due, req.frequency, i), a) for i, a in enumerate(amounts)]
    instalments, cumulative = [], ZERO
    for number, (due, amount) in enumerate(schedule, start=0 if req.down_payment > 0 else 1):
        cumulative += amount
        instalments.append(Instalment(number=number, due=due, amount=amount, cumulative=cumulative))
    return instalments


def check_settlement(
    offer: SettlementOffer,
    *,
    today: date,
    outstanding: Decimal,
    currency: str,
    stage: str,
    settlement_open: bool,
    policy: Policy,
) -> Decimal:
    """Returns the discount share if the offer is within the policy's waiver limit."""
    rule = policy.settlement
    if settlement_open:
        raise ArrangementRejected("a settlement offer is already open")
    if offer.deadline < today:
        raise ArrangementRejected(f"the deadline {offer.deadline} is in the past")
    if offer.deadline > today + timedelta(days=rule.max_days):
        raise ArrangementRejected(f"the deadline is more than {rule.max_days} days ahead")
    _check_amount(offer.amount, currency, outstanding, "settlement amount")
    discount = (outstanding - offer.amount) / outstanding
    limit = rule.max_discount.get(stage, Decimal(0))
    if discount > limit:
        raise ArrangementRejected(f"a discount of {discount:.2%} exceeds the {limit:.0%} allowed at stage {stage}")
    return discount.quantize(Decimal("0.0001"))


def check_due(due: date, grace_days: int, held_days: int) -> date:
    """The last day a payment counts for something due on `due`: grace and holds added."""
    return due + timedelta(days=grace_days + held_days)
