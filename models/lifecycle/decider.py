"""The decider: `begin` a loan's collection, `check` a request without changing anything, and
`decide` what an event changes and which commands follow. Pure and synchronous: no clock (the
caller passes the event's time), no I/O, no randomness. The workflow shell and the strategy
simulator both run exactly these functions.

`decide` takes the state and changes it in place (it returns the same object): a state is
large (its timeline is the loan's history) and the simulator runs millions of decisions. A
request is checked before anything changes, so a refused request (`Rejected`) leaves the state
as it was.

Time: the decider keeps the loan's business time in `state.clock`, the latest time of the
events the loop fed in (a timer's target, an activity's finish), so that what the loop does next
depends only on the history, never on when a worker happened to read the clock. A request
(payment, report, negotiation) is stamped with its own time (the caller's clock, never earlier
than `state.clock`) without moving `state.clock`: what it starts is dated from its own time,
while the loop keeps deciding on the history's time.
"""

from __future__ import annotations

from datetime import datetime
from typing import NamedTuple

from models.arrangements import Decision
from models.effects import Audit, Command, CreateTask, Effect, FileCase, Place, SendMessage
from models.experiment import StrategyAssignment
from models.lifecycle import closing, contacts, requests
from models.lifecycle.due import run_due
from models.lifecycle.events import (
    AgencyContactAsked,
    AgencyReported,
    CourtReported,
    DisputeRaised,
    DisputeResolved,
    EffectDone,
    Event,
    GuardAnswered,
    HardshipReported,
    HardshipReviewed,
    OptedOut,
    PaymentReceived,
    PlanProposed,
    PromiseMade,
    SettlementOffered,
    StopRequested,
    TaskReported,
    TimeReached,
)
from models.lifecycle.money import check as check_payment
from models.lifecycle.money import reject_signalled, take_payment
from models.lifecycle.step import Rejected, Step, clock_of, dpd
from models.loan import OverdueLoan
from models.negotiation import days_between, pause_reason
from models.payment import Payment, PaymentReceipt
from models.policy import Policy
from models.requests import ConductRules
from models.schedule import build_plan, catch_up_at
from models.status import CollectionState


class Outcome(NamedTuple):
    """A decision: the (changed) state, the commands to run in order, and the answer a
    request's caller gets (a receipt, a `Decision`, an agency request's key whose guard answer
    comes later; None for loop events and reports)."""

    state: CollectionState
    commands: list[Command]
    reply: PaymentReceipt | Decision | str | None = None


LOOP_EVENTS = (TimeReached, GuardAnswered, EffectDone)
"""Events the main loop feeds in: their time moves `state.clock` on."""


def begin(
    loan: OverdueLoan,
    policy: Policy,
    rules: ConductRules,
    at: datetime,
    *,
    workflow_id: str = "",
    search_ready: bool = False,
    strategy: StrategyAssignment | None = None,
) -> Outcome:
    """A loan's collection starts at `at` with its policy and conduct rules pinned for life.
    It joins its plan where it is due (`catch_up_at`): nothing behind is replayed except the
    latest step already due, which runs at the next contact moment.

    `strategy`: the loan's screening and assignment at hand-over, kept on the state and, only
    when given, written to the timeline and the audit record (`<loan>/strategy`), so anyone
    can see why the loan got its policy. Loans started before screening have none, and
    their start does exactly what it did."""
    state = CollectionState(
        loan=loan,
        policy=policy,
        started_at=at,
        clock=at,
        balance=loan.balance(),
        penalties_posted=loan.penalties,
        rules=rules,
        workflow_id=workflow_id,
        search_ready=search_ready,
        strategy=strategy,
    )
    plan = build_plan(policy, loan)
    state._plan = (policy, loan, plan)
    state.cursor, behind = catch_up_at(plan, loan, policy, at)
    state.catch_up_key = behind.key if behind else None
    step = Step(state, at)
    step.note("collection_started", outcome=f"DPD {dpd(state, at)}", detail=f"policy {policy.name} {policy.version}")
    if strategy is not None:
        _note_strategy(step, strategy)
    return Outcome(state, step.commands)


