"""The supervisor's page: every queue with its size, how many are claimed and the age of its
oldest open task; each collector's outcomes and promises today (the business day of
SCAN_TIMEZONE); promises kept and broken over the last 30 days, by who took them; and the open
tasks in queue order with a way to give each to a collector (the API's claim with an assignee,
`api.work.claim`); the running experiment's arms as they stand. All read from the database:
tasks, the audit record, and the experiment's loans (`lab.live`)."""

from __future__ import annotations

import re
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse
from sqlalchemy import case
from sqlmodel import Session, col, func, select

from api import work
from api.problems import ApiError
from api.state import in_thread
from db import experiments
from db.desk_users import DeskUser
from db.tables import AuditRow, TaskRow
from desk.queue import page_context
from desk.state import PREFIX, Desk, DeskDep, DeskRoute, Me, Visitor, render
from lab.figures import ALL
from lab.live import live_figures
from lab.report import pct

router = APIRouter(prefix=PREFIX, route_class=DeskRoute, include_in_schema=False)

_PROMISE = re.compile(r"(?:^|/)promise/(\d+)/")


@dataclass(frozen=True)
class QueueFigures:
    queue: str
    size: int
    claimed: int
    oldest: datetime | None


@dataclass(frozen=True)
class CollectorDay:
    name: str
    outcomes: int
    promises: int


@dataclass(frozen=True)
class PromiseRecord:
    name: str
    kept: int
    broken: int


def _who(actor: str) -> str:
    """`collector:li.wei` -> `li.wei` (a name with no role stays as it is)."""
    return actor.split(":", 1)[1] if ":" in actor else actor


def figures(desk: Desk, now: datetime) -> dict[str, Any]:
    start = datetime.combine(now.astimezone(desk.zone).date(), datetime.min.time(), tzinfo=desk.zone)
    month = now - timedelta(days=30)
    with Session(desk.api.engine) as session:
        queues = [
            QueueFigures(queue=q, size=int(n), claimed=int(c or 0), oldest=o)
            for q, n, c, o in session.exec(
                select(
                    TaskRow.queue,
                    func.count(),
                    func.sum(case((col(TaskRow.assignee) != "", 1), else_=0)),
                    func.min(TaskRow.created_at),
                )
                .where(col(TaskRow.status) == "open")
                .group_by(col(TaskRow.queue))
                .order_by(col(TaskRow.queue))
            ).all()
        ]
        closed = session.exec(
            select(TaskRow.closed_by, func.count())
            .where(col(TaskRow.status) == "closed", col(TaskRow.closed_at) >= start)
            .group_by(col(TaskRow.closed_by))
        ).all()
        promised_today = session.exec(
            select(AuditRow.actor, func.count())
            .where(col(AuditRow.action) == "promise_accepted", col(AuditRow.at) >= start)
            .group_by(col(AuditRow.actor))
        ).all()
        judged = session.exec(
            select(AuditRow.loan_id, AuditRow.key, AuditRow.action).where(
                col(AuditRow.action).in_(("promise_kept", "promise_broken")), col(AuditRow.at) >= month
            )
        ).all()
        makers: dict[tuple[str, str], str] = {}
        loans = sorted({loan for loan, _, _ in judged})
        if loans:
            for loan, key, actor in session.exec(
                select(AuditRow.loan_id, AuditRow.key, AuditRow.actor).where(
                    col(AuditRow.action) == "promise_accepted", col(AuditRow.loan_id).in_(loans)
                )
            ).all():
                if m := _PROMISE.search(key):
                    makers[(loan, m.group(1))] = _who(actor)
        people = session.exec(select(DeskUser.name).where(DeskUser.role == "collector").order_by(DeskUser.name)).all()
    outcomes = Counter({_who(by): int(n) for by, n in closed if by})
    promises = Counter({_who(by): int(n) for by, n in promised_today})
    names = sorted(set(outcomes) | set(promises) | set(people))
    kept: Counter[str] = Counter()
    broken: Counter[str] = Counter()
    for loan, key, action in judged:
        m = _PROMISE.search(key)
        maker = makers.get((loan, m.group(1)), "?") if m else "?"
        (kept if action == "promise_kept" else broken)[maker] += 1
    return {
        "queues": queues,
        "day": [CollectorDay(name=n, outcomes=outcomes[n], promises=promises[n]) for n in names],
        "record": [PromiseRecord(name=n, kept=kept[n], broken=broken[n]) for n in sorted(set(kept) | set(broken))],
        "kept_total": sum(kept.values()),
        "broken_total": sum(broken.values()),
        "collectors": list(people),
        "now": now,
    }


