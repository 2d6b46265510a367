"""State transitions of arrangements and holds, as pure functions over the workflow state.

The workflow calls these and records what they return; tests call them directly.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal

from models.arrangements import ArrangementInfo, Plan, check_due
from models.money import ZERO
from models.schedule import at_local, local_date
from models.status import CollectionState

Note = tuple[str, str, str]  # (action, outcome, detail) for the timeline


def pause_reason(s: CollectionState) -> str | None:
    """Why escalation is paused now, most serious reason first; None if it runs."""
    if s.stop is not None:
        return f"stopped: {s.stop.reason} ({s.stop.route})"
    if s.hold("dispute"):
        return "dispute open"
    if s.hold("hardship"):
        return "hardship breathing space"
    if s.open_settlement():
        return "settlement offer open"
    if s.active_plan():
        return "instalment plan"
    if s.open_promise():
        return "promise to pay"
    return None


def days_between(start: datetime, end: datetime, tz: str) -> int:
    """Whole calendar days from `start` to `end` in zone `tz`."""
    return (local_date(end, tz) - local_date(start, tz)).days


def held_so_far(s: CollectionState, now: datetime) -> int:
    """Days of holds in the loan's life so far, the ongoing hold included: an arrangement
    records this when it is made, so only later hold days move its dates."""
    ongoing = days_between(s.hold_started_at, now, s.loan.borrower.timezone) if s.hold_started_at else 0
    return s.held_days + ongoing


def held_since(s: CollectionState, held_at_start: int, now: datetime) -> int:
    """Days of holds since an arrangement was made (its `held_at_start`)."""
    return held_so_far(s, now) - held_at_start


def judged_at(s: CollectionState, due: date, grace_days: int, held_at_start: int, now: datetime) -> datetime:
    """When something due on `due` is judged: the start of the day after its last grace day,
    moved on by the days of holds since the arrangement was made."""
    last = check_due(due, grace_days, held_since(s, held_at_start, now))
    return at_local(last + timedelta(days=1), time(0, 0), s.loan.borrower.timezone)


def credit_payments(s: CollectionState) -> list[Note]:
    """Recognise what the payments so far fulfil: a settlement, a promise, instalments."""
    notes: list[Note] = []
    st = s.open_settlement()
    if st and s.paid_total - st.paid_at_start >= st.amount:
        st.status = "paid"
        notes.append(("settlement", "paid", f"{st.amount} paid by {st.deadline}"))
    pr = s.open_promise()
    if pr and s.paid_total - pr.paid_at_start >= pr.amount:
        pr.status = "kept"
        s.counts.promises_kept += 1
        notes.append(("promise", "kept", f"{pr.amount} promised for {pr.due}"))
    plan = s.active_plan()
    if plan:
        notes += _credit_plan(s, plan)
    return notes


def _credit_plan(s: CollectionState, plan: Plan) -> list[Note]:
    paid = s.paid_total - plan.paid_at_start
    notes: list[Note] = []
    for inst in plan.instalments:
        if inst.status in ("pending", "missed") and paid >= inst.cumulative:
            caught_up = inst.status == "missed"
            inst.status = "caught_up" if caught_up else "kept"
            if not caught_up:
                s.counts.instalments_kept += 1
            notes.append(("instalment", inst.status, f"#{inst.number} of {inst.amount} due {inst.due}"))
    if all(i.status in ("kept", "caught_up") for i in plan.instalments):
        plan.status = "completed"
        notes.append(("plan", "completed", f"{plan.total} paid"))
    return notes


def judge_instalment(s: CollectionState, plan: Plan, max_missed: int) -> list[Note]:
    """The next instalment's day has passed unpaid: missed; too many misses break the plan."""
    inst = plan.next_open()
    if inst is None:
        return []
    inst.status = "missed"
    plan.missed += 1
    s.counts.instalments_missed += 1
    notes: list[Note] = [("instalment", "missed", f"#{inst.number} of {inst.amount} due {inst.due}")]
    if plan.missed >= max_missed:
        plan.status = "broken"
        s.counts.plans_broken += 1
        notes.append(("plan", "broken", f"{plan.missed} instalments missed"))
    return notes


def arrangement_info(s: CollectionState, now: datetime) -> ArrangementInfo | None:
    """The arrangement the status shows: an open settlement, else the plan, else a promise."""
    st, plan, pr = s.open_settlement(), s.active_plan(), s.open_promise()
    left: Decimal | None
    if st:
        left = max(ZERO, st.amount - (s.paid_total - st.paid_at_start))
        return ArrangementInfo(
            kind="settlement", ref=st.offer_id, next_due_date=st.deadline, next_due_amount=left, status=st.status
        )
    if plan:
        inst = plan.next_open()
        left = None if inst is None else max(ZERO, inst.cumulative - (s.paid_total - plan.paid_at_start))
        return ArrangementInfo(
            kind="plan",
            ref=plan.plan_id,
            next_due_date=inst.due if inst else None,
            next_due_amount=left,
            status=f"{plan.missed} missed",
        )
    if pr:
        left = max(ZERO, pr.amount - (s.paid_total - pr.paid_at_start))
        return ArrangementInfo(
            kind="promise", ref=pr.promise_id, next_due_date=pr.due, next_due_amount=left, status=pr.status
        )
    return None
