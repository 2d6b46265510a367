"""The borrower (and the lender's people) in a simulation: when a loan's borrower pays by
themselves, what a call or visit ends in, promises kept, instalments paid, hardship and
disputes. Everything they do reaches the loan as a request the workflow would take (a payment,
a task outcome, a promise...), at a moment of its own.

Every draw comes from the loan's own `random.Random` (seeded with the run's seed and the loan
id) in the order the loan meets them, so a loan's life is the same whatever else is simulated
and however the portfolio is split across processes.

Paying by oneself is a daily chance (the profile's `pay_daily`, raised for a while after each
contact: `Uplift`). Rather than roll a die every day, the borrower draws the day of the next
payment from the geometric distribution at the current chance, and draws again whenever the
chance changes (a contact, an uplift running out, a placement): the same process, with one
draw per change instead of one per day.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal

from lab.costs import CostTable
from lab.results import LoanResult
from lab.scenario import Behaviour
from models import lifecycle
from models.arrangements import (
    Decision,
    DisputeRequest,
    DisputeResolution,
    HardshipReport,
    PlanProposal,
    PromiseRequest,
)
from models.events import TaskOutcome, TaskReport
from models.money import quantize
from models.payment import Payment
from models.requests import TaskKind, TaskRequest
from models.schedule import at_local, local_date
from models.status import CollectionState

COLLECTOR = "collector:sim"
PAY_TIME = 19
"""Borrowers pay in the evening (at a quarter-hour of their own after 19:00, local time); the
collectors report a task 3 hours and as many minutes after it was created. Odd minutes keep
requests off the ladder's round hours, and few distinct moments keep the fidelity test (which
moves a test server's clock to each one) quick."""
RESOLVE_TIME = 11
"""The disputes team resolves in the late morning."""
MAX_CHANCE = 0.95


@dataclass(frozen=True, slots=True)
class Request:
    """A request as the loan takes it (the fidelity test sends the same to a workflow)."""

    event: lifecycle.Event
    kind: str


@dataclass(frozen=True, slots=True)
class _Pending:
    kind: str
    """"pay" (by oneself), "recheck" (the chance changes), "report" (a task's outcome),
    "amount" (a promised amount or an instalment), "request" (ready as it is)."""
    generation: int = 0
    task: TaskRequest | None = None
    amount: Decimal | None = None
    request: Request | None = None


