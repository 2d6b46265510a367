"""The simulator's shell around the decider: what the workflow (`workflows.collection`) does with
Temporal, done in memory on a simulated clock, one borrower at a time.

Same decider, same order. For each loan it runs exactly the loop the workflow runs:
- drain the queue: a guard question on its own (answered by `models.conduct.decide` over the
  person's contacts, across all their loans, as `activities.guard` does), consecutive effects
  as one batch whose results are fed back in order at the loan's clock;
- at a quiet moment: if something is due by the loan's clock, feed `TimeReached(clock)`; else
  take the next request whose time has come, unless the loan's next wake comes first (then feed
  `TimeReached(wake)`).
Requests (payments, task outcomes, promises, plans, hardship, disputes) come from the borrower
model (`lab.behaviour`) and are taken at their own time, as the workflow takes a request stamped
with its sender's clock.

A person's loans are run together, in time order (ties: loan order), so the guard's per-person
budget sees every contact in the order they were made; different people never interact, so
the portfolio is run person by person and may be split across processes.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from lab.behaviour import Borrower, Request
from lab.portfolio import SimLoan
from lab.results import LoanResult
from models import lifecycle
from models.conduct import GuardDecision, PastContact, decision_key, history_horizon, judge
from models.effects import (
    AskGuard,
    ChargeOff,
    Command,
    CreateTask,
    Effect,
    EffectResult,
    FileCase,
    Place,
    PostFee,
    Recall,
    RecordConversation,
    RecordPayment,
    SendMessage,
)
from models.experiment import StrategyAssignment
from models.lifecycle import Rejected
from models.policy import Policy
from models.requests import ConductRules, GuardRequest, TaskKind
from models.status import CollectionState

_DONE = EffectResult(key="simulated")
"""The result of an effect that succeeded: the decider reads `ok`, `error` and `guard`, never
the key, so one shared result stands for all of them (a third of the models a loan would make)."""
_UTC = ZoneInfo("UTC")  # the guard compares instants in UTC; contacts kept so need no copy
_TASK_CHANNELS = {TaskKind.call: "phone", TaskKind.field_visit: "visit"}


@dataclass(slots=True)
class _Contact:
    """A contact slot the guard gave (the simulator's `contacts` table row), as the guard reads it."""

    key: str
    past: PastContact

    @property
    def at(self) -> datetime:
        return self.past.at


@dataclass(slots=True)
class Person:
    """One borrower's contact history, shared by their loans (the guard's per-person budget)."""

    contacts: list[_Contact] = field(default_factory=list)
    by_key: dict[str, _Contact] = field(default_factory=dict)
    decided: dict[str, GuardDecision] = field(default_factory=dict)

    def guard(self, req: GuardRequest) -> GuardDecision:
        """`activities.guard.decide_contact` without the database: a slot already taken is
        allowed again, a decision already made is given again, else the rules decide over the
        contacts within the rules' horizon."""
        c = req.contact
        taken = self.by_key.get(c.key)
        if taken is not None:
            return GuardDecision(
                verdict="allowed", rule="GEN-ALLOWED", at=taken.at, reason="slot already taken", decided_at=taken.at
            )
        audit_key = decision_key(c)
        earlier = self.decided.get(audit_key)
        if earlier is not None:
            return earlier
        rules = req.rules.ruleset
        since = c.at - history_horizon(rules)
        history = [r.past for r in self.contacts if r.past.at > since]
        decision = judge(c, history, rules, req.situation, frozenset(req.rules.holidays))
        if decision.verdict == "allowed":
            row = _Contact(key=c.key, past=PastContact(channel=c.channel, at=c.at.astimezone(_UTC)))
            self.contacts.append(row)
            self.by_key[c.key] = row
        self.decided[audit_key] = decision
        return decision

    def connected(self, key: str) -> None:
        row = self.by_key.get(key)
        if row is not None:
            row.past = PastContact(channel=row.past.channel, at=row.past.at, connected=True)


class LoanRun:
    """One loan in the simulation: its decider state, command queue and borrower."""

    def __init__(
        self,
        sim: SimLoan,
        policy: Policy,
        rules: ConductRules,
        person: Person,
        result: LoanResult,
        borrower: Borrower,
        *,
        days: int,
        record: bool = False,
        until: datetime | None = None,
        strategy: StrategyAssignment | None = None,
    ) -> None:
        self.sim = sim
        self.person = person
        self.result = result
        self.borrower = borrower
        self.end = until or sim.handover_at + timedelta(days=days)
        self.requests: list[tuple[datetime, Request]] | None = [] if record else None
        outcome = lifecycle.begin(
            sim.loan, policy, rules, sim.handover_at, workflow_id=f"collection-{sim.loan.loan_id}", strategy=strategy
        )
        self.s: CollectionState = outcome.state
        self.queue: deque[Command] = deque(outcome.commands)
        self._wake: datetime | None = None

    # ------------------------------------------------------------ the loop

    def next_time(self) -> datetime | None:
        """When this loan next has something to do (None: nothing before its horizon)."""
        s = self.s
        if self.queue:  # the start's commands, run at the hand-over
            return self.sim.handover_at
        if s.closed_as is not None:
            return None
        clock = lifecycle.clock_of(s)
        wake = self._wake = lifecycle.next_wake(s)
        at: datetime | None = clock
        if wake is None or wake > clock:
            at = min((t for t in (wake, self.borrower.next_at()) if t is not None), default=None)
        if at is None or at > self.end:
            return None
        return at

    def advance(self) -> None:
        """One quiet moment: run what is due by the clock, else the next of timer and request."""
        if self.queue:
            self.drain()
            return
        s = self.s
        clock = lifecycle.clock_of(s)
        wake = self._wake  # next_time's, on this very state
        if wake is not None and wake <= clock:
            self._feed(lifecycle.TimeReached(at=clock), clock)
        else:
            req_at = self.borrower.next_at()
            if wake is not None and (req_at is None or wake <= req_at):
                self._feed(lifecycle.TimeReached(at=wake), wake)
            else:
                assert req_at is not None
                request = self.borrower.take(s, req_at)
                if request is not None:
                    self._request(req_at, request)
        self.drain()

    def _request(self, at: datetime, request: Request) -> None:
        """Take a request as the workflow's `_apply_request` does (a refused one changes nothing)."""
        if self.requests is not None:
            self.requests.append((at, request))
        s = self.s
        try:
            outcome = lifecycle.decide(s, request.event, lifecycle.request_time(s, at))
        except Rejected:
            self.borrower.refused(request)
            return
        self.queue += outcome.commands
        self.borrower.answered(s, request, outcome.reply, at)

    def _feed(self, event: lifecycle.Event, at: datetime) -> None:
        self.queue += lifecycle.decide(self.s, event, at).commands

    def drain(self) -> None:
        """Run the queued commands as the workflow's `_run_queue` does."""
        q = self.queue
        while q:
            head = q[0]
            if isinstance(head, AskGuard):
                q.popleft()
                decision = self._guard(head.req)
                at = decision.decided_at or lifecycle.clock_of(self.s)
                self._feed(lifecycle.GuardAnswered(key=head.key, decision=decision), at)
                continue
            batch: list[Effect] = []
            while q and not isinstance(q[0], AskGuard):
                batch.append(q.popleft())  # type: ignore[arg-type]  # not AskGuard: an effect
            at = lifecycle.clock_of(self.s)
            results = [self._perform(effect, at) for effect in batch]
            for effect, done in zip(batch, results, strict=True):
                if lifecycle.effect_matters(effect):  # the rest change nothing
                    self._feed(lifecycle.EffectDone(effect=effect, result=done), at)

    # ------------------------------------------------------------ the activities, in memory

    def _guard(self, req: GuardRequest) -> GuardDecision:
        decision = self.person.guard(req)
        self._count_guard(req, decision)
        return decision

    def _count_guard(self, req: GuardRequest, decision: GuardDecision) -> None:
        r, c = self.result, req.contact
        if decision.verdict != "allowed":
            key = f"{decision.verdict}:{decision.rule}"
            r.guard[key] = r.guard.get(key, 0) + 1
            return
        sit = req.situation
        if c.purpose != "transactional" and (sit.stopped or sit.held or c.channel in sit.opted_out):
            r.contacts_after_refusal += 1

    def _perform(self, effect: Effect, at: datetime) -> EffectResult:
        r = self.result
        match effect:
            case SendMessage(guard=guard) if guard is not None:
                decision = self._guard(guard)
                if decision.verdict != "allowed":
                    return EffectResult(key=effect.key, ok=False, guard=decision)
                self._cost(effect.req.channel, self.borrower.costs.message(effect.req.channel))
                return EffectResult(key=effect.key, guard=decision)
            case SendMessage(req=req):
                r.contacts[req.channel] = r.contacts.get(req.channel, 0) + 1
                self._cost(req.channel, self.borrower.costs.message(req.channel))
                self.borrower.contacted(req.channel, at)
            case PostFee(req=req):
                r.fees_posted += req.amount
            case RecordPayment(req=req):
                amount = req.payment.amount
                r.payments.append((self._day(req.payment.paid_at), amount))
                if self.borrower.placed:
                    self._cost("agency_commission", amount * self.borrower.costs.agency_commission)
            case ChargeOff(req=req):
                r.charged_off += req.balance.total
            case CreateTask(req=req):
                channel = _TASK_CHANNELS.get(req.kind)
                if channel is not None:
                    r.contacts[channel] = r.contacts.get(channel, 0) + 1
                self.borrower.task_created(req, at)
            case RecordConversation(task_id=task_id):
                self.person.connected(task_id)
            case Place():
                r.contacts["agency"] = r.contacts.get("agency", 0) + 1
                self.borrower.placed_with_agency(at, True)
            case Recall():
                self.borrower.placed_with_agency(at, False)
            case FileCase():
                self._cost("court", self.borrower.costs.court)
                self.borrower.court_filed(at)
        return _DONE

    def _cost(self, kind: str, amount: object) -> None:
        costs = self.result.costs
        costs[kind] = costs.get(kind, 0) + amount  # type: ignore[assignment,operator]  # Decimal

    def _day(self, at: datetime) -> int:
        return max(0, (at - self.sim.handover_at).days)


def run_person(runs: list[LoanRun]) -> None:
    """Run one person's loans together, in time order (ties: the loans' order)."""
    heap: list[tuple[datetime, int]] = []
    for i, run in enumerate(runs):
        at = run.next_time()
        if at is not None:
            heap.append((at, i))
    heapq.heapify(heap)
    while heap:
        at, i = heapq.heappop(heap)
        run = runs[i]
        run.advance()
        nxt = run.next_time()
        if nxt is not None:
            heapq.heappush(heap, (max(nxt, at), i))
