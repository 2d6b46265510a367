"""The simulator (lab/): same seed, same figures to the cent, however many processes; skipping
the effects whose results change nothing changes nothing; the conduct guard counts a person's
contacts across their loans; a scenario file is checked like a policy."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from lab import engine
from lab.portfolio import SimLoan, build_portfolio
from lab.results import LoanResult
from lab.scenario import Behaviour, Portfolio, Profile, Scenario, load_scenario, parse_scenario
from lab.simulate import ROOT, simulate
from models import lifecycle

SAMPLE = ROOT / "strategies" / "scenarios" / "sample.toml"


def _figures(results: list[LoanResult]) -> list[tuple[object, ...]]:
    return [dataclasses.astuple(r) for r in results]


def test_same_seed_same_results_to_the_cent_in_one_or_two_processes() -> None:
    scenario = load_scenario(SAMPLE)
    one = simulate(scenario, loans=400, days=180, seed=5).results
    again = simulate(scenario, loans=400, days=180, seed=5).results
    two = simulate(scenario, loans=400, days=180, seed=5, processes=2).results
    assert _figures(one) == _figures(again) == _figures(two)
    other = simulate(scenario, loans=400, days=180, seed=6).results
    assert _figures(other) != _figures(one)
    recovered = sum((r.recovered for r in one), Decimal(0))
    assert recovered > 0 and recovered == recovered.quantize(Decimal("0.01"))
    outcomes = {r.outcome for r in one}
    assert {"paid", "written_off"} <= outcomes


def test_skipping_results_that_change_nothing_changes_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    scenario = load_scenario(SAMPLE)
    skipped = simulate(scenario, loans=150, days=180, seed=3, record=True)
    monkeypatch.setattr(engine.lifecycle, "effect_matters", lambda effect: True)
    fed = simulate(scenario, loans=150, days=180, seed=3, record=True)
    assert _figures(skipped.results) == _figures(fed.results)
    for loan_id, state in fed.states.items():
        assert skipped.states[loan_id].model_dump() == state.model_dump(), loan_id
    assert lifecycle.effect_matters is not None


def _quiet_borrower() -> Behaviour:
    return Behaviour(pay_daily=Decimal(0), answer=Decimal(0))


def test_the_guard_counts_a_persons_contacts_across_their_loans() -> None:
    """Two loans of one person, due the same day: at DPD 3 each sends an SMS and an e-mail, and
    the rule set allows 3 messages a day per person, so one of the four waits."""
    scenario = Scenario(
        name="t",
        profiles=[Profile(name="quiet", share=Decimal(1), behaviour=_quiet_borrower())],
        portfolio=Portfolio(second_loan=Decimal(1)),
    )
    first, second = build_portfolio(scenario, 2, seed=1)
    assert first.loan.borrower.borrower_id == second.loan.borrower.borrower_id
    at = datetime(2026, 3, 2, 1, 0, tzinfo=UTC)  # 09:00 in Shanghai, DPD 1
    same = [
        dataclasses.replace(s, handover_at=at, loan=s.loan.model_copy(update={"due_date": date(2026, 3, 1)}))
        for s in (first, second)
    ]
    results = simulate(scenario, loans=2, days=10, seed=1, portfolio=same).results
    deferred = sum(r.guard.get("deferred:CN-MESSAGES-3-PER-DAY", 0) for r in results)
    assert deferred >= 1, [r.guard for r in results]
    alone = simulate(scenario, loans=1, days=10, seed=1, portfolio=same[:1]).results
    assert alone[0].guard == {}


def test_a_scenario_file_is_checked_and_errors_name_the_file() -> None:
    text = SAMPLE.read_text(encoding="utf-8").replace('share = "0.40"', 'share = "0.50"')
    with pytest.raises(ValueError, match=r"(?s)bad\.toml.*add up to 1"):
        parse_scenario(text, "bad.toml")
    with pytest.raises(ValueError, match=r"bad\.toml"):
        parse_scenario(SAMPLE.read_text(encoding="utf-8") + "\nunknown = 1\n", "bad.toml")


def test_a_portfolio_is_the_same_for_the_same_seed() -> None:
    scenario = load_scenario(SAMPLE)
    a, b = build_portfolio(scenario, 300, 9), build_portfolio(scenario, 300, 9)
    assert [(s.loan, s.handover_at) for s in a] == [(s.loan, s.handover_at) for s in b]
    assert len({s.loan.borrower.borrower_id for s in a}) < 300  # some borrowers have two loans
    profiles = {s.profile.name for s in a}
    assert profiles == {p.name for p in scenario.profiles}
    assert all(isinstance(s, SimLoan) for s in a)
