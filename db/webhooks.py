"""Webhooks out, the tables and the capture: the durable outbox of events for subscribers.

- `webhook_events`: one row per event, made in the same flush as the audit entry it comes from
  (`capture_events`, called by `db.store.chain_new_entries`), so an event exists exactly when
  its effect was committed. Unique by its business key (the audit entry's key): a retried
  activity finds its audit entry and makes no second event. `seq` counts a loan's events 1, 2,
  3 ... with no gap, unique with the loan id, taken like the audit chain's seq (under SQLite's
  write lock; on PostgreSQL a concurrent taker hits the constraint and its transaction runs
  again, `db.store.is_chain_conflict`).
- `webhook_subscribers`: URL, secret and the event types wanted. The secret is stored as given:
  the dispatcher needs it in clear to sign (a hash would not do); protect the database as you
  protect the secrets. One subscriber per URL.
- `webhook_deliveries`: one row per event and subscriber (unique), its state (pending, delivered,
  dead), attempts, when it is due again, and the lease a dispatcher holds while it sends.
- `webhook_attempts`: the delivery log, one row per HTTP attempt (time, status or error,
  duration), unique per delivery and attempt number.

The fan-out, the lease and the queries are `db.webhook_queue`; the HTTP side `api.webhooks`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Column, ForeignKey, Index, Integer, String, Text, UniqueConstraint, func
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Field, SQLModel, col, select

from db.tables import AuditRow, LoanRow, PlacementRow, utcnow
from db.types import UtcDateTime
from models.webhooks import arrangement_kind, arrangement_ref, event_data, event_id, event_type

EVENT_SEQ_CONSTRAINT = "uq_webhook_events_loan_seq"


class WebhookEvent(SQLModel, table=True):
    """An event for subscribers; `payload` is the JSON of its `data` (no personal data:
    `models.webhooks.event_data`)."""

    __tablename__ = "webhook_events"
    __table_args__ = (UniqueConstraint("loan_id", "seq", name=EVENT_SEQ_CONSTRAINT),)

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(unique=True)
    key: str = Field(unique=True)
    loan_id: str
    seq: int
    event_type: str
    occurred_at: datetime = Field(sa_type=UtcDateTime)
    payload: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    fanned_out: bool = Field(default=False, index=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class WebhookSubscriber(SQLModel, table=True):
    """Where events go. `events` is the JSON list of wanted types (["*"]: all). Removing a
    subscriber deactivates it (its delivery log stays); adding its URL again reactivates it."""

    __tablename__ = "webhook_subscribers"

    id: str = Field(primary_key=True)
    url: str = Field(unique=True)
    secret: str
    events: str = Field(default='["*"]', sa_column=Column(Text, nullable=False))
    active: bool = True
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class WebhookDelivery(SQLModel, table=True):
    """One event for one subscriber. `loan_id`, `seq` and `event_type` are copied from the
    event so the due query (and its per-loan ordering) reads one table."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("event_id", "subscriber_id", name="uq_webhook_deliveries_event_subscriber"),
        Index("ix_webhook_deliveries_order", "subscriber_id", "loan_id", "seq"),
        Index("ix_webhook_deliveries_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(sa_column=Column(String, ForeignKey("webhook_events.event_id"), nullable=False))
    subscriber_id: str = Field(sa_column=Column(String, ForeignKey("webhook_subscribers.id"), nullable=False))
    loan_id: str
    seq: int
    event_type: str
    status: str = "pending"  # pending | delivered | dead
    attempts: int = 0  # attempts started (a dispatcher that died mid-attempt leaves a number unlogged)
    next_attempt_at: datetime = Field(sa_type=UtcDateTime)
    leased_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    lease_token: str = ""
    last_status: int | None = None
    last_error: str = ""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    delivered_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class WebhookAttempt(SQLModel, table=True):
    """The delivery log: one HTTP attempt. `status_code` is the answer's HTTP status (None when
    there was none: `error` says why: timeout, connection refused...)."""

    __tablename__ = "webhook_attempts"
    __table_args__ = (UniqueConstraint("delivery_id", "attempt", name="uq_webhook_attempts_delivery_attempt"),)

    id: int | None = Field(default=None, primary_key=True)
    delivery_id: int = Field(sa_column=Column(Integer, ForeignKey("webhook_deliveries.id"), nullable=False))
    attempt: int
    at: datetime = Field(sa_type=UtcDateTime)
    status_code: int | None = None
    error: str = ""
    duration_ms: int = 0


# ------------------------------------------------------------------ capture


def capture_events(session: OrmSession, entries: Iterable[AuditRow]) -> None:
    """Add the event of each new audit entry that makes one (`models.webhooks.event_type`),
    in the order given (the chain's), to the flush under way. Runs inside `before_flush` after
    the entries are chained, so the database's write lock is already held on SQLite."""
    heads: dict[str, int] = {}
    accepted: dict[tuple[str, str], str] = {}  # (loan, arrangement kind) -> id, this flush's
    for row in entries:
        type_ = event_type(row.action)
        if type_ is None:
            continue
        detail = json.loads(row.detail or "{}")
        facts = _facts(session, row, type_, accepted)
        data = event_data(row.action, row.key, row.loan_id, row.stage, detail, facts)
        session.add(
            WebhookEvent(
                event_id=event_id(row.key),
                key=row.key,
                loan_id=row.loan_id,
                seq=next_seq(session, row.loan_id, heads),
                event_type=type_,
                occurred_at=row.at,
                payload=json.dumps(data, ensure_ascii=False, sort_keys=True),
            )
        )


def next_seq(session: OrmSession, loan_id: str, heads: dict[str, int]) -> int:
    """The loan's next event seq; `heads` remembers those taken earlier in the same flush."""
    if loan_id not in heads:
        last = session.execute(select(func.max(WebhookEvent.seq)).where(WebhookEvent.loan_id == loan_id)).scalar()
        heads[loan_id] = int(last or 0)
    heads[loan_id] += 1
    return heads[loan_id]


def _facts(session: OrmSession, row: AuditRow, type_: str, accepted: dict[tuple[str, str], str]) -> dict[str, str]:
    """What an event needs that its audit entry does not say (named fields only)."""
    facts: dict[str, str] = {"actor": row.actor}
    if type_ == "loan.started":
        loan = _pending(session, LoanRow, lambda r: r.loan_id == row.loan_id) or session.get(LoanRow, row.loan_id)
        if loan is not None:
            parts = {"principal": loan.principal, "interest": loan.interest, "fees": loan.fees}
            parts["penalties"] = loan.penalties
            facts |= {name: str(value) for name, value in parts.items()}
            facts |= {"total": str(sum(parts.values())), "currency": loan.currency}
            facts["due_date"] = loan.due_date.isoformat()
    elif type_ == "loan.placed":
        placement_id = row.key.removesuffix("#placed")
        placed = _pending(session, PlacementRow, lambda r: r.placement_id == placement_id)
        if placed is not None:
            facts |= {"amount": str(placed.amount), "currency": placed.currency}
    kind = arrangement_kind(row.action)
    if kind is not None:
        if type_ == "arrangement.accepted":
            accepted[row.loan_id, kind] = arrangement_ref(row.key, row.loan_id)
        found = accepted.get((row.loan_id, kind)) or _last_accepted(session, row.loan_id, kind)
        if found:
            facts["arrangement_id"] = found
    return facts


Row = TypeVar("Row", bound=SQLModel)


def _pending(session: OrmSession, model: type[Row], match: Callable[[Row], bool]) -> Row | None:
    """A row of `model` added to this session and not yet written, that `match` accepts."""
    return next((obj for obj in session.new if isinstance(obj, model) and match(obj)), None)


def _last_accepted(session: OrmSession, loan_id: str, kind: str) -> str | None:
    """The id of the loan's latest accepted arrangement of this kind (an outcome belongs to
    it: a loan has at most one open promise, one active plan and one open settlement)."""
    rows = session.execute(
        select(WebhookEvent.payload)
        .where(WebhookEvent.loan_id == loan_id, WebhookEvent.event_type == "arrangement.accepted")
        .order_by(col(WebhookEvent.seq).desc())
    ).scalars()
    for payload in rows:
        data = json.loads(payload)
        if data.get("kind") == kind:
            return str(data.get("arrangement_id") or "") or None
    return None