@dataclass(frozen=True)
class ArmLine:
    label: str
    loans: int
    recovery_rate: str
    cure_rate: str
    cost_per_100: str


@dataclass(frozen=True)
class ExperimentPanel:
    """The experiment new loans meet (or the one that ended last): its arms' headline figures
    from the real loans and the report's sentences (the same figures as
    `GET /v1/experiments/{name}/report`; the whole report: `starter.py report`)."""

    name: str
    status: str
    arms: list[ArmLine]
    sentences: list[str]


_PANELS: dict[str, tuple[float, ExperimentPanel]] = {}
PANEL_SECONDS = 60.0
"""How long the panel's figures are kept: they read every loan of the experiment, and a
supervisor's page is reloaded after each reassignment."""


def experiment_panel(desk: Desk, now: datetime) -> ExperimentPanel | None:
    found = experiments.current(desk.api.engine)
    if found is None:
        return None
    experiment, status, _ = found
    kept = _PANELS.get(experiment.name)
    if kept is not None and time.monotonic() - kept[0] < PANEL_SECONDS and kept[1].status == status:
        return kept[1]
    live = live_figures(desk.api.engine, experiment.name, start=None, end=None, now=now, resamples=500)
    figures = live[1] if live is not None else None
    arms = [
        ArmLine(
            label=a.label,
            loans=a.loans,
            recovery_rate=pct(a.recovery_rate),
            cure_rate=pct(a.cure_rate),
            cost_per_100="" if a.cost_per_unit is None else f"{100 * a.cost_per_unit:.2f} {a.currency}",
        )
        for a in (figures.arms if figures else [])
        if a.segment == ALL
    ]
    sentences = [c.sentence for c in figures.comparisons if c.segment == ALL] + figures.warnings if figures else []
    panel = ExperimentPanel(name=experiment.name, status=status, arms=arms, sentences=sentences)
    _PANELS[experiment.name] = (time.monotonic(), panel)
    return panel


def age(since: datetime | None, now: datetime) -> str:
    """How long a task has waited: hours under two days, else days."""
    if since is None:
        return ""
    hours = (now - since).total_seconds() / 3600
    return f"{hours:.0f} h" if hours < 48 else f"{hours / 24:.0f} d"


def _supervisor(me: Visitor) -> None:
    if me.principal.role != "supervisor":
        raise ApiError(403, "only a supervisor sees every queue")


def _context(desk: Desk, me: Visitor, page: int) -> dict[str, Any]:
    now = datetime.now(UTC)
    return figures(desk, now) | {
        "work": page_context(desk, me.principal, page, None),
        "age": age,
        "experiment": experiment_panel(desk, now),
    }


@router.get("/supervisor", response_class=HTMLResponse)
async def supervisor_page(
    request: Request, desk: DeskDep, me: Me, page: Annotated[int, Query(ge=0, le=100_000)] = 0
) -> HTMLResponse:
    _supervisor(me)
    context = await in_thread(_context, desk, me, page)
    return render(request, desk, "supervisor.html", context, me=me)


@router.post("/tasks/{task_id:path}/reassign", response_class=HTMLResponse)
async def reassign(task_id: str, request: Request, desk: DeskDep, me: Me) -> HTMLResponse:
    """Give a task to a collector (the API's claim with an assignee: a supervisor may move it)."""
    _supervisor(me)
    assignee = me.form.get("assignee", "").strip()
    if not assignee:
        raise ApiError(422, "choose whom to give the task to")
    task = await work.claim(desk.api, me.principal, task_id, assignee)
    context = await in_thread(_context, desk, me, 0)
    context |= {"notice": f"{task.task_id} → {task.assignee}"}
    return render(request, desk, "supervisor.html", context, me=me)
