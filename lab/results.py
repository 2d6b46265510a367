"""One loan's collection as the strategy report counts it: what was recovered and when, which
DPD bucket the loan was in every 30 days, what was done to collect (contacts by channel, guard
decisions by rule, promises, arrangements) and what it cost.

Both sources produce these records: the simulator (`lab.simulate`) from the decider's commands
on a simulated clock, and the live report (`lab.live`) from the database of real loans. The
figures (`lab.figures`) and the report (`lab.report`) read nothing else, so a simulated and a
production report are computed by the same code and read the same way.

Money is `Decimal` in the loan's currency; a report never adds two currencies together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

SNAPSHOT_DAYS = 30
"""A loan's DPD bucket is taken at hand-over and every 30 days after (the roll-rate periods)."""

BUCKETS: tuple[str, ...] = ("1-30", "31-60", "61-90", "91-180", "written_off", "paid", "closed")
"""Where a loan can be at a snapshot: a DPD bucket while open (calendar DPD, days since the due
date; DPD 0 counts as 1-30, DPD over 180 as 91-180), written off (charged off, in recovery or
closed so), paid (closed paid or settled: cured), closed (stopped otherwise: bankruptcy,
death, cease-contact)."""

CHANNELS: tuple[str, ...] = ("sms", "email", "letter", "phone", "visit", "agency")
"""Contacts by channel: messages sent, call tasks worked (an attempt), field visits, placements."""

COST_KINDS: tuple[str, ...] = ("sms", "email", "letter", "call_minutes", "visit", "agency_commission", "court")


def bucket_for_dpd(dpd: int) -> str:
    """The roll-rate bucket of an open loan at calendar DPD `dpd`."""
    if dpd <= 30:
        return "1-30"
    if dpd <= 60:
        return "31-60"
    if dpd <= 90:
        return "61-90"
    return "91-180"


@dataclass(slots=True)
class LoanResult:
    """A loan from hand-over to the end of the period looked at."""

    loan_id: str
    borrower_id: str
    segment: str
    """The screening's segment ("" when the loan was not screened)."""
    experiment: str
    """The experiment that assigned its strategy ("" when none did)."""
    arm: str
    """"champion", a challenger's name, "winner" (assigned after the experiment ended) or
    "explicit" (the platform named the policy)."""
    policy: str
    currency: str
    handover_at: datetime
    handover_dpd: int
    handover_balance: Decimal
    """Everything owed at hand-over (principal, interest, fees, penalties)."""
    days: int
    """How many days after hand-over the record covers (the simulation's horizon, or the live
    report's period end)."""
    payments: list[tuple[int, Decimal]] = field(default_factory=list)
    """(day after hand-over, amount) for every payment applied (0 = the hand-over day)."""
    buckets: list[str] = field(default_factory=list)
    """The bucket (`BUCKETS`) at hand-over and at every `SNAPSHOT_DAYS` after, up to `days`."""
    outcome: str = "open"
    """"open", "paid", "settled", "written_off" (charged off, whatever came after) or "closed"."""
    closed_day: int | None = None
    contacts: dict[str, int] = field(default_factory=dict)
    """By channel (`CHANNELS`)."""
    call_minutes: Decimal = Decimal(0)
    guard: dict[str, int] = field(default_factory=dict)
    """Guard decisions other than allowed, as "<verdict>:<rule id>" ("deferred:CN-CALLS-3-PER-DAY")."""
    promises_made: int = 0
    promises_kept: int = 0
    promises_broken: int = 0
    plans: int = 0
    plans_kept: int = 0
    plans_broken: int = 0
    settlements: int = 0
    hardships: int = 0
    disputes: int = 0
    contacts_after_refusal: int = 0
    """Complaints proxy: contacts made on a channel after the borrower opted out of it or after
    the guard refused that channel for a stop or hold. Must be zero."""
    fees_posted: Decimal = Decimal(0)
    charged_off: Decimal = Decimal(0)
    costs: dict[str, Decimal] = field(default_factory=dict)
    """By kind (`COST_KINDS`), in the loan's currency."""

    @property
    def recovered(self) -> Decimal:
        return sum((amount for _, amount in self.payments), Decimal(0))

    def recovered_by(self, day: int) -> Decimal:
        """Recovered from hand-over to the end of `day` after it."""
        return sum((amount for d, amount in self.payments if d <= day), Decimal(0))

    @property
    def cost(self) -> Decimal:
        return sum(self.costs.values(), Decimal(0))

    @property
    def cured(self) -> bool:
        return self.outcome in ("paid", "settled")