def _note_strategy(step: Step, strategy: StrategyAssignment) -> None:
    """The screening and the arm on the timeline and in the audit record (actor: screening)."""
    s, a = strategy.screening, strategy.assignment
    how = f"override {s.override}" if s.override else f"score {s.score}"
    where = f"experiment {a.experiment}, arm {a.arm}" if a.experiment else f"arm {a.arm}"
    step.note(
        "strategy_assigned",
        outcome=f"{s.segment} ({how})",
        key=f"{step.loan_id}/strategy",
        detail=f"{where}, policy {a.policy}; {s.summary()}",
    )
    step.record("strategy", "strategy_assigned", "screening", **strategy.audit_detail())


def request_time(state: CollectionState, at: datetime) -> datetime:
    """A request's business time: its own, never earlier than the loan's."""
    return max(at, clock_of(state))


def check(state: CollectionState, event: Event, at: datetime) -> None:
    """Raise `Rejected` if the loan would refuse `event` at `at`; changes nothing."""
    step = Step(state, request_time(state, at))
    _check(step, event)


def decide(state: CollectionState, event: Event, at: datetime) -> Outcome:
    """Apply `event`, taken at `at`, to `state`; the commands it asks for and the reply."""
    if isinstance(event, LOOP_EVENTS):
        state.clock = max(at, clock_of(state))
        step = Step(state, _loop_time(state.clock, event))
    else:
        step = Step(state, request_time(state, at))
        _check(step, event)
    reply = _apply(step, event)
    sync_pause(step)
    return Outcome(state, step.commands, reply)


def _loop_time(clock: datetime, event: Event) -> datetime:
    """The time a loop event is taken at: the loan's clock, or, for an effect's result, the
    time of the decision that asked for the effect if later (a request's effects are recorded
    at the request's time). That later time is not the clock: a request's time is the caller's,
    and the loop's next moves depend only on the history's times."""
    if isinstance(event, EffectDone):
        decided = getattr(event.effect, "req", None)
        at = getattr(decided, "at", None)
        if isinstance(at, datetime) and at > clock:
            return at
    return clock


# ------------------------------------------------------------------ dispatch


def _check(step: Step, event: Event) -> None:
    match event:
        case PaymentReceived(payment=p, answer=True):
            check_payment(step, p)
        case TaskReported(report=r):
            requests.check_task_report(step, r)
        case AgencyReported(report=r):
            requests.check_agency_placement(step, r.placement_id)
        case AgencyContactAsked(request=r):
            requests.check_agency_placement(step, r.placement_id)
        case CourtReported(report=r):
            requests.check_court(step, r)
        case OptedOut(request=r):
            requests.check_opt_out(step, r)
        case PromiseMade(request=r):
            requests.check_promise_request(step, r)
        case PlanProposed(request=r):
            requests.check_plan(step, r)
        case SettlementOffered(request=r):
            requests.check_settlement_offer(step, r)
        case HardshipReported(request=r):
            requests.check_hardship(step, r)
        case HardshipReviewed(request=r):
            requests.check_review(step, r)
        case DisputeRaised(request=r):
            requests.check_dispute(step, r)
        case DisputeResolved(request=r):
            requests.check_resolution(step, r)
        case StopRequested(request=r):
            requests.check_stop(step, r)
        case _:
            return


