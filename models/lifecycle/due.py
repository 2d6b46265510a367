"""What is due and when: the plan's next action, a late hand-over's catch-up step, task outcome
deadlines, call retries, deferred contacts, the agency recall, the arrangements' dated checks,
the end of a breathing space and of recovery. `next_wake` is the earliest of them; `run_due`
does the earliest one due by the step's time."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import NamedTuple

from models.arrangements import Plan
from models.effects import CloseTask
from models.lifecycle.closing import close
from models.lifecycle.contacts import recall, retry, run_deferred, run_step, send, timed_out
from models.lifecycle.money import post_fee, write_off
from models.lifecycle.step import Step, clock_of, contact_time, plan_of
from models.loan import Stage
from models.negotiation import judge_instalment, judged_at
from models.policy import Action
from models.requests import TaskClosure
from models.schedule import ActionKind, PlannedAction, action_time, at_local
from models.status import CollectionState

_CONTACTS = (Action.message, Action.call, Action.field_visit)


class DueKind(StrEnum):
    """Sources of work, in the order that breaks a tie: the agency recall and overdue task
    outcomes come before new contacts."""

    recall = "recall"
    task_timeout = "task_timeout"
    deferred = "deferred"
    catch_up = "catch_up"
    plan = "plan"
    retry = "retry"
    promise_check = "promise_check"
    instalment_check = "instalment_check"
    plan_reminder = "plan_reminder"
    settlement_lapse = "settlement_lapse"
    hardship_end = "hardship_end"
    recovery_end = "recovery_end"


class Due(NamedTuple):
    """The next thing the loan will do, and when. (A named tuple: the loop lists every pending
    item on each decision, and a tuple is several times cheaper to make than a frozen dataclass.)"""

    at: datetime
    kind: DueKind
    label: str
    ref: str = ""


def due_items(s: CollectionState, plan: list[PlannedAction] | None = None) -> list[Due]:
    """Every pending item, in tie-break order. While escalation is paused the ladder (steps,
    fees, stages, write-off) waits; while a hold or stop lasts, arrangement dates wait too.
    A closed loan has none."""
    if s.closed_as is not None:
        return []
    plan = plan if plan is not None else plan_of(s)
    items: list[Due] = []
    if s.placement is not None:
        items.append(Due(s.placement.recall_at, DueKind.recall, f"agency recall: {s.placement.agency}"))
    items += [Due(t.deadline, DueKind.task_timeout, f"outcome due: {t.task_id}", t.task_id) for t in s.open_tasks]
    items += [Due(d.at, DueKind.deferred, f"deferred {d.channel} contact: {d.key}", d.key) for d in s.deferred]
    if s.paused_reason is None and s.charged_off_at is None:
        items += _ladder_items(s, plan)
    if not s.holds and s.stop is None:
        items += _arrangement_items(s)
    hardship = s.hold("hardship")
    if hardship is not None and hardship.until is not None:
        items.append(Due(hardship.until, DueKind.hardship_end, "end of the breathing space"))
    if s.charged_off_at is not None:
        end = s.charged_off_at + timedelta(days=s.policy.recovery_days)
        items.append(Due(max(end, clock_of(s)), DueKind.recovery_end, "end of recovery"))
    return items


def next_due(s: CollectionState, plan: list[PlannedAction] | None = None) -> Due | None:
    """The earliest pending item (the first in tie-break order among equals)."""
    items = due_items(s, plan)
    return min(items, key=lambda d: d.at) if items else None


def next_wake(s: CollectionState) -> datetime | None:
    """When the loan must next be woken (None: only a request can move it on)."""
    due = next_due(s)
    return due.at if due else None


def _ladder_items(s: CollectionState, plan: list[PlannedAction]) -> list[Due]:
    items: list[Due] = []
    if s.catch_up_key is not None:
        items.append(
            Due(contact_time(s, s.started_at), DueKind.catch_up, s.catch_up_key.removeprefix("step:"), s.catch_up_key)
        )
    if s.cursor < len(plan):
        action = plan[s.cursor]
        at = action_time(action, s.loan, s.policy, s.paused_days)
        if action.step is not None and action.step.action in _CONTACTS:
            at = contact_time(s, at)
        items.append(Due(at, DueKind.plan, action.key.removeprefix("step:")))
    items += [
        Due(contact_time(s, r.deadline), DueKind.retry, f"{r.kind} retry {r.attempt}: {r.step_key}", r.task_id)
        for r in s.retries
    ]
    return items


def _arrangement_items(s: CollectionState) -> list[Due]:
    """Dated checks of the open arrangements (their dates move on by the days of holds)."""
    now = clock_of(s)
    items: list[Due] = []
    pr, plan, st = s.open_promise(), s.active_plan(), s.open_settlement()
    if pr is not None:
        at = judged_at(s, pr.due, s.policy.promise.grace_days, pr.held_at_start, now)
        items.append(Due(at, DueKind.promise_check, f"promise due {pr.due}", pr.promise_id))
    inst = plan.next_open() if plan is not None else None
    if plan is not None and inst is not None:
        at = judged_at(s, inst.due, s.policy.plan.grace_days, plan.held_at_start, now)
        items.append(Due(at, DueKind.instalment_check, f"instalment {inst.number} due {inst.due}", plan.plan_id))
        if not inst.reminded:
            day = inst.due - timedelta(days=s.policy.plan.reminder_days_before)
            at = contact_time(s, at_local(day, s.policy.contact.send_at, s.loan.borrower.timezone))
            items.append(Due(at, DueKind.plan_reminder, f"reminder of instalment {inst.number}", plan.plan_id))
    if st is not None:
        at = judged_at(s, st.deadline, 0, st.held_at_start, now)
        items.append(Due(at, DueKind.settlement_lapse, f"settlement deadline {st.deadline}", st.offer_id))
    return items


# ------------------------------------------------------------------ running what is due


def run_due(step: Step) -> None:
    """Run the earliest item due at or before the step's time, if any. One at a time: an item's
    contacts go through the guard and come back before the next item is decided (as a collector
    works a file), so the loop feeds time again while more is due (`next_wake` <= the clock)."""
    due = next_due(step.s, step.plan)
    if due is not None and due.at <= step.now:
        run_item(step, due)


def run_item(step: Step, due: Due) -> None:
    s = step.s
    match due.kind:
        case DueKind.plan:
            action = step.plan[s.cursor]
            s.cursor += 1
            _run_planned(step, action)
        case DueKind.catch_up:
            s.catch_up_key = None
            action = next(a for a in step.plan if a.key == due.ref)
            assert action.step is not None
            run_step(step, action.step, attempt=1)
        case DueKind.task_timeout:
            timed_out(step, due.ref)
        case DueKind.deferred:
            run_deferred(step, due.ref)
        case DueKind.retry:
            retry(step, due.ref)
        case DueKind.recall:
            recall(step, "agency period ended")
        case DueKind.recovery_end:
            step.note("recovery_ended", outcome="closed as written off")
            close(step, Stage.written_off)
        case DueKind.promise_check:
            _judge_promise(step, due.ref)
        case DueKind.instalment_check:
            assert s.plan is not None
            _record_notes(step, judge_instalment(s, s.plan, s.policy.plan.max_missed), due.ref)
        case DueKind.plan_reminder:
            assert s.plan is not None
            _remind_instalment(step, s.plan)
        case DueKind.settlement_lapse:
            _lapse_settlement(step, due.ref)
        case DueKind.hardship_end:
            _end_breathing_space(step)
        case _:
            raise ValueError(f"unknown due item kind {due.kind!r}")


def _run_planned(step: Step, action: PlannedAction) -> None:
    match action.kind:
        case ActionKind.stage:
            step.note("stage_changed", outcome=str(action.stage), key=action.key)
            step.record(action.key, "stage_changed")
        case ActionKind.fee:
            post_fee(step, action)
        case ActionKind.step:
            assert action.step is not None
            run_step(step, action.step, attempt=1)
        case ActionKind.write_off:
            write_off(step)
        case _:
            raise ValueError(f"unknown plan action kind {action.kind!r}")


def _judge_promise(step: Step, ref: str) -> None:
    s = step.s
    assert s.promise is not None
    s.promise.status = "broken"
    s.counts.promises_broken += 1
    _record_notes(step, [("promise", "broken", f"{s.promise.amount} not paid by {s.promise.due}")], ref)


def _lapse_settlement(step: Step, ref: str) -> None:
    s = step.s
    assert s.settlement is not None
    s.settlement.status = "lapsed"
    s.counts.settlements_lapsed += 1
    _record_notes(step, [("settlement", "lapsed", f"{s.settlement.amount} not paid by {s.settlement.deadline}")], ref)


def _remind_instalment(step: Step, plan: Plan) -> None:
    inst = plan.next_open()
    assert inst is not None  # the reminder is due only while an instalment is open
    inst.reminded = True
    s = step.s
    send(
        step,
        f"{plan.plan_id.removeprefix(s.loan.loan_id + '/')}/reminder/{inst.number}",
        "plan_reminder",
        "sms",
        purpose="arrangement",
        extra={
            "instalment_number": str(inst.number),
            "instalment_amount": f"{inst.amount:,}",
            "instalment_due": inst.due.isoformat(),
        },
    )


def _end_breathing_space(step: Step) -> None:
    s = step.s
    hold = s.hold("hardship")
    assert hold is not None
    s.holds.remove(hold)
    step.actor = "workflow"
    step.note("hardship", outcome="ended", key=hold.review_task_id, detail="breathing space over, no review outcome")
    step.emit(
        CloseTask(
            req=TaskClosure(
                task_id=hold.review_task_id,
                loan_id=s.loan.loan_id,
                at=step.now,
                outcome="timeout",
                note="breathing space ended before a review outcome",
            )
        )
    )
    step.record(f"{hold.review_task_id.removeprefix(s.loan.loan_id + '/')}/ended", "hardship_ended")


def _record_notes(step: Step, notes: list[tuple[str, str, str]], ref: str) -> None:
    for action, outcome, detail in notes:
        step.note(action, outcome=outcome, key=ref, detail=detail)
        step.record(
            f"{ref.removeprefix(step.loan_id + '/')}/{action}-{outcome}/{len(step.s.timeline)}",
            f"{action}_{outcome}",
            detail=detail,
        )
