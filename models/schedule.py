"""Calendar arithmetic of collection: days past due, stages, and the plan of dated actions.

Everything here is pure: the workflow passes `now`, so the same functions run in workflow
code, in the status query and in unit tests.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict

from models.loan import OverdueLoan, Stage
from models.policy import FeeKind, LadderStep, Policy


class ActionKind(StrEnum):
    """What a dated action of the plan does (stored as its value: "stage", "fee", ...)."""

    stage = "stage"  # the loan moves to the next DPD band, at local midnight
    fee = "fee"  # a late-fee period starts
    step = "step"  # a ladder step of the policy (a message, a call, an agency, litigation)
    write_off = "write_off"  # the policy's write-off day


_KIND_ORDER: dict[ActionKind, int] = {kind: n for n, kind in enumerate(ActionKind)}
"""The order of actions on the same day: the order of ActionKind's members."""


class PlannedAction(BaseModel):
    """One dated thing the workflow will do unless the loan closes first."""

    model_config = ConfigDict(frozen=True)

    key: str
    dpd: int
    kind: ActionKind
    step: LadderStep | None = None
    period: int | None = None
    stage: Stage | None = None


def local_date(now: datetime, tz: str) -> date:
    """The calendar date at `now` in zone `tz`."""
    return now.astimezone(ZoneInfo(tz)).date()


def days_past_due(now: datetime, due_date: date, tz: str, paused_days: int = 0) -> int:
    """Days past due on the borrower's calendar, not counting paused days; never negative."""
    return max(0, (local_date(now, tz) - due_date).days - paused_days)


def stage_for_dpd(dpd: int, policy: Policy) -> Stage:
    """The DPD band a loan at `dpd` falls in (DPD below `early` still counts as early)."""
    if dpd >= policy.stages.late:
        return Stage.late
    if dpd >= policy.stages.middle:
        return Stage.middle
    return Stage.early


@lru_cache(maxsize=1 << 16)
def at_local(day: date, clock: time, tz: str) -> datetime:
    """Aware datetime of `clock` on `day` in zone `tz` (DST gaps resolve forward). Cached: a
    pure function of immutable values, asked again on every decision for the plan's next
    action (and millions of times by the simulator)."""
    local = datetime.combine(day, clock, tzinfo=ZoneInfo(tz))
    return local.astimezone(ZoneInfo("UTC")).astimezone(ZoneInfo(tz))


def action_time(action: PlannedAction, loan: OverdueLoan, policy: Policy, paused_days: int) -> datetime:
    """When `action` falls due: stage changes at local midnight, everything else at send time."""
    day = loan.due_date + timedelta(days=action.dpd + paused_days)
    clock = time(0, 0) if action.kind == ActionKind.stage else policy.contact.send_at
    return at_local(day, clock, loan.borrower.timezone)


def next_contact_moment(now: datetime, policy: Policy, tz: str) -> datetime:
    """`now` if it lies inside the contact window, else the window's next opening."""
    local = now.astimezone(ZoneInfo(tz))
    window = policy.contact
    if window.start <= local.time() < window.end:
        return now
    day = local.date() if local.time() < window.start else local.date() + timedelta(days=1)
    return at_local(day, window.start, tz)


def fee_dpds(policy: Policy) -> list[int]:
    """DPDs at which a late-fee period starts, before write-off."""
    rule = policy.late_fee
    if rule.kind == FeeKind.none:
        return []
    dpds: list[int] = []
    dpd = rule.first_dpd
    while dpd < policy.write_off_dpd and (rule.max_periods is None or len(dpds) < rule.max_periods):
        dpds.append(dpd)
        if rule.every_days == 0:
            break
        dpd += rule.every_days
    return dpds


def step_applies(step: LadderStep, loan: OverdueLoan) -> bool:
    """Whether a step is for this loan's segment (product, size)."""
    if step.products is not None and loan.product not in step.products:
        return False
    return step.min_outstanding is None or loan.balance().total >= step.min_outstanding