def _apply(step: Step, event: Event) -> PaymentReceipt | Decision | str | None:
    match event:
        case TimeReached():
            run_due(step)
            return None
        case GuardAnswered(key=key, decision=decision):
            contacts.answer(step, key, decision)
            return None
        case EffectDone():
            _effect_done(step, event)
            return None
        case PaymentReceived(payment=p, answer=answer):
            return _payment(step, p, answer)
        case TaskReported(report=r):
            requests.report_task(step, r)
            return None
        case AgencyReported(report=r):
            requests.report_agency(step, r)
            return None
        case CourtReported(report=r):
            requests.report_court(step, r)
            return None
        case OptedOut(request=r):
            return requests.opt_out(step, r)
        case AgencyContactAsked(request=r, key=key):
            requests.ask_agency_contact(step, r, key)
            return key
        case PromiseMade(request=r):
            return requests.promise(step, r)
        case PlanProposed(request=r):
            return requests.propose_plan(step, r)
        case SettlementOffered(request=r):
            return requests.offer_settlement(step, r)
        case HardshipReported(request=r):
            return requests.report_hardship(step, r)
        case HardshipReviewed(request=r):
            return requests.review_hardship(step, r)
        case DisputeRaised(request=r):
            return requests.raise_dispute(step, r)
        case DisputeResolved(request=r):
            return requests.resolve_dispute(step, r)
        case StopRequested(request=r):
            return requests.stop_collection(step, r)
    raise AssertionError(f"unknown event {type(event).__name__}")  # pragma: no cover - Event is closed


def _payment(step: Step, payment: Payment, answer: bool) -> PaymentReceipt | None:
    if answer:
        return take_payment(step, payment)
    try:  # the bank feed's signal: nobody waits for an answer, so a refusal is recorded
        check_payment(step, payment)
    except Rejected as exc:
        reject_signalled(step, payment, str(exc))
        return None
    return take_payment(step, payment)


def effect_matters(effect: Effect) -> bool:
    """Whether an effect's result changes anything (`_effect_done`): a message, a task, a
    placement, a court case, the close's audit entry. `EffectDone` of any other effect (a fee, a
    payment's ledger rows, an audit entry...) leaves the state as it was and asks for nothing:
    the workflow feeds them all, the simulator skips those (a third of its decisions;
    tests/unit/test_lab_engine.py checks that skipping changes nothing)."""
    match effect:
        case SendMessage() | CreateTask() | Place() | FileCase():
            return True
        case Audit(req=req):
            return req.action == closing.CLOSED
    return False


def _effect_done(step: Step, event: EffectDone) -> None:
    """Nothing to decide for most effects; a message, a task, a placement and a case are
    recorded as made (or failed, and then not in force)."""
    r = event.result
    match event.effect:
        case SendMessage() as cmd:
            contacts.message_done(step, cmd, r.ok, r.error, r.guard)
        case CreateTask() as cmd:
            contacts.task_done(step, cmd, r.ok, r.error)
        case Place() as cmd:
            contacts.placed(step, cmd, r.ok, r.error)
        case FileCase() as cmd:
            contacts.case_filed(step, cmd, r.ok, r.error)
        case Audit(req=req) if req.action == closing.CLOSED:
            closing.closed_on_record(step)
        case _:
            pass


# ------------------------------------------------------------------ pause


def sync_pause(step: Step) -> None:
    """Start or end the pause (and the hold clock) to match the state, on the timeline with the
    reason and who caused it. Days paused are not days past due."""
    s, now = step.s, step.now
    if s.closed_as is not None:  # a closed loan neither pauses nor resumes (its DPD is frozen at the close)
        return
    holding = bool(s.holds) or s.stop is not None
    if holding and s.hold_started_at is None:
        s.hold_started_at = now
    elif not holding and s.hold_started_at is not None:
        s.held_days += max(0, days_between(s.hold_started_at, now, step.tz))
        s.hold_started_at = None
    reason = pause_reason(s)
    if reason == s.paused_reason:
        return
    if s.paused_reason is None:
        s.pause_started_at = now
        s.retries.clear()
        s.deferred = [d for d in s.deferred if d.purpose != "escalation"]
        step.note("paused", outcome=reason or "", detail=f"by {step.actor}")
    elif reason is None:
        assert s.pause_started_at is not None
        days = max(0, days_between(s.pause_started_at, now, step.tz))
        s.paused_days += days
        s.pause_started_at = None
        step.note("resumed", outcome=f"{days} day(s) paused", detail=f"by {step.actor}")
    else:
        step.note("paused", outcome=reason, detail=f"by {step.actor}")
    s.paused_reason = reason
    step.record(f"pause/{len(s.timeline)}", "paused" if reason else "resumed", step.actor, reason=reason or "")
