"""The API's own request and answer bodies. Bodies that the domain already defines (the loan,
the negotiation requests, the status, the receipt, the guard's decision) are the domain's
models themselves, so the API and the Python client can never drift apart."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from models import OverdueLoan
from models.events import TaskOutcome
from models.experiment import AUTO
from models.money import Currency

DECIMAL_PATTERN = r"^[0-9]{1,15}(\.[0-9]{1,6})?$"
"""A money amount as the API takes it: digits, an optional point and up to six decimals (the
currency's own limit is checked after); no sign, no exponent, never a JSON number."""


class HandOver(OverdueLoan):
    """A loan handed over for collection: the `OverdueLoan` fields plus the policy to collect it
    by; `auto` (the default) screens the loan and takes the policy its segment and the running
    experiment give it (docs/strategy.md); a named policy is kept (the loan is still screened)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy: str = Field(default=AUTO, pattern=r"^[A-Za-z0-9_-]{1,64}$")


class HandOverResult(BaseModel):
    loan_id: str
    workflow_id: str
    outcome: Literal["started", "running", "closed"]


class PaymentBody(BaseModel):
    """A payment as the platform posts it. `payment_id` defaults to the Idempotency-Key. The
    payment's recorded source (timeline channel, audit actor) is the caller, with `source` beside
    it when given: `platform:lending-platform (bank transfer)`."""

    model_config = ConfigDict(extra="forbid")

    amount: str = Field(pattern=DECIMAL_PATTERN, examples=["100.00"], description="a decimal string, e.g. 100.00")
    currency: Currency
    paid_at: AwareDatetime = Field(description="ISO 8601 with an offset, e.g. 2026-12-07T10:00:00+08:00")
    payment_id: str | None = Field(default=None, min_length=1, max_length=128)
    source: str | None = Field(
        default=None, min_length=1, max_length=64, description="where the money came from (bank transfer, app...)"
    )
    reference: str = Field(default="", max_length=256)


class LoanRow(BaseModel):
    """One loan in a listing (from the server's visibility store: no workflow is asked)."""

    loan_id: str
    workflow_id: str
    status: str
    stage: str
    dpd_band: str
    days_past_due: int | None = Field(description="calendar days since the due date on the borrower's calendar")
    policy: str
    agency: str
    currency: str
    outstanding: str
    started: str
    closed: str


class LoanPage(BaseModel):
    loans: list[LoanRow]
    next_page_token: str | None = Field(description="pass as page_token for the next page; null: no more")


class StageTotal(BaseModel):
    stage: str
    currency: str
    loans: int
    outstanding: str


class PortfolioStats(BaseModel):
    totals: list[StageTotal]


class TaskView(BaseModel):
    """A call, visit or review task waiting for (or done by) a person."""

    task_id: str
    loan_id: str
    kind: str
    queue: str
    attempt: int
    status: str
    assignee: str
    due_by: datetime
    created_at: datetime
    claimed_at: datetime | None
    closed_at: datetime | None
    outcome: str
    brief: str


class TaskPage(BaseModel):
    tasks: list[TaskView]
    next_page_token: str | None


class ClaimBody(BaseModel):
    """A supervisor may give the task to someone (`assignee`); a collector claims it for themself."""

    model_config = ConfigDict(extra="forbid")

    assignee: str | None = Field(default=None, min_length=1, max_length=128)


class OutcomeBody(BaseModel):
    """What happened on a call or visit."""

    model_config = ConfigDict(extra="forbid")

    outcome: TaskOutcome
    note: str = Field(default="", max_length=4000)
    recording_ref: str = Field(default="", max_length=512)


class AuditEntry(BaseModel):
    seq: int
    key: str
    loan_id: str
    at: str
    actor: str
    action: str
    stage: str
    rule_id: str
    evidence_ref: str
    detail: str
    prev_hash: str
    hash: str
    recorded_at: str


class ChainCheck(BaseModel):
    """The hash chain's verification (`models.audit.verify_chain`): intact, or what is wrong."""

    algorithm: str
    genesis: str
    intact: bool
    entries: int
    head: str
    problems: list[str]


class AuditExport(BaseModel):
    """A loan's audit record in chain order, the chain's verification and how long it is kept
    (the CLI's `starter.py audit` writes the same document)."""

    loan_id: str
    exported_at: str
    retain_until: str | None
    chain: ChainCheck
    entries: list[AuditEntry]


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = {}
