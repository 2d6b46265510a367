"""Simulate a portfolio: draw it from a scenario, give each loan its strategy, run every loan
through the decider for `days` days after its hand-over, and return one `LoanResult` per loan.

    results = simulate(scenario, loans=100_000, days=180, seed=7, assign=assigner)

Same scenario, assignment, seed and days: the same results, to the cent, whatever `processes`
is (each loan draws from its own generator; people are independent, so they are split across
processes and the results put back in loan order).
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

from infra.loaders import load_holidays, load_policy, load_ruleset
from lab.behaviour import Borrower, Request
from lab.engine import LoanRun, Person, run_person
from lab.portfolio import SimLoan, build_person, plan_portfolio
from lab.results import SNAPSHOT_DAYS, LoanResult, bucket_for_dpd
from lab.scenario import Scenario
from models.experiment import StrategyAssignment
from models.loan import Stage
from models.policy import Policy
from models.requests import ConductRules
from models.schedule import local_date
from models.status import CollectionState

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True, slots=True)
class Strategy:
    """What a loan is collected with, and why (the screening's segment, the experiment's arm)."""

    policy: str
    segment: str = ""
    experiment: str = ""
    arm: str = "champion"
    assignment: StrategyAssignment | None = None
    """The screening and assignment, recorded on the loan at `begin` as a hand-over records it."""


Assigner = Callable[[SimLoan], Strategy]


def default_strategy(_: SimLoan) -> Strategy:
    """Every loan on the default policy (no screening, no experiment)."""
    return Strategy(policy="default")


class Policies:
    """Policies and their conduct rules, read once from the repository's folders."""

    def __init__(self, policies: Path = ROOT / "policies", rulesets: Path = ROOT / "rulesets") -> None:
        self._policies_dir, self._rulesets_dir = policies, rulesets
        self._cache: dict[str, tuple[Policy, ConductRules]] = {}

    def get(self, name: str) -> tuple[Policy, ConductRules]:
        if name not in self._cache:
            policy = load_policy(name, self._policies_dir)
            ruleset = load_ruleset(policy.conduct.ruleset, self._rulesets_dir, policy.conduct.overrides)
            holidays = load_holidays(ruleset.hours.holidays, self._rulesets_dir)
            self._cache[name] = (policy, ConductRules(ruleset=ruleset, holidays=sorted(holidays)))
        return self._cache[name]


@dataclass
class Run:
    """What a simulation produced: a result per loan, and (when recorded) each loan's requests
    and final state, for the fidelity test."""

    results: list[LoanResult]
    requests: dict[str, list[tuple[datetime, Request]]]
    states: dict[str, CollectionState]


def simulate(
    scenario: Scenario,
    *,
    loans: int,
    days: int,
    seed: int,
    assign: Assigner = default_strategy,
    processes: int = 1,
    portfolio: list[SimLoan] | None = None,
    record: bool = False,
    until: datetime | None = None,
) -> Run:
    """Run the portfolio (drawn from the scenario unless given) and collect the results.
    `until`: stop every loan at this instant instead of `days` after its hand-over (the
    fidelity test stops the simulation where it stops the server's clock)."""
    if portfolio is not None:
        people: list[_Person] = [[portfolio[i] for i in group] for group in _people(portfolio)]
    else:
        people = list(plan_portfolio(scenario, loans, seed))
    job = _Job(scenario, people, assign, days, seed, record, until)
    if processes <= 1 or len(people) < 2 * processes:
        parts = [job.run(range(len(people)))]
    else:
        global _JOB
        _JOB = job  # inherited by the forked workers (copy on write), not pickled
        slices = [range(i, len(people), processes) for i in range(processes)]
        with multiprocessing.get_context("fork").Pool(processes) as pool:
            parts = pool.map(_run_slice, slices)
        _JOB = None
    out = Run(results=[], requests={}, states={})
    for part in parts:
        out.results += part.results
        out.requests.update(part.requests)
        out.states.update(part.states)
    out.results.sort(key=lambda r: r.loan_id)
    return out


def default_processes() -> int:
    """One per core the process may use."""
    return max(1, len(os.sched_getaffinity(0)))


