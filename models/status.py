"""The workflow's state (carried across continue-as-new) and the status it answers with."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field, PrivateAttr

from models.arrangements import (
    ArrangementInfo,
    Decision,
    Hold,
    NegotiationCounts,
    Plan,
    Promise,
    Settlement,
    StopInfo,
)
from models.conduct import GuardDecision
from models.events import TimelineEntry
from models.experiment import StrategyAssignment
from models.loan import Balance, OverdueLoan, Stage
from models.money import ZERO, Amount
from models.payment import PaymentReceipt
from models.policy import Policy
from models.requests import ConductRules, TaskKind


class OpenTask(BaseModel):
    """A call or visit waiting for a person's report, with the deadline for it."""

    task_id: str
    kind: TaskKind
    step_key: str
    attempt: int
    queue: str
    deadline: datetime


class PlacementInfo(BaseModel):
    """The account is with an outside agency until `recall_at`."""

    placement_id: str
    agency: str
    placed_at: datetime
    recall_at: datetime


class CaseInfo(BaseModel):
    """A court case filed for the loan, and its latest event."""

    case_id: str
    filed_at: datetime
    last_event: str = "filed"


class CollectionState(BaseModel):
    """Everything the workflow knows about its loan; pure data so it survives continue-as-new."""

    loan: OverdueLoan
    policy: Policy
    started_at: datetime
    balance: Balance
    paid_total: Amount = ZERO
    penalties_posted: Amount = ZERO
    cursor: int = 0
    catch_up_key: str | None = None
    payment_ids: list[str] = []
    open_tasks: list[OpenTask] = []
    retries: list[OpenTask] = Field(default=[], description="calls to try again, deadline = when")
    placement: PlacementInfo | None = None
    case: CaseInfo | None = None
    charged_off_at: datetime | None = None
    closed_as: Stage | None = None
    closed_at: datetime | None = None
    paused_reason: str | None = None
    paused_days: int = 0
    pause_started_at: datetime | None = None
    held_days: int = 0
    hold_started_at: datetime | None = None
    promise: Promise | None = None
    plan: Plan | None = None
    settlement: Settlement | None = None
    holds: list[Hold] = []
    stop: StopInfo | None = None
    counts: NegotiationCounts = NegotiationCounts()
    arrangement_seq: int = 0
    rules: ConductRules | None = None  # loaded at the first contact, then pinned
    deferred: list[DeferredContact] = []
    opted_out: list[str] = []
    search_ready: bool | None = None  # None: not checked yet; False: the server has none
    search_values: dict[str, str | int] = {}
    timeline: list[TimelineEntry] = []
    # Since the decider (workflow type LoanCollection); the first workflow version leaves them unset.
    clock: datetime | None = None
    """Business time of the latest event the decider took (a timer's target, an activity's
    finish, a request): never earlier than before; `models.lifecycle`."""
    workflow_id: str = ""
    asking: list[DeferredContact] = []
    """Contacts whose guard answer is awaited (`at`: when they were asked)."""
    agency_answers: dict[str, GuardDecision] = {}
    """The guard's answers to the latest agency contact requests, by request key (an agency
    asks by update and reads its answer by query: `AGENCY_ANSWERS_KEPT` are kept)."""
    strategy: StrategyAssignment | None = None
    """The screening at hand-over and the arm it gave (None: a loan started before screening)."""

    _plan: tuple[Policy, OverdueLoan, list[Any]] | None = PrivateAttr(default=None)
    """The loan's plan (`models.lifecycle.step.plan_of`), kept while the policy and loan objects
    are the same: derived, never serialised."""

    def hold(self, kind: Literal["hardship", "dispute"]) -> Hold | None:
        return next((h for h in self.holds if h.kind == kind), None)

    def open_promise(self) -> Promise | None:
        return self.promise if self.promise is not None and self.promise.status == "open" else None

    def active_plan(self) -> Plan | None:
        return self.plan if self.plan is not None and self.plan.status == "active" else None

    def open_settlement(self) -> Settlement | None:
        return self.settlement if self.settlement is not None and self.settlement.status == "open" else None


class ContactKind(StrEnum):
    """What a contact waiting for the guard is (stored as its value)."""

    message = "message"  # a message to send from a template
    task = "task"  # a call or visit task for a person
    agency = "agency"  # an agency's request to contact the borrower (the answer is the agency's)


class DeferredContact(BaseModel):
    """A contact the guard deferred: asked again at `at` (never dropped silently)."""

    key: str
    kind: ContactKind
    purpose: str
    channel: str
    at: datetime
    what: str = ""  # message: the idempotency-key stem
    template: str = ""
    deadline_days: int | None = None
    extra: dict[str, str] = {}
    step_key: str = ""  # task: the ladder step
    attempt: int = 1


class Reply(BaseModel):
    """The answer to one request (`models.protocol`). `refused`: nothing changed, `refusal`
    names the kind (`PaymentRejected`, `ArrangementRejected`, `RequestRejected`,
    `CollectionStarting`) and `reason` says why. Otherwise the field for the request's kind is
    set. `pending`: the guard is asked (an agency's contact request); ask again for the answer."""

    request_id: str
    refused: bool = False
    refusal: str = ""
    reason: str = ""
    receipt: PaymentReceipt | None = None
    decision: Decision | None = None
    guard: GuardDecision | None = None
    status: CollectionStatus | None = None
    as_of: datetime | None = None
    pending: bool = False


class CarriedRequest(BaseModel):
    """A request a run had not taken yet when it continued as new (`envelope`: a
    `models.protocol.Envelope` as data, since that module builds on this one)."""

    envelope: dict[str, Any]


class CollectionInput(BaseModel):
    """Start input of the collection workflow; `state`, the latest answers to requests
    (`replies`) and the requests not taken yet (`inbox`) are set only by continue-as-new."""

    loan: OverdueLoan
    policy: str = "default"
    state: CollectionState | None = None
    replies: dict[str, Reply] = {}
    inbox: list[CarriedRequest] = []


class CollectionStatus(BaseModel):
    """What the lending platform sees when it asks about a loan."""

    loan_id: str
    workflow_id: str
    policy: str
    policy_version: str
    currency: str
    stage: Stage
    days_past_due: int
    as_of: datetime
    outstanding: Balance
    paid_total: Amount
    next_action: str | None
    next_action_at: datetime | None
    paused_reason: str | None
    paused_days: int
    arrangement: ArrangementInfo | None
    counts: NegotiationCounts
    holds: list[Hold]
    stop: StopInfo | None
    deferred: list[DeferredContact]
    opted_out: list[str]
    charged_off: bool
    closed: bool
    open_tasks: list[OpenTask]
    placement: PlacementInfo | None
    case: CaseInfo | None
    timeline: list[TimelineEntry]
    strategy: StrategyAssignment | None = None
    """Why the loan got its policy: segment, score and points, experiment and arm (None: not
    screened, a loan started before screening)."""
