"""The live report's records: one `LoanResult` per real loan of an experiment, read from the
database (read only), so managers see champion and challenger in production with the very
figures and report the simulator's runs get (`lab.figures`, `lab.report`).

Where each field comes from:

- the loan: the `loans` row. Hand-over is `created_at`; the balance at hand-over is principal +
  interest + fees + penalties as handed over; `segment`, `score`, `experiment`, `arm` are the
  screening's nullable columns (migration 0006), read by name so this module does not depend
  on the table class having them; `policy` is the policy the loan runs.
- money: the `ledger`: `payment` rows (day after hand-over, amount), `fee` rows (fees posted),
  `charge_off` (written off from that moment).
- the outcome and when: `charge_off` first, else the `collection_closed` audit entry with the
  loan's stage (paid, settled, written off; dispute upheld and the rest count as closed).
- buckets every 30 days: calendar DPD (days since the due date, UTC dates) while open;
  written off, paid or closed from the moment it was.
- contacts: texts, e-mails and letters from the `contacts` table (the guard's ledger of contacts
  made); phone and visit from the call and field-visit tasks worked (closed with an outcome that
  is an attempt: answered, promised, refused, no answer, wrong number); agency from placements.
- call minutes: the cost table's minutes per answered or unanswered attempt (the database keeps
  no call length).
- guard decisions, promises, plans, settlements, hardship, disputes: the audit actions
  (`guard_deferred` / `guard_refused` with their rule, `promise_accepted|kept|broken`,
  `plan_accepted|renegotiated|completed|broken`, `settlement_offered`, `hardship_breathing_space`,
  `dispute_open`).
- contacts after a refusal: contacts (any but transactional) on a channel after the borrower's
  `opt_out` of it, and any contact after a `stop_*` entry.
- costs: the cost table's prices (`lab.costs`) times the counts; agency commission on what was
  paid while the loan was placed; a court fee per case filed. A loan in another currency than
  the cost table is not costed (its costs stay empty).

What the database cannot tell: the days a loan was paused (hardship, dispute) are not taken
off the DPD (the buckets use calendar DPD, as the API's DPD filter does); how long a call
lasted; a message's real delivery price; whether an agency was paid its commission. Dates are
UTC dates. Only entries up to the end of the period count, so a report "to" a past date reads
as it would have read then.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, column, inspect, or_, table
from sqlalchemy import select as core_select
from sqlalchemy.sql import Select
from sqlmodel import Session, col, select

from db.contacts import ContactRow
from db.tables import AuditRow, CaseRow, LedgerEntry, PlacementRow, TaskRow
from db.types import Money, UtcDateTime
from lab.compare import RESAMPLES
from lab.costs import CostTable
from lab.figures import Figures, compute
from lab.results import SNAPSHOT_DAYS, LoanResult, bucket_for_dpd

LOANS = table(
    "loans",
    column("loan_id"),
    column("borrower_id"),
    column("currency"),
    column("principal", Money()),
    column("interest", Money()),
    column("fees", Money()),
    column("penalties", Money()),
    column("due_date"),
    column("policy"),
    column("stage"),
    column("created_at", UtcDateTime()),
    column("segment"),
    column("experiment"),
    column("arm"),
)
"""The loans table as this module reads it, screening columns included (migration 0006)."""

ATTEMPTS = {"answered": True, "promised": True, "refused": True, "no_answer": False, "wrong_number": False}
"""Task outcomes that were a call or visit attempt, and whether it reached the borrower."""

MESSAGES = ("sms", "email", "letter")
AUDIT_COUNTS = {
    "promise_accepted": "promises_made",
    "promise_kept": "promises_kept",
    "promise_broken": "promises_broken",
    "plan_accepted": "plans",
    "plan_renegotiated": "plans",
    "plan_completed": "plans_kept",
    "plan_broken": "plans_broken",
    "settlement_offered": "settlements",
    "hardship_breathing_space": "hardships",
    "dispute_open": "disputes",
}
CLOSED_AS = {"paid": "paid", "settled": "settled", "written_off": "written_off"}


def period_end(end: date | None, now: datetime) -> datetime:
    """The moment the report looks from: the end of `end` (UTC), or now if earlier or None."""
    if end is None:
        return now
    return min(now, datetime.combine(end + timedelta(days=1), time(), UTC))


def experiment_loans(experiment: str, start: date | None, end: date | None) -> Select[Any]:
    """The experiment's loans handed over from `start` to `end` (UTC dates, both included)."""
    query = core_select(LOANS).where(LOANS.c.experiment == experiment)
    if start is not None:
        query = query.where(LOANS.c.created_at >= datetime.combine(start, time(), UTC))
    if end is not None:
        query = query.where(LOANS.c.created_at < datetime.combine(end + timedelta(days=1), time(), UTC))
    return query.order_by(LOANS.c.loan_id)


