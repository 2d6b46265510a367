"""Database tables. Every row a side effect writes has a unique business key, so a retried
or replayed activity finds its earlier row instead of writing a second one."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from db.types import Money, UtcDateTime


def utcnow() -> datetime:
    return datetime.now(UTC)


def money_field() -> Decimal:
    """A required money column (`Money`: exact on every database)."""
    return Field(sa_column=Column(Money(), nullable=False))


class BorrowerRow(SQLModel, table=True):
    __tablename__ = "borrowers"

    borrower_id: str = Field(primary_key=True)
    name: str
    phone: str = ""
    email: str = ""
    address: str = ""
    timezone: str
    language: str


class LoanRow(SQLModel, table=True):
    """The loan as handed over, plus its current stage (kept current by the workflow)."""

    __tablename__ = "loans"

    loan_id: str = Field(primary_key=True)
    borrower_id: str = Field(index=True, foreign_key="borrowers.borrower_id")
    currency: str
    principal: Decimal = money_field()
    interest: Decimal = money_field()
    fees: Decimal = money_field()
    penalties: Decimal = money_field()
    due_date: date = Field(index=True)
    product: str = "consumer"
    policy: str = "default"
    workflow_id: str | None = None
    stage: str = "new"
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    # The screening at hand-over and the arm it gave (`models.experiment`); NULL: not screened.
    segment: str | None = None
    score: int | None = None
    experiment: str | None = None
    """NULL or "": no experiment assigned the policy (the strategy map's champion, or explicit)."""
    arm: str | None = None


class LedgerEntry(SQLModel, table=True):
    """Money movements: fees, payments and their allocation, charge-off, overpayment."""

    __tablename__ = "ledger"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    loan_id: str = Field(index=True)
    kind: str  # fee | payment | allocation | charge_off | overpayment
    component: str = ""  # penalties | fees | interest | principal, for allocations
    amount: Decimal = money_field()
    currency: str
    at: datetime = Field(sa_type=UtcDateTime)
    reference: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class OutboxMessage(SQLModel, table=True):
    """Every message the loan sent, rendered, with its delivery state."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    loan_id: str = Field(index=True)
    channel: str
    template: str
    language: str
    recipient: str
    subject: str = ""
    body: str = Field(sa_column=Column(Text, nullable=False))
    status: str = "queued"  # queued | sent | failed
    provider_ref: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class TaskRow(SQLModel, table=True):
    """Work for people: phone calls and field visits, closed with an outcome."""

    __tablename__ = "tasks"

    id: int | None = Field(default=None, primary_key=True)
    task_id: str = Field(unique=True)
    loan_id: str = Field(index=True)
    workflow_id: str
    kind: str
    queue: str = Field(index=True)
    template: str
    attempt: int
    brief: str = Field(sa_column=Column(Text, nullable=False))
    status: str = "open"  # open | closed
    outcome: str = ""
    note: str = ""
    recording_ref: str = ""
    due_by: datetime = Field(sa_type=UtcDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    closed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    closed_by: str = ""
    assignee: str = Field(default="", index=True)
    """Who claimed the task (`POST /v1/tasks/{id}/claim`); empty: nobody yet."""
    claimed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class PlacementRow(SQLModel, table=True):
    """An agency placement and its recall."""

    __tablename__ = "placements"

    id: int | None = Field(default=None, primary_key=True)
    placement_id: str = Field(unique=True)
    loan_id: str = Field(index=True)
    agency: str
    amount: Decimal = money_field()
    currency: str
    placed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    recall_at: datetime = Field(sa_type=UtcDateTime)
    recalled_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    recall_reason: str = ""


class CaseRow(SQLModel, table=True):
    """A court case filed for a loan."""

    __tablename__ = "cases"

    id: int | None = Field(default=None, primary_key=True)
    case_id: str = Field(unique=True)
    loan_id: str = Field(index=True)
    amount: Decimal = money_field()
    currency: str
    document: str = Field(sa_column=Column(Text, nullable=False))
    status: str = "filed"
    filed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class AuditRow(SQLModel, table=True):
    """Append-only record of every decision and action; rows are never updated or deleted.

    Each loan's entries form a hash chain (`models.audit`): `seq` counts them 1, 2, 3 ...,
    `prev_hash` is the previous entry's `hash` and `hash` covers this entry's content and
    `prev_hash`. Rows are chained by `db.store` when they are inserted; (loan_id, seq) is
    unique, so two concurrent appends can never fork a loan's chain."""

    __tablename__ = "audit"
    __table_args__ = (UniqueConstraint("loan_id", "seq", name="uq_audit_loan_seq"),)

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    loan_id: str = Field(index=True)
    at: datetime = Field(sa_type=UtcDateTime)
    actor: str
    action: str
    stage: str = ""
    rule_id: str = ""
    evidence_ref: str = ""
    detail: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    seq: int = 0  # set when appended (0 = not chained yet)
    prev_hash: str = ""
    hash: str = ""
    recorded_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