class Borrower:
    """One loan's borrower: the requests they (and the collectors working their tasks) send."""

    def __init__(
        self,
        loan_id: str,
        behaviour: Behaviour,
        costs: CostTable,
        result: LoanResult,
        tz: str,
        seed: int,
        start: datetime,
    ) -> None:
        self.b = behaviour
        self.costs = costs
        self.result = result
        self.tz = tz
        self.loan_id = loan_id
        self.rng = random.Random(f"{seed}:{loan_id}")
        self.minute = 7 + 15 * self.rng.randrange(4)  # 19:07, 19:22, 19:37 or 19:52
        self.placed = False
        self.court = False
        self._uplifts: list[tuple[datetime, float]] = []  # (until, added chance)
        self._events: list[tuple[datetime, int, _Pending]] = []
        self._seq = 0
        self._generation = 0
        self._payments = 0
        self._reschedule(start)

    # ------------------------------------------------------------ the loan's side

    def next_at(self) -> datetime | None:
        events = self._events
        while events and events[0][2].kind in ("pay", "recheck") and events[0][2].generation != self._generation:
            heapq.heappop(events)  # drawn at a chance that has changed since
        return events[0][0] if events else None

    def take(self, s: CollectionState, at: datetime) -> Request | None:
        """The request the next event at `at` makes (None: it makes none)."""
        _, _, ev = heapq.heappop(self._events)
        if s.closed_as is not None:
            return None
        match ev.kind:
            case "pay":
                if ev.generation != self._generation:
                    return None
                self._reschedule(at)
                return self._pay(s, at, self._self_amount(s))
            case "recheck":
                if ev.generation == self._generation:
                    self._reschedule(at)
                return None
            case "amount":
                assert ev.amount is not None
                return self._pay(s, at, ev.amount)
            case "report":
                assert ev.task is not None
                return self._report(s, ev.task, at)
            case _:
                return ev.request

    def answered(self, s: CollectionState, request: Request, reply: object, at: datetime) -> None:
        """The loan took `request`: count it, and follow up (pay a promise, instalments...)."""
        r = self.result
        accepted = isinstance(reply, Decision) and reply.accepted
        if not accepted:
            return
        match request.kind:
            case "promise":
                r.promises_made += 1
                promise = s.promise
                if promise is not None and self.rng.random() < float(self.b.keep):
                    days = (promise.due - local_date(at, self.tz)).days
                    day = local_date(at, self.tz) + timedelta(days=self.rng.randint(1, max(1, days)))
                    self._at(self._evening(day), _Pending("amount", amount=promise.amount))
            case "plan":
                r.plans += 1
                plan = s.active_plan()
                if plan is not None:
                    for inst in plan.instalments:
                        if self.rng.random() < float(self.b.keep_instalment):
                            self._at(self._evening(inst.due), _Pending("amount", amount=inst.amount))
            case "hardship":
                r.hardships += 1
            case "dispute":
                r.disputes += 1
                upheld = self.rng.random() < float(self.b.dispute_upheld)
                day = local_date(at, self.tz) + timedelta(days=self.b.dispute_days)
                resolution = DisputeResolution(upheld=upheld, note="", resolved_by="disputes-team")
                event = lifecycle.DisputeResolved(request=resolution)
                when = at_local(day, time(RESOLVE_TIME, self.minute), self.tz)
                self._at(when, _Pending("request", request=Request(event, "dispute_resolution")))

    def refused(self, request: Request) -> None:
        """The loan refused `request` (nothing changed); the borrower does nothing more."""

    def contacted(self, channel: str, at: datetime) -> None:
        """A message reached the borrower: their chance of paying rises for a while."""
        if channel in ("sms", "email", "letter"):
            self._uplift(at, float(getattr(self.b.uplift, channel)))

    def task_created(self, req: TaskRequest, at: datetime) -> None:
        """A call or visit task: its collector reports the outcome some hours later."""
        if req.kind not in (TaskKind.call, TaskKind.field_visit):
            return
        hours = self.b.call_report_hours if req.kind == TaskKind.call else self.b.visit_report_hours
        self._at(at + timedelta(hours=hours, minutes=self.minute), _Pending("report", task=req))

    def placed_with_agency(self, at: datetime, placed: bool) -> None:
        self.placed = placed
        self._reschedule(at)

    def court_filed(self, at: datetime) -> None:
        self.court = True
        self._reschedule(at)

    # ------------------------------------------------------------ what they do

    def _report(self, s: CollectionState, task: TaskRequest, at: datetime) -> Request | None:
        """A task's outcome, with what a reached borrower says after it (same moment)."""
        if not any(t.task_id == task.key for t in s.open_tasks):
            return None
        reached = self.rng.random() < float(self.b.answer)
        if task.kind == TaskKind.call:
            minutes, price = self.costs.call(reached)
            self.result.call_minutes += minutes
            self._add_cost("call_minutes", price)
        else:
            self._add_cost("visit", self.costs.visit)
        outcome = TaskOutcome.no_answer
        follow: Request | None = None
        if reached:
            self._uplift(at, float(self.b.uplift.call if task.kind == TaskKind.call else self.b.uplift.visit))
            follow = self._after_reached(s, at)
            outcome = TaskOutcome.promised if follow is not None and follow.kind == "promise" else TaskOutcome.answered
        report = TaskReport(task_id=task.key, outcome=outcome, reported_by=COLLECTOR)
        if follow is not None:
            self._at(at, _Pending("request", request=follow))
        return Request(lifecycle.TaskReported(report=report), "task_report")

    def _after_reached(self, s: CollectionState, at: datetime) -> Request | None:
        b, roll = self.b, self.rng.random()
        today = local_date(at, self.tz)
        if roll < float(b.dispute):
            return Request(
                lifecycle.DisputeRaised(request=DisputeRequest(reason="amount disputed", raised_by=COLLECTOR)),
                "dispute",
            )
        roll -= float(b.dispute)
        if roll < float(b.hardship):
            report = HardshipReport(reason="loss of income", reported_by=COLLECTOR)
            return Request(lifecycle.HardshipReported(request=report), "hardship")
        roll = self.rng.random()
        if roll < float(b.promise):
            days = self.rng.randint(1, max(1, min(7, s.policy.promise.max_days)))
            req = PromiseRequest(amount=s.balance.total, date=today + timedelta(days=days), made_by=COLLECTOR)
            return Request(lifecycle.PromiseMade(request=req), "promise")
        roll = self.rng.random()
        if roll < float(b.plan):
            proposal = PlanProposal(
                instalments=b.instalments, frequency="monthly", first_due=today + timedelta(days=7), made_by=COLLECTOR
            )
            return Request(lifecycle.PlanProposed(request=proposal), "plan")
        return None

    def _self_amount(self, s: CollectionState) -> Decimal:
        total = s.balance.total
        if self.rng.random() >= float(self.b.partial):
            return total
        low, high = self.b.partial_share
        share = Decimal(str(round(self.rng.uniform(float(low), float(high)), 4)))
        return quantize(total * share, s.loan.currency)

    def _pay(self, s: CollectionState, at: datetime, amount: Decimal) -> Request | None:
        amount = min(amount, s.balance.total)
        if amount <= 0:
            return None
        self._payments += 1
        payment = Payment(
            payment_id=f"{self.loan_id}-pay-{self._payments}",
            amount=amount,
            currency=s.loan.currency,
            paid_at=at,
            source="borrower",
        )
        return Request(lifecycle.PaymentReceived(payment=payment, answer=True), "payment")

    # ------------------------------------------------------------ the chance of paying

    def _chance(self, at: datetime) -> float:
        self._uplifts = [(until, up) for until, up in self._uplifts if until > at]
        chance = float(self.b.pay_daily) + sum(up for _, up in self._uplifts)
        if self.placed:
            chance += float(self.b.uplift.agency)
        if self.court:
            chance += float(self.b.uplift.court)
        return min(chance, MAX_CHANCE)

    def _uplift(self, at: datetime, up: float) -> None:
        if up > 0:
            self._uplifts.append((at + timedelta(days=self.b.uplift.days), up))
            self._reschedule(at)

    def _reschedule(self, now: datetime) -> None:
        """Draw the next payment by oneself at today's chance (or look again when it changes)."""
        self._generation += 1
        chance = self._chance(now)
        first = self._evening(local_date(now, self.tz))
        if first <= now:
            first = self._evening(local_date(now, self.tz) + timedelta(days=1))
        change = min((until for until, _ in self._uplifts), default=None)
        pay_at = None
        if chance > 0:
            days = math.floor(math.log(1.0 - self.rng.random()) / math.log(1.0 - chance))
            pay_at = self._evening(local_date(first, self.tz) + timedelta(days=days))
        if change is not None and (pay_at is None or pay_at > change):
            self._at(change, _Pending("recheck", generation=self._generation))
        elif pay_at is not None:
            self._at(pay_at, _Pending("pay", generation=self._generation))

    # ------------------------------------------------------------ helpers

    def _evening(self, day: date) -> datetime:
        return at_local(day, time(PAY_TIME, self.minute), self.tz)

    def _at(self, at: datetime, ev: _Pending) -> None:
        self._seq += 1
        heapq.heappush(self._events, (at, self._seq, ev))

    def _add_cost(self, kind: str, amount: Decimal) -> None:
        self.result.costs[kind] = self.result.costs.get(kind, Decimal(0)) + amount