def has_experiments(engine: Engine) -> bool:
    """Whether the loans table has the screening's columns (migration 0006)."""
    names = {c["name"] for c in inspect(engine).get_columns("loans")}
    return {"segment", "experiment", "arm"} <= names


@dataclass
class _Rows:
    """Everything the database holds for one loan up to the period's end."""

    payments: list[tuple[datetime, Decimal]] = field(default_factory=list)
    fees: Decimal = Decimal(0)
    charged_off: Decimal = Decimal(0)
    charged_at: datetime | None = None
    closed_at: datetime | None = None
    contacts: list[ContactRow] = field(default_factory=list)
    tasks: list[TaskRow] = field(default_factory=list)
    placements: list[PlacementRow] = field(default_factory=list)
    cases: int = 0
    audit: list[AuditRow] = field(default_factory=list)


def live_results(
    engine: Engine,
    experiment: str,
    *,
    start: date | None,
    end: date | None,
    costs: CostTable,
    now: datetime,
) -> list[LoanResult]:
    """The records of the experiment's loans handed over in [start, end], each as it stood at
    the end of the period (`period_end`). Reads only; an unknown experiment gives [], and so
    does a database without the screening's columns yet (before migration 0006)."""
    if not has_experiments(engine):
        return []
    until = period_end(end, now)
    with engine.connect() as connection:
        loans = [dict(r._mapping) for r in connection.execute(experiment_loans(experiment, start, end))]
    loans = [r for r in loans if r["created_at"] <= until]
    with Session(engine) as session:
        rows = _read_rows(session, [r["loan_id"] for r in loans], until)
    return [_result(loan, rows[loan["loan_id"]], until, costs) for loan in loans]


def live_figures(
    engine: Engine,
    experiment: str,
    *,
    start: date | None,
    end: date | None,
    now: datetime,
    costs: CostTable | None = None,
    resamples: int = RESAMPLES,
) -> tuple[datetime, Figures] | None:
    """The report's figures of the experiment's real loans and the moment they stand at, or
    None when it has none in the period (the CLI, the API and the desk's panel read it so)."""
    results = live_results(engine, experiment, start=start, end=end, costs=costs or CostTable(), now=now)
    if not results:
        return None
    return period_end(end, now), compute(results, resamples=resamples)


def _chunks(ids: list[str], size: int = 500) -> Iterable[list[str]]:
    for i in range(0, len(ids), size):
        yield ids[i : i + size]


def _read_rows(session: Session, ids: list[str], until: datetime) -> dict[str, _Rows]:
    rows: dict[str, _Rows] = defaultdict(_Rows)
    for chunk in _chunks(ids):
        for e in session.exec(
            select(LedgerEntry).where(col(LedgerEntry.loan_id).in_(chunk), col(LedgerEntry.at) <= until)
        ).all():
            r = rows[e.loan_id]
            if e.kind == "payment":
                r.payments.append((e.at, e.amount))
            elif e.kind == "fee":
                r.fees += e.amount
            elif e.kind == "charge_off":
                r.charged_off += e.amount
                r.charged_at = e.at if r.charged_at is None else min(r.charged_at, e.at)
        for c in session.exec(
            select(ContactRow).where(col(ContactRow.loan_id).in_(chunk), col(ContactRow.at) <= until)
        ).all():
            rows[c.loan_id].contacts.append(c)
        for t in session.exec(
            select(TaskRow).where(col(TaskRow.loan_id).in_(chunk), col(TaskRow.status) == "closed")
        ).all():
            if t.closed_at is not None and t.closed_at <= until:
                rows[t.loan_id].tasks.append(t)
        for p in session.exec(
            select(PlacementRow).where(col(PlacementRow.loan_id).in_(chunk), col(PlacementRow.placed_at) <= until)
        ).all():
            rows[p.loan_id].placements.append(p)
        for k in session.exec(
            select(CaseRow).where(col(CaseRow.loan_id).in_(chunk), col(CaseRow.filed_at) <= until)
        ).all():
            rows[k.loan_id].cases += 1
        wanted = [*AUDIT_COUNTS, "guard_deferred", "guard_refused", "collection_closed", "opt_out"]
        for a in session.exec(
            select(AuditRow)
            .where(col(AuditRow.loan_id).in_(chunk), col(AuditRow.at) <= until)
            .where(or_(col(AuditRow.action).in_(wanted), col(AuditRow.action).startswith("stop_")))
            .order_by(col(AuditRow.loan_id), col(AuditRow.seq))
        ).all():
            r = rows[a.loan_id]
            r.audit.append(a)
            if a.action == "collection_closed":
                r.closed_at = a.at if r.closed_at is None else min(r.closed_at, a.at)
    return rows


