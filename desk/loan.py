"""A loan at the desk: who owes and how to reach them, the balance, stage, arrangement, timeline,
open tasks and audit trail; what the conduct guard allows now on each channel (`desk.contact`);
starting a call (only when the guard allows it); recording a task's outcome, with a promise in
the same form; and the negotiation forms with the policy's limits shown beside them
(`models.offer_limits`). Every request goes through the API's own functions (`api.work`) in the
visitor's name, so the loan's timeline and audit record name them and the API's access rules
apply: a collector opens only loans they hold an open task for."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from pydantic import ValidationError
from sqlmodel import Session, col, select

from api import work
from api.auth import loan_access
from api.marks import save_mark
from api.problems import ApiError
from api.state import in_thread
from client import get_status
from db.tables import AuditRow, BorrowerRow, LoanRow, TaskRow
from desk.contact import Person, budgets, histories, preview
from desk.queue import local
from desk.state import PREFIX, Desk, DeskDep, DeskRoute, Me, Visitor, render
from models import CollectionStatus
from models.conduct import Situation
from models.events import TimelineEntry
from models.offer_limits import offer_limits

router = APIRouter(prefix=PREFIX, route_class=DeskRoute, include_in_schema=False)

OUTCOMES = ("answered", "no_answer", "wrong_number", "promised", "refused")
CHANNELS = ("phone", "sms", "email", "visit")
FORMS = ("promises", "plans", "settlements", "hardship", "disputes", "stops")
AUDIT_SHOWN = 100


@dataclass(frozen=True)
class LoanFacts:
    loan: LoanRow | None
    borrower: BorrowerRow | None
    tasks: list[TaskRow]
    audit: list[AuditRow]
    closers: dict[str, str]
    """Who reported each closed task's outcome (`collector:li.wei`), by task id."""


_BY = re.compile(r"\(by ([^()]+)\)$")


def actor_of(entry: TimelineEntry, closers: dict[str, str]) -> str:
    """Who did what a timeline entry records, as far as the loan says: the reporter of a task's
    outcome (its key is the task id), or the `(by ...)` the loan writes after a request."""
    if entry.key in closers:
        return closers[entry.key]
    found = _BY.search(entry.detail)
    return found.group(1) if found else ""


def loan_facts(desk: Desk, loan_id: str) -> LoanFacts:
    with Session(desk.api.engine) as session:
        loan = session.get(LoanRow, loan_id)
        borrower = session.get(BorrowerRow, loan.borrower_id) if loan is not None else None
        tasks = session.exec(
            select(TaskRow).where(TaskRow.loan_id == loan_id, TaskRow.status == "open").order_by(col(TaskRow.due_by))
        ).all()
        audit = session.exec(
            select(AuditRow).where(AuditRow.loan_id == loan_id).order_by(col(AuditRow.seq).desc()).limit(AUDIT_SHOWN)
        ).all()
        closed = session.exec(
            select(TaskRow.task_id, TaskRow.closed_by).where(TaskRow.loan_id == loan_id, TaskRow.status == "closed")
        ).all()
        closers = {task_id: by for task_id, by in closed if by}
        return LoanFacts(loan=loan, borrower=borrower, tasks=list(tasks), audit=list(audit), closers=closers)


def workable(me: Visitor, task: TaskRow) -> bool:
    """Whether the visitor may report on the task (the API's rule: their queue or given to them,
    and nobody else holds it; a supervisor any)."""
    p = me.principal
    if p.role == "supervisor":
        return True
    return (task.queue in p.queues or task.assignee == p.name) and task.assignee in ("", p.name)


