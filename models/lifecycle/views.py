"""What others see of a loan: its status as of a moment, and the portfolio's search attributes.
Both read the state and change nothing (queries and the status update use them)."""

from __future__ import annotations

from datetime import datetime

from models.lifecycle.due import next_due
from models.lifecycle.step import dpd, stage
from models.money import minor_units
from models.negotiation import arrangement_info
from models.status import CollectionState, CollectionStatus

# The search attributes' names (search_attributes.py declares their keys for the SDK; the
# workflow turns these values into typed updates). No personal data: Temporal stores them in clear.
STAGE, DPD_BAND, POLICY, AGENCY, CURRENCY, OUTSTANDING = (
    "CollectionStage",
    "CollectionDpdBand",
    "CollectionPolicy",
    "CollectionAgency",
    "CollectionCurrency",
    "CollectionOutstandingMinor",
)
SEGMENT, ARM = "CollectionSegment", "CollectionArm"
"""Set only on screened loans (`CollectionState.strategy`): a loan started before screening
upserts exactly what it did, so its history replays."""
DPD_BANDS: tuple[tuple[int, str], ...] = (
    (180, "180+"),
    (120, "120-179"),
    (90, "90-119"),
    (60, "60-89"),
    (30, "30-59"),
    (0, "0-29"),
)


def dpd_band(days: int) -> str:
    """The reporting band of a DPD (bands change where the default ladder wakes the loan)."""
    return next(label for floor, label in DPD_BANDS if days >= floor)


def status(s: CollectionState, now: datetime, workflow_id: str = "") -> CollectionStatus:
    """The loan as the platform sees it at `now`."""
    due = next_due(s) if s.closed_as is None else None
    return CollectionStatus(
        loan_id=s.loan.loan_id,
        workflow_id=workflow_id or s.workflow_id,
        policy=s.policy.name,
        policy_version=s.policy.version,
        currency=s.loan.currency,
        stage=stage(s, now),
        days_past_due=dpd(s, now),
        as_of=now,
        outstanding=s.balance,
        paid_total=s.paid_total,
        next_action=due.label if due else None,
        next_action_at=due.at if due else None,
        paused_reason=s.paused_reason,
        paused_days=s.paused_days,
        arrangement=arrangement_info(s, now),
        counts=s.counts,
        holds=list(s.holds),
        stop=s.stop,
        charged_off=s.charged_off_at is not None,
        deferred=list(s.deferred),
        opted_out=list(s.opted_out),
        closed=s.closed_as is not None,
        open_tasks=list(s.open_tasks),
        placement=s.placement,
        case=s.case,
        timeline=list(s.timeline),
        strategy=s.strategy,
    )


def search_values(s: CollectionState, now: datetime) -> dict[str, str | int]:
    """The portfolio's search attributes: stage, DPD band, policy, agency, currency, the
    outstanding total in minor units (an exact integer) and, for a screened loan, its segment
    and arm (`<experiment>/<arm>`, or the arm alone when no experiment assigned it)."""
    values: dict[str, str | int] = {
        STAGE: str(stage(s, now)),
        DPD_BAND: dpd_band(dpd(s, now)),
        POLICY: s.policy.name,
        AGENCY: s.placement.agency if s.placement else "",
        CURRENCY: s.loan.currency,
        OUTSTANDING: int(s.balance.total.scaleb(minor_units(s.loan.currency))),
    }
    if s.strategy is not None:
        a = s.strategy.assignment
        values[SEGMENT] = s.strategy.segment
        values[ARM] = f"{a.experiment}/{a.arm}" if a.experiment else a.arm
    return values


def search_changes(s: CollectionState, now: datetime) -> dict[str, str | int]:
    """The search attributes that differ from what the workflow last set (`state.search_values`)."""
    return {name: value for name, value in search_values(s, now).items() if s.search_values.get(name) != value}