def build_plan(policy: Policy, loan: OverdueLoan) -> list[PlannedAction]:
    """Every dated action of the policy for this loan, in the order they happen. A loan changes
    its plan only through which steps apply to it (product, size), so plans are kept per policy
    object and set of steps (read-only, shared: the simulator starts 100,000 loans)."""
    applies = tuple(step_applies(step, loan) for step in policy.ladder)
    cached = _PLANS.get((id(policy), applies))
    if cached is not None and cached[0] is policy:
        return cached[1]
    if len(_PLANS) > 256:
        _PLANS.clear()
    plan = _build_plan(policy, applies)
    _PLANS[(id(policy), applies)] = (policy, plan)
    return plan


_PLANS: dict[tuple[int, tuple[bool, ...]], tuple[Policy, list[PlannedAction]]] = {}


def _build_plan(policy: Policy, applies: tuple[bool, ...]) -> list[PlannedAction]:
    actions = [
        PlannedAction(key=f"stage:{stage}", dpd=dpd, kind=ActionKind.stage, stage=stage)
        for stage, dpd in ((Stage.middle, policy.stages.middle), (Stage.late, policy.stages.late))
        if dpd < policy.write_off_dpd
    ]
    actions += [
        PlannedAction(key=f"fee:{n}", dpd=dpd, kind=ActionKind.fee, period=n)
        for n, dpd in enumerate(fee_dpds(policy), start=1)
    ]
    actions += [
        PlannedAction(key=f"step:{step.key}", dpd=step.dpd, kind=ActionKind.step, step=step)
        for step, applied in zip(policy.ladder, applies, strict=True)
        if applied
    ]
    actions.append(PlannedAction(key="write_off", dpd=policy.write_off_dpd, kind=ActionKind.write_off))
    return sorted(actions, key=lambda a: (a.dpd, _KIND_ORDER[a.kind]))


def catch_up(plan: list[PlannedAction], dpd_now: int) -> tuple[int, PlannedAction | None]:
    """Where a loan handed over at `dpd_now` joins its plan.

    Returns the index of the first action still ahead (DPD >= dpd_now) and the latest
    ladder step already behind it, which runs at once so that a loan handed over at
    DPD 40 gets its demand letter now rather than nothing until the next rung. Earlier
    fee periods are taken to be in the snapshot's penalties. A loan at or past its
    write-off day goes straight to write-off.
    """
    if plan[-1].kind == ActionKind.write_off and plan[-1].dpd <= dpd_now:
        return len(plan) - 1, None
    cursor = next((i for i, a in enumerate(plan) if a.dpd >= dpd_now), len(plan))
    behind = [a for a in plan[:cursor] if a.kind == ActionKind.step]
    return cursor, (behind[-1] if behind else None)


def catch_up_at(
    plan: list[PlannedAction], loan: OverdueLoan, policy: Policy, at: datetime
) -> tuple[int, PlannedAction | None]:
    """Where a loan handed over at `at` joins its plan, by the time each action falls due
    (`action_time`), not only by its day: what was due by `at` is behind, so a loan handed over
    at DPD 3 in the evening, after that day's 10:00 reminder was due, runs only that reminder
    (the latest step behind) and not also the DPD 1 one. Fee periods and stage changes behind
    are taken to be in the snapshot. A loan at or past its write-off time goes straight to
    write-off. (`catch_up` is the first workflow version's rule, by DPD alone.)

    Returns the index of the first action still ahead and the latest ladder step behind it."""
    if plan[-1].kind == ActionKind.write_off and action_time(plan[-1], loan, policy, 0) <= at:
        return len(plan) - 1, None
    cursor = next((i for i, a in enumerate(plan) if action_time(a, loan, policy, 0) > at), len(plan))
    behind = [a for a in plan[:cursor] if a.kind == ActionKind.step]
    return cursor, (behind[-1] if behind else None)