async def loan_context(
    desk: Desk,
    me: Visitor,
    loan_id: str,
    task_id: str | None,
    *,
    access_checked: bool = False,
    reported: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything the loan page shows, read now (and the loan's mark refreshed for the queue).
    `access_checked`: the request has just acted on the loan under the API's rules (an outcome
    that closed the collector's last task there still shows them the loan's answer). `reported`:
    outcomes this request reported (task id -> actor), before the task's row is closed."""
    if not access_checked:
        await loan_access(desk.api, me.principal, loan_id)
    status: CollectionStatus = await get_status(desk.api.temporal, loan_id)
    facts: LoanFacts = await in_thread(loan_facts, desk, loan_id)
    await in_thread(save_mark, desk.api, status)
    now = datetime.now(UTC)
    zone = facts.borrower.timezone if facts.borrower is not None else "UTC"
    context: dict[str, Any] = {
        "status": status,
        "loan": facts.loan,
        "borrower": facts.borrower,
        "zone": zone,
        "tasks": facts.tasks,
        "mine": [t for t in facts.tasks if workable(me, t)],
        "selected": task_id or "",
        "audit": facts.audit,
        "actor_of": lambda entry: actor_of(entry, facts.closers | (reported or {})),
        "local": local,
        "outcomes": OUTCOMES,
        "now": now,
        "guard": {},
        "budgets": [],
        "limits": None,
        "policy_changed": False,
    }
    if facts.loan is not None:
        person = Person(
            loan_id=loan_id,
            borrower_id=facts.loan.borrower_id,
            timezone=zone,
            policy=facts.loan.policy,
            situation=Situation(
                stopped=status.stop is not None,
                held=bool(status.holds),
                paused=status.paused_reason is not None,
                opted_out=list(status.opted_out),
            ),
        )
        history = (await in_thread(histories, desk, [person], now)).get(person.borrower_id, [])
        context["guard"] = {c: preview(desk, person, c, history, now) for c in CHANNELS}
        context["budgets"] = [b for b in budgets(desk, person, history, now) if b.channel in CHANNELS]
        policy = desk.policy(facts.loan.policy)
        if policy is not None:
            today = now.astimezone(ZoneInfo(zone)).date()
            context["limits"] = offer_limits(policy, status.stage, status.outstanding.total, status.currency, today)
            context["policy_changed"] = bool(policy.version) and policy.version != status.policy_version
    return context


async def page(
    request: Request,
    desk: Desk,
    me: Visitor,
    loan_id: str,
    task_id: str | None = None,
    *,
    notice: str = "",
    notice_kind: str = "ok",
    status: int = 200,
    form: dict[str, str] | None = None,
    access_checked: bool = False,
    reported: dict[str, str] | None = None,
) -> HTMLResponse:
    context = await loan_context(desk, me, loan_id, task_id, access_checked=access_checked, reported=reported)
    context |= {"notice": notice, "notice_kind": notice_kind, "form": form or {}}
    return render(request, desk, "loan.html", context, me=me, status=status)


@router.get("/loans/{loan_id}", response_class=HTMLResponse)
async def loan_page(
    loan_id: str, request: Request, desk: DeskDep, me: Me, task: Annotated[str | None, Query(max_length=256)] = None
) -> HTMLResponse:
    return await page(request, desk, me, loan_id, task)


@router.post("/loans/{loan_id}/call", response_class=HTMLResponse)
async def start_call(loan_id: str, request: Request, desk: DeskDep, me: Me) -> HTMLResponse:
    """Start a call: only if the guard allows a phone contact now; otherwise the page says when
    and under which rule. Looking is all this does: the call task's own contact was guarded
    when the loan made it, and the outcome is recorded with the form below."""
    task_id = me.form.get("task_id") or None
    context = await loan_context(desk, me, loan_id, task_id)
    answer = context["guard"].get("phone")
    t_ok = answer is not None and answer.verdict == "allowed"
    phone = context["borrower"].phone if context["borrower"] is not None else ""
    context |= {"form": {}, "call_started": t_ok, "call_phone": phone}
    if t_ok:
        context |= {"notice": "call_started", "notice_kind": "ok"}
        return render(request, desk, "loan.html", context, me=me)
    context |= {"notice": "call_not_now", "notice_kind": "error"}
    return render(request, desk, "loan.html", context, me=me, status=409)


def _amount(text: str, what: str) -> Decimal:
    try:
        value = Decimal(text.strip().replace(",", ""))
    except InvalidOperation as exc:
        raise ValueError(f"{what}: {text!r} is not an amount") from exc
    if not value.is_finite():
        raise ValueError(f"{what}: {text!r} is not an amount")
    return value


def _date(text: str, what: str) -> date:
    try:
        return date.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"{what}: {text!r} is not a date (YYYY-MM-DD)") from exc


