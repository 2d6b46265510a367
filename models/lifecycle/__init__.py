"""The rules of a loan's life, as a pure decider (functional core, imperative shell).

    begin(loan, policy, rules, at)     -> Outcome(state, commands)    a loan's collection starts
    check(state, event, at)            raises Rejected                 would the loan refuse it?
    decide(state, event, at)           -> Outcome(state, commands, reply)
    next_wake(state)                   -> datetime | None              when the loop must feed time in
    status(state, now)                 -> CollectionStatus             what the platform sees

The workflow (`workflows.collection`) feeds events in and runs the commands (`models.effects`)
through activities; the strategy simulator feeds the same events on a simulated clock. Modules:
`events` (what can happen), `step` (one decision in progress), `due` (what is due and when),
`contacts` (the guard, messages, tasks, placement, court), `money` (payments, fees, write-off),
`requests` (reports and negotiation), `closing`, `views` (status, search attributes), `decider`.
"""

from models.lifecycle.decider import (
    LOOP_EVENTS,
    Outcome,
    begin,
    check,
    decide,
    effect_matters,
    request_time,
    sync_pause,
)
from models.lifecycle.due import Due, DueKind, due_items, next_due, next_wake
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
from models.lifecycle.step import Rejected, clock_of, dpd, stage
from models.lifecycle.views import search_changes, search_values, status

__all__ = [
    "LOOP_EVENTS",
    "AgencyContactAsked",
    "AgencyReported",
    "CourtReported",
    "DisputeRaised",
    "DisputeResolved",
    "Due",
    "DueKind",
    "EffectDone",
    "Event",
    "GuardAnswered",
    "HardshipReported",
    "HardshipReviewed",
    "OptedOut",
    "Outcome",
    "PaymentReceived",
    "PlanProposed",
    "PromiseMade",
    "Rejected",
    "SettlementOffered",
    "StopRequested",
    "TaskReported",
    "TimeReached",
    "begin",
    "check",
    "clock_of",
    "decide",
    "dpd",
    "due_items",
    "effect_matters",
    "next_due",
    "next_wake",
    "request_time",
    "search_changes",
    "search_values",
    "stage",
    "status",
    "sync_pause",
]
