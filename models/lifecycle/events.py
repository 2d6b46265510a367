"""Everything that can happen to a loan in collection, as the decider takes it.

Time reached, answers of the guard and results of effects come from the workflow's main loop;
payments, reports and requests come from its handlers. Each event is data, so the strategy
simulator can feed the same events on a simulated clock.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from models.arrangements import (
    DisputeRequest,
    DisputeResolution,
    HardshipDecision,
    HardshipReport,
    PlanProposal,
    PromiseRequest,
    SettlementOffer,
    StopRequest,
)
from models.conduct import GuardDecision
from models.effects import Effect, EffectResult
from models.events import AgencyContactRequest, AgencyReport, CourtReport, OptOutRequest, TaskReport
from models.payment import Payment


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class TimeReached(_Event):
    """The loop's timer fired (or more was due): the earliest item due by `at` runs."""

    kind: Literal["time"] = "time"
    at: datetime


class GuardAnswered(_Event):
    """The conduct guard's answer to an `AskGuard` (the contact's key)."""

    kind: Literal["guard"] = "guard"
    key: str
    decision: GuardDecision


class EffectDone(_Event):
    """What an effect did (in the order the batch ran them)."""

    kind: Literal["effect"] = "effect"
    effect: Effect
    result: EffectResult


class PaymentReceived(_Event):
    """A payment: by update (`answer`: the payer wants a receipt; a rejection changes nothing
    and is the caller's answer) or by the bank feed's signal (a rejection is recorded)."""

    kind: Literal["payment"] = "payment"
    payment: Payment
    answer: bool = True


class TaskReported(_Event):
    kind: Literal["task_report"] = "task_report"
    report: TaskReport


class AgencyReported(_Event):
    kind: Literal["agency_report"] = "agency_report"
    report: AgencyReport


class CourtReported(_Event):
    kind: Literal["court_report"] = "court_report"
    report: CourtReport


class OptedOut(_Event):
    kind: Literal["opt_out"] = "opt_out"
    request: OptOutRequest


class AgencyContactAsked(_Event):
    """An agency asks for a contact slot: the loan asks the guard (the person's budget across
    all loans and agencies); the answer is kept under `key` for the agency to read."""

    kind: Literal["agency_contact"] = "agency_contact"
    request: AgencyContactRequest
    key: str


class PromiseMade(_Event):
    kind: Literal["promise"] = "promise"
    request: PromiseRequest


class PlanProposed(_Event):
    kind: Literal["plan"] = "plan"
    request: PlanProposal


class SettlementOffered(_Event):
    kind: Literal["settlement"] = "settlement"
    request: SettlementOffer


class HardshipReported(_Event):
    kind: Literal["hardship"] = "hardship"
    request: HardshipReport


class HardshipReviewed(_Event):
    kind: Literal["hardship_review"] = "hardship_review"
    request: HardshipDecision


class DisputeRaised(_Event):
    kind: Literal["dispute"] = "dispute"
    request: DisputeRequest


class DisputeResolved(_Event):
    kind: Literal["dispute_resolution"] = "dispute_resolution"
    request: DisputeResolution


class StopRequested(_Event):
    kind: Literal["stop"] = "stop"
    request: StopRequest


Event = Annotated[
    TimeReached
    | GuardAnswered
    | EffectDone
    | PaymentReceived
    | TaskReported
    | AgencyReported
    | CourtReported
    | OptedOut
    | AgencyContactAsked
    | PromiseMade
    | PlanProposed
    | SettlementOffered
    | HardshipReported
    | HardshipReviewed
    | DisputeRaised
    | DisputeResolved
    | StopRequested,
    Field(discriminator="kind"),
]

REQUESTS: tuple[type[_Event], ...] = (
    PromiseMade,
    PlanProposed,
    SettlementOffered,
    HardshipReported,
    HardshipReviewed,
    DisputeRaised,
    DisputeResolved,
    StopRequested,
    OptedOut,
)
"""Negotiation and situation requests: each answered with a `Decision`."""