@router.post("/loans/{loan_id}/outcome", response_class=HTMLResponse)
async def record_outcome(loan_id: str, request: Request, desk: DeskDep, me: Me) -> HTMLResponse:
    """The outcome of the call or visit, with a note and a recording reference; when it is
    "promised" with an amount and a date, the promise is sent first and, if the loan refuses it,
    its reason is shown and nothing is recorded."""
    f = me.form
    task_id, outcome = f.get("task_id", ""), f.get("outcome", "")
    note, recording = f.get("note", "")[:4000], f.get("recording_ref", "")[:512]

    async def again(message: str, status: int) -> HTMLResponse:
        return await page(
            request, desk, me, loan_id, task_id, notice=message, notice_kind="error", status=status, form=f
        )

    if outcome not in OUTCOMES:
        return await again(f"choose an outcome ({', '.join(OUTCOMES)})", 422)
    task = await work.find_task(desk.api, me.principal, task_id)
    if task.loan_id != loan_id:
        return await again(f"task {task_id} is not a task of loan {loan_id}", 422)
    promised = ""
    if outcome == "promised" and (f.get("promise_amount") or f.get("promise_date")):
        try:
            amount = _amount(f.get("promise_amount", ""), "promise amount")
            when = _date(f.get("promise_date", ""), "promise date")
            body = work.NEGOTIATIONS["promises"].body_type.model_validate(
                {"amount": amount, "date": when, "note": note}
            )
        except (ValueError, ValidationError) as exc:
            return await again(str(exc), 422)
        try:
            decision = await work.negotiate(desk.api, me.principal, loan_id, "promises", body)
        except ApiError as exc:
            if exc.status != 422:
                raise
            return await again(exc.reason or exc.detail, 422)
        promised = decision.reason
    await work.report_outcome(desk.api, me.principal, task_id, outcome, note, recording)
    done = f"{task_id}: {outcome}" + (f"; {promised}" if promised else "")
    return await page(
        request, desk, me, loan_id, None, notice=done, access_checked=True, reported={task_id: me.principal.actor}
    )


def _body(kind: str, f: dict[str, str]) -> dict[str, Any]:
    """The request body a negotiation form makes (the types' own validation follows)."""
    note = f.get("note", "")[:4000]
    match kind:
        case "promises":
            return {
                "amount": _amount(f.get("amount", ""), "amount"),
                "date": _date(f.get("date", ""), "date"),
                "note": note,
            }
        case "plans":
            down = f.get("down_payment", "").strip()
            try:
                instalments = int(f.get("instalments", ""))
            except ValueError as exc:
                raise ValueError("instalments: a whole number") from exc
            return {
                "instalments": instalments,
                "frequency": f.get("frequency", "monthly"),
                "first_due": _date(f.get("first_due", ""), "first due date"),
                "down_payment": _amount(down, "down payment") if down else Decimal(0),
                "note": note,
            }
        case "settlements":
            return {
                "amount": _amount(f.get("amount", ""), "amount"),
                "deadline": _date(f.get("deadline", ""), "deadline"),
                "note": note,
            }
        case "hardship":
            return {"reason": f.get("reason", "")[:2000], "evidence_ref": f.get("evidence_ref", "")[:512]}
        case "disputes":
            return {"reason": f.get("reason", "")[:2000]}
        case "stops":
            return {"reason": f.get("reason", ""), "evidence_ref": f.get("evidence_ref", "")[:512]}
    raise ValueError(f"unknown request {kind!r}")


@router.post("/loans/{loan_id}/requests/{kind}", response_class=HTMLResponse)
async def send_request(loan_id: str, kind: str, request: Request, desk: DeskDep, me: Me) -> HTMLResponse:
    """A promise, plan, settlement, hardship, dispute or stop, in the visitor's name. Bad input
    or a refusal shows why (422) and changes nothing; accepted, the loan's answer."""
    if kind not in FORMS:
        raise ApiError(404, f"no request {kind}")
    f = me.form
    task_id = f.get("task_id") or None
    try:
        body = work.NEGOTIATIONS[kind].body_type.model_validate(_body(kind, f))
    except (ValueError, ValidationError) as exc:
        message = _validation_message(exc)
        return await page(request, desk, me, loan_id, task_id, notice=message, notice_kind="error", status=422, form=f)
    try:
        decision = await work.negotiate(desk.api, me.principal, loan_id, kind, body)
    except ApiError as exc:
        if exc.status != 422:
            raise
        reason = exc.reason or exc.detail
        return await page(request, desk, me, loan_id, task_id, notice=reason, notice_kind="error", status=422, form=f)
    return await page(request, desk, me, loan_id, task_id, notice=decision.reason)


def _validation_message(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
    return str(exc)