def _day(at: datetime, handover: datetime) -> int:
    return max(0, (at - handover) // timedelta(days=1))


def _result(loan: dict[str, Any], r: _Rows, until: datetime, costs: CostTable) -> LoanResult:
    handover: datetime = loan["created_at"]
    due: date = loan["due_date"] if isinstance(loan["due_date"], date) else date.fromisoformat(loan["due_date"])
    days = _day(until, handover)
    stage = loan["stage"] or ""
    closed_as = "written_off" if r.charged_at else CLOSED_AS.get(stage, "closed")
    ended_at = r.charged_at or r.closed_at
    result = LoanResult(
        loan_id=loan["loan_id"],
        borrower_id=loan["borrower_id"],
        segment=loan["segment"] or "",
        experiment=loan["experiment"] or "",
        arm=loan["arm"] or "",
        policy=loan["policy"] or "",
        currency=loan["currency"],
        handover_at=handover,
        handover_dpd=(handover.date() - due).days,
        handover_balance=loan["principal"] + loan["interest"] + loan["fees"] + loan["penalties"],
        days=days,
        payments=sorted((_day(at, handover), amount) for at, amount in r.payments),
        outcome=closed_as if ended_at else "open",
        closed_day=_day(ended_at, handover) if ended_at else None,
        fees_posted=r.fees,
        charged_off=r.charged_off,
    )
    for k in range(days // SNAPSHOT_DAYS + 1):
        at = handover + timedelta(days=k * SNAPSHOT_DAYS)
        if r.charged_at is not None and r.charged_at <= at:
            result.buckets.append("written_off")
        elif ended_at is not None and ended_at <= at:
            result.buckets.append("paid" if closed_as in ("paid", "settled") else closed_as)
        else:
            result.buckets.append(bucket_for_dpd((at.date() - due).days))
    _contacts(result, r, costs)
    _audit(result, r)
    if loan["currency"] == costs.currency:
        _costs(result, r, costs)
    return result


def _contacts(result: LoanResult, r: _Rows, costs: CostTable) -> None:
    counts: dict[str, int] = defaultdict(int)
    for c in r.contacts:
        if c.channel in MESSAGES:
            counts[c.channel] += 1
    for t in r.tasks:
        if t.kind in ("call", "field_visit") and t.outcome in ATTEMPTS:
            counts["phone" if t.kind == "call" else "visit"] += 1
            if t.kind == "call":
                result.call_minutes += costs.call(ATTEMPTS[t.outcome])[0]
    counts["agency"] = len(r.placements)
    result.contacts = {k: v for k, v in counts.items() if v}


def _audit(result: LoanResult, r: _Rows) -> None:
    opted_out: dict[str, datetime] = {}
    stopped: datetime | None = None
    for a in r.audit:
        if a.action in AUDIT_COUNTS:
            name = AUDIT_COUNTS[a.action]
            setattr(result, name, getattr(result, name) + 1)
        elif a.action in ("guard_deferred", "guard_refused"):
            key = f"{a.action.removeprefix('guard_')}:{a.rule_id}"
            result.guard[key] = result.guard.get(key, 0) + 1
        elif a.action == "opt_out":
            channel = json.loads(a.detail or "{}").get("channel", "")
            opted_out.setdefault(channel, a.at)
        elif a.action.startswith("stop_"):
            stopped = a.at if stopped is None else min(stopped, a.at)
    result.contacts_after_refusal = sum(
        1
        for c in r.contacts
        if (stopped is not None and c.at > stopped)
        or (c.channel in opted_out and c.at > opted_out[c.channel] and c.purpose != "transactional")
    )


def _costs(result: LoanResult, r: _Rows, costs: CostTable) -> None:
    spent: dict[str, Decimal] = {}
    for channel in MESSAGES:
        if result.contacts.get(channel):
            spent[channel] = costs.message(channel) * result.contacts[channel]
    if result.call_minutes:
        spent["call_minutes"] = result.call_minutes * costs.call_minute
    if result.contacts.get("visit"):
        spent["visit"] = costs.visit * result.contacts["visit"]
    placed = Decimal(0)
    for p in r.placements:
        ended = p.recalled_at or p.recall_at
        placed += sum((amount for at, amount in r.payments if p.placed_at <= at < ended), Decimal(0))
    if placed:
        spent["agency_commission"] = placed * costs.agency_commission
    if r.cases:
        spent["court"] = costs.court * r.cases
    result.costs = spent
