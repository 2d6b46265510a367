"""Inputs and results of activities. Each side effect carries an idempotency `key` chosen by
the workflow from business facts (loan, step, period, attempt), never from the activity id."""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel

from models.allocation import Allocation
from models.clock import PolicyClock
from models.conduct import ContactRequest, RuleSet, Situation
from models.experiment import StrategyAssignment
from models.loan import Balance, OverdueLoan, Stage
from models.money import Amount
from models.payment import Payment
from models.policy import Action, MessageChannel, Policy


class _Keyed(BaseModel):
    """`at` is the workflow's time of the decision, the business time stored on the row."""

    key: str
    loan_id: str
    at: datetime


class _Document(_Keyed):
    """A request that produces a document from a template."""

    template: str
    language: str
    context: dict[str, str]


class MessageRequest(_Keyed):
    """Render `template` for `channel` in `language` and deliver it to `recipient`."""

    channel: MessageChannel
    template: str
    language: str
    recipient: str
    context: dict[str, str]


class LoanRegistration(BaseModel):
    """Record the loan and its borrower in the database when collection starts."""

    loan: OverdueLoan
    policy: str
    policy_version: str
    workflow_id: str
    stage: Stage
    at: datetime
    strategy: StrategyAssignment | None = None
    """The screening and assignment (segment, score, experiment, arm) for the loan row."""


class FeeRequest(_Keyed):
    """Post a late fee for one period."""

    period: int
    amount: Amount
    currency: str


class PaymentRecord(_Keyed):
    """Write a payment and its allocation to the ledger."""

    payment: Payment
    allocation: Allocation
    balance_after: Balance


class ChargeOffRequest(_Keyed):
    """Charge off the outstanding balance at the write-off day."""

    balance: Balance
    currency: str


class TaskKind(StrEnum):
    """What a task asks of a person: a ladder step's call or field visit (reported back as an
    outcome, retried when the borrower was not reached), or a review by a specialist."""

    call = "call"
    field_visit = "field_visit"
    hardship_review = "hardship_review"
    legal_review = "legal_review"

    @classmethod
    def of(cls, action: Action) -> TaskKind:
        """The task a ladder step's action creates; an action that creates none raises."""
        match action:
            case Action.call:
                return cls.call
            case Action.field_visit:
                return cls.field_visit
        raise ValueError(f"a ladder step of action {action!r} creates no task")

    @property
    def channel(self) -> Literal["phone", "visit"]:
        """The contact channel of a call or visit task (the timeline's and the guard's)."""
        match self:
            case TaskKind.call:
                return "phone"
            case TaskKind.field_visit:
                return "visit"
        raise ValueError(f"a {self} task is not a contact")


class TaskRequest(_Document):
    """Create a task for a person (call or field visit); the key is also the task id."""

    workflow_id: str
    kind: TaskKind
    queue: str
    attempt: int
    due_by: datetime


class TaskClosure(BaseModel):
    """Close a task with its outcome (or `timeout` / `cancelled`)."""

    task_id: str
    loan_id: str
    at: datetime
    outcome: str
    note: str = ""
    recording_ref: str = ""
    closed_by: str = "workflow"


class PlacementRequest(_Document):
    """Hand the account to an agency until `recall_at`; the key is also the placement id."""

    agency: str
    recall_at: datetime
    balance: Balance
    currency: str


class RecallRequest(BaseModel):
    """Take the account back from the agency."""

    placement_id: str
    loan_id: str
    at: datetime
    reason: str


class CaseRequest(_Document):
    """File a court case for the outstanding balance; the key is also the case id."""

    balance: Balance
    currency: str


class AuditEvent(_Keyed):
    """An entry of the append-only record; also keeps the loan row's stage current."""

    action: str
    actor: str
    stage: Stage
    detail: dict[str, str] = {}


class Recorded(BaseModel):
    """Result of an idempotent write: the row's id and whether it already existed."""

    ref: str
    duplicate: bool = False


WaiverKind = Literal["waiver", "cancellation"]


class WaiverRequest(_Keyed):
    """Write amounts off the balance: a `waiver` (settlement, hardship, plan terms) or a
    `cancellation` (dispute upheld)."""

    amounts: Balance
    currency: str
    kind: WaiverKind
    reason: str


class ConductRules(BaseModel):
    """A loan's conduct rules as loaded when it first contacts someone (pinned for its life)."""

    ruleset: RuleSet
    holidays: list[date] = []


class GuardRequest(BaseModel):
    """Ask the guard for a contact slot; `contact.key` makes an allowed slot idempotent.

    `clock` set: the guard decides at the later of `contact.at` and the policy clock's reading
    of the real time, so a contact asked by a loan whose business time lags (a workflow catching
    up after its worker was down) is judged at the moment it would really be made: contact hours
    and caps hold in real time. None: at `contact.at` exactly (the first workflow version and
    direct callers)."""

    contact: ContactRequest
    rules: ConductRules
    situation: Situation
    clock: PolicyClock | None = None


class PrepareRequest(BaseModel):
    """Everything a new loan needs before its first decision: its policy (by name), checked and
    pinned, the conduct rules, the loan row and the start's audit entry. `started_at` is the
    workflow's start (real time, from history)."""

    loan: OverdueLoan
    policy: str
    workflow_id: str
    started_at: datetime


class Prepared(BaseModel):
    """The pinned policy and rules, whether the server has the portfolio's search attributes,
    the start in business time (the policy's clock) and the loan's screening and assignment."""

    policy: Policy
    rules: ConductRules
    search_ready: bool
    started_at: datetime
    strategy: StrategyAssignment | None = None
    """How the loan was screened and why it got its policy (None: not screened, as loans
    started before screening; `activities.start`)."""
