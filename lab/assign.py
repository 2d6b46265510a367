"""Strategies for simulated loans: the screening and assignment a hand-over runs
(`activities.screening`), on a simulated loan. Same functions: `models.segmentation.handover_facts`
and `screen` with the experiment's scorecard, `models.experiment.assign` with the experiment
running (or, without an experiment, each segment's champion from `strategies/map.toml`). The
result is recorded on the loan at `begin`, as a real hand-over records it.
"""

from __future__ import annotations

from pathlib import Path

from infra.loaders import check_experiment, load_strategy_map
from lab.portfolio import SimLoan
from lab.simulate import ROOT, Assigner, Strategy
from models.experiment import Assignment, StrategyAssignment, assign, champion
from models.segmentation import HandoverFacts, handover_facts, screen

STRATEGIES = ROOT / "strategies"
POLICIES = ROOT / "policies"


def assigner_for(experiment: Path | None, strategies: Path = STRATEGIES, policies: Path = POLICIES) -> Assigner:
    """An experiment file's assignment while it runs (checked as `starter.py experiment start`
    checks it: its scorecard covers its segments, its policies load), or the strategy map's."""
    if experiment is None:
        strategy_map, card = load_strategy_map(strategies)

        def by_map(sim: SimLoan) -> Strategy:
            screening = screen(card, _facts(sim))
            return _strategy(
                StrategyAssignment(screening=screening, assignment=champion(strategy_map, screening.segment))
            )

        return by_map
    found, card = check_experiment(experiment.read_text(encoding="utf-8"), str(experiment), strategies, policies)

    def by_experiment(sim: SimLoan) -> Strategy:
        screening = screen(card, _facts(sim))
        assignment = assign(found, "running", screening.segment, sim.loan.loan_id)
        return _strategy(StrategyAssignment(screening=screening, assignment=assignment))

    return by_experiment


def _facts(sim: SimLoan) -> HandoverFacts:
    return handover_facts(sim.loan, sim.handover_at, sim.other_loans_in_collection, False)


def _strategy(found: StrategyAssignment) -> Strategy:
    a: Assignment = found.assignment
    return Strategy(
        policy=a.policy, segment=found.screening.segment, experiment=a.experiment, arm=a.arm, assignment=found
    )