# ------------------------------------------------------------------ running


def _people(sims: list[SimLoan]) -> Iterator[list[int]]:
    """Indexes of each borrower's loans, in loan order (a portfolio lists them together)."""
    current: list[int] = []
    for i, sim in enumerate(sims):
        if current and sims[current[0]].loan.borrower.borrower_id != sim.loan.borrower.borrower_id:
            yield current
            current = []
        current.append(i)
    if current:
        yield current


_Person = list[SimLoan] | tuple[int, int, int]
"""A borrower's loans, or what `build_person` needs to draw them."""


@dataclass
class _Job:
    scenario: Scenario
    people: list[_Person]
    assign: Assigner
    days: int
    seed: int
    record: bool
    until: datetime | None

    def run(self, which: range) -> Run:
        policies = Policies()
        out = Run(results=[], requests={}, states={})
        for g in which:
            person = Person()
            item = self.people[g]
            sims = item if isinstance(item, list) else build_person(self.scenario, self.seed, *item)
            runs = [self._start(sim, policies, person) for sim in sims]
            run_person(runs)
            for run in runs:
                out.results.append(_finish(run, self.days))
                if self.record:
                    assert run.requests is not None
                    out.requests[run.sim.loan.loan_id] = run.requests
                    out.states[run.sim.loan.loan_id] = run.s
        return out

    def _start(self, sim: SimLoan, policies: Policies, person: Person) -> LoanRun:
        strategy = self.assign(sim)
        policy, rules = policies.get(strategy.policy)
        result = LoanResult(
            loan_id=sim.loan.loan_id,
            borrower_id=sim.loan.borrower.borrower_id,
            segment=strategy.segment,
            experiment=strategy.experiment,
            arm=strategy.arm,
            policy=strategy.policy,
            currency=sim.loan.currency,
            handover_at=sim.handover_at,
            handover_dpd=sim.handover_dpd,
            handover_balance=sim.loan.balance().total,
            days=self.days,
        )
        borrower = Borrower(
            sim.loan.loan_id,
            sim.profile.behaviour,
            self.scenario.costs,
            result,
            sim.loan.borrower.timezone,
            self.seed,
            sim.handover_at,
        )
        return LoanRun(
            sim,
            policy,
            rules,
            person,
            result,
            borrower,
            days=self.days,
            record=self.record,
            until=self.until,
            strategy=strategy.assignment,
        )


_JOB: _Job | None = None


def _run_slice(which: range) -> Run:
    assert _JOB is not None
    return _JOB.run(which)


def _finish(run: LoanRun, days: int) -> LoanResult:
    """Fill in what the final state says: outcome, buckets, promises kept and broken."""
    s, r = run.s, run.result
    start = run.sim.handover_at
    end_at = s.charged_off_at or (s.closed_at if s.closed_as is not None else None)
    if s.charged_off_at is not None:
        r.outcome = "written_off"
    elif s.closed_as is not None:
        r.outcome = {Stage.paid: "paid", Stage.settled: "settled"}.get(s.closed_as, "closed")
    if end_at is not None:
        r.closed_day = max(0, (end_at - start).days)
    r.buckets = [_bucket(run, start + timedelta(days=d)) for d in range(0, days + 1, SNAPSHOT_DAYS)]
    r.promises_kept = s.counts.promises_kept
    r.promises_broken = s.counts.promises_broken
    r.plans_broken = s.counts.plans_broken
    r.plans_kept = 1 if s.plan is not None and s.plan.status == "completed" else 0
    r.settlements = 1 if s.settlement is not None and s.settlement.status == "paid" else 0
    r.costs = {k: v for k, v in r.costs.items() if v != Decimal(0)}
    return r


def _bucket(run: LoanRun, at: datetime) -> str:
    s = run.s
    if s.charged_off_at is not None and s.charged_off_at <= at:
        return "written_off"
    if s.closed_as is not None and s.closed_at is not None and s.closed_at <= at:
        return "paid" if s.closed_as in (Stage.paid, Stage.settled) else "closed"
    tz = s.loan.borrower.timezone
    return bucket_for_dpd((local_date(at, tz) - s.loan.due_date).days)
