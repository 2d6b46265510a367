"""Screening and strategy assignment as pure rules: the scorecard (bands, score, segments,
overrides) and its validation, champion/challenger assignment (deterministic, shares, paused,
ended, winners), the shipped strategies files, and what the decider records of a strategy."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from infra.loaders import check_experiment, load_policy, load_ruleset, load_segmentation, load_strategy_map
from models import lifecycle
from models.effects import Audit
from models.experiment import (
    Assignment,
    ExperimentError,
    StrategyAssignment,
    assign,
    bucket,
    check_covers,
    explicit,
    parse_experiment,
    parse_strategy_map,
    resolve_winners,
)
from models.loan import Borrower, OverdueLoan
from models.requests import ConductRules
from models.segmentation import (
    HandoverFacts,
    ScreeningError,
    SegmentationError,
    parse_segmentation,
    screen,
)
from tests.helpers import ROOT

STRATEGIES = ROOT / "strategies"
POLICIES = ROOT / "policies"

CARD = """
name = "test-card"
[attributes]
dpd_at_handover = [
  { at_least = 0, below = 30, points = 0 },
  { at_least = 30, points = 20 },
]
product = [ { values = ["payday"], points = 15 }, { other = true, points = 0 } ]
days_since_last_payment = [ { missing = true, points = 7 }, { at_least = 0, points = 0 } ]
hardship_flag = [ { value = true, points = 1 }, { value = false, points = 0 } ]
[attributes.outstanding]
CNY = [ { at_least = 0, below = 5000, points = 0 }, { at_least = 5000, points = 10 } ]
[[segments]]
name = "low"
below = 10
[[segments]]
name = "mid"
below = 30
[[segments]]
name = "high"
[[overrides]]
name = "hardship"
segment = "gentle"
when = { hardship_flag = true }
[[overrides]]
name = "late-and-big"
segment = "high"
when = { dpd_at_handover = { at_least = 90 }, currency = "CNY" }
"""

EXPERIMENT = """
name = "exp-1"
segmentation = "test-card"
[segments.low]
champion = "default"
[segments.mid]
champion = "default"
challengers = [{ name = "early-call", policy = "early-call", share = "0.20" }]
[segments.high]
champion = "default"
challengers = [
  { name = "early-call", policy = "early-call", share = 0.1 },
  { name = "soft", policy = "gentle", share = "0.15" },
]
[segments.gentle]
champion = "gentle"
"""


def facts(**kw: object) -> HandoverFacts:
    base: dict[str, object] = {
        "dpd_at_handover": 5,
        "outstanding": Decimal("1000.00"),
        "currency": "CNY",
        "product": "consumer",
        "days_since_last_payment": 3,
    }
    return HandoverFacts.model_validate(base | kw)


# ------------------------------------------------------------------ the scorecard


def test_points_by_band_sum_to_the_score_and_the_score_band_is_the_segment() -> None:
    card = parse_segmentation(CARD, "card.toml")
    low = screen(card, facts())
    assert (low.segment, low.score, low.override) == ("low", 0, None)
    assert [(p.attribute, p.band, p.points) for p in low.points] == [
        ("dpd_at_handover", "0-29", 0),
        ("outstanding", "0-4999", 0),
        ("product", "other", 0),
        ("days_since_last_payment", "0+", 0),
        ("hardship_flag", "false", 0),
    ]
    mid = screen(card, facts(dpd_at_handover=30, days_since_last_payment=None))
    assert (mid.segment, mid.score) == ("mid", 27)
    assert "dpd_at_handover 30+ +20" in mid.summary() and "days_since_last_payment missing +7" in mid.summary()
    high = screen(card, facts(dpd_at_handover=30, product="payday", outstanding=Decimal(5000)))
    assert (high.segment, high.score) == ("high", 45)
    assert (high.scorecard, high.scorecard_version) == ("test-card", card.version) and len(card.version) == 12


def test_the_first_matching_override_decides_the_segment_and_is_recorded() -> None:
    card = parse_segmentation(CARD, "card.toml")
    gentle = screen(card, facts(hardship_flag=True, dpd_at_handover=120))
    assert (gentle.segment, gentle.override, gentle.score) == ("gentle", "hardship", 21)
    late = screen(card, facts(dpd_at_handover=95))
    assert (late.segment, late.override) == ("high", "late-and-big")
    assert card.segment_names == ["low", "mid", "high", "gentle"]


def test_a_currency_without_outstanding_bands_cannot_be_screened() -> None:
    card = parse_segmentation(CARD, "card.toml")
    with pytest.raises(ScreeningError, match="no outstanding bands for USD"):
        screen(card, facts(currency="USD"))


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ("below = 30, points = 0 },\n  { at_least = 30", "attributes.dpd_at_handover", "bands must follow"),
        ("{ at_least = 30, points = 20 },", "attributes.dpd_at_handover", "no 'below'"),
        ("{ other = true, points = 0 }", "attributes.product", "exactly one 'other"),
        ('name = "high"\n[[overrides]]', "segments", "the last segment"),
        ("when = { hardship_flag = true }", "overrides.0.when", "unknown fact"),
        ('name = "test-card"', "name", "Field required"),
    ],
)
def test_a_broken_scorecard_names_the_file_and_the_field(change: str, field: str, message: str) -> None:
    broken = {
        "below = 30, points = 0 },\n  { at_least = 30": "below = 30, points = 0 },\n  { at_least = 31",
        "{ at_least = 30, points = 20 },": "{ at_least = 30, below = 60, points = 20 },",
        "{ other = true, points = 0 }": '{ values = ["consumer"], points = 0 }',
        'name = "high"\n[[overrides]]': 'name = "high"\nbelow = 99\n[[overrides]]',
        "when = { hardship_flag = true }": "when = { hardship = true }",
        'name = "test-card"': "",
    }[change]
    assert change in CARD
    with pytest.raises(SegmentationError) as caught:
        parse_segmentation(CARD.replace(change, broken, 1), "strategies/bad.toml")
    text = str(caught.value)
    assert text.startswith("strategies/bad.toml: field '") and field in text and message in text


def test_not_toml_at_all_is_refused_naming_the_file() -> None:
    with pytest.raises(SegmentationError, match=r"^x\.toml: not valid TOML"):
        parse_segmentation("name = ", "x.toml")


# ------------------------------------------------------------------ assignment


def test_assignment_is_deterministic_from_the_experiment_and_the_loan() -> None:
    experiment = parse_experiment(EXPERIMENT, "exp.toml")
    first = [assign(experiment, "running", "mid", f"L-{n}") for n in range(200)]
    again = [assign(experiment, "running", "mid", f"L-{n}") for n in range(200)]
    assert first == again
    assert bucket("exp-1", "L-7") == bucket("exp-1", "L-7") and 0 <= bucket("exp-1", "L-7") < 10_000
    other = parse_experiment(EXPERIMENT.replace('"exp-1"', '"exp-2"'), "exp.toml")
    assert [a.arm for a in first] != [assign(other, "running", "mid", f"L-{n}").arm for n in range(200)]


def test_shares_hold_over_ten_thousand_loans() -> None:
    experiment = parse_experiment(EXPERIMENT, "exp.toml")
    mid = [assign(experiment, "running", "mid", f"LOAN-{n:05d}") for n in range(10_000)]
    share = sum(a.arm == "early-call" for a in mid) / len(mid)
    assert abs(share - 0.20) <= 0.015
    assert all(a.in_test and a.experiment == "exp-1" for a in mid)
    assert {a.policy for a in mid if a.arm == "champion"} == {"default"}
    high = [assign(experiment, "running", "high", f"LOAN-{n:05d}").arm for n in range(10_000)]
    assert abs(high.count("early-call") / 10_000 - 0.10) <= 0.015
    assert abs(high.count("soft") / 10_000 - 0.15) <= 0.015
    assert {a.arm for a in (assign(experiment, "running", "low", f"L-{n}") for n in range(100))} == {"champion"}


def test_paused_gives_the_champion_outside_the_test_and_ended_the_winner() -> None:
    experiment = parse_experiment(EXPERIMENT, "exp.toml")
    loan = next(f"L-{n}" for n in range(1000) if assign(experiment, "running", "mid", f"L-{n}").arm == "early-call")
    assert assign(experiment, "paused", "mid", loan) == Assignment(
        experiment="exp-1", arm="champion", policy="default", in_test=False
    )
    winners = resolve_winners(experiment, "early-call")
    assert winners == {"mid": "early-call", "high": "early-call"}
    assert assign(experiment, "ended", "mid", loan, winners) == Assignment(
        experiment="exp-1", arm="winner", policy="early-call", in_test=False
    )
    assert assign(experiment, "ended", "low", loan, winners).policy == "default"  # no winner named: champion
    assert resolve_winners(experiment, "soft", "high") == {"high": "gentle"}
    assert resolve_winners(experiment, "champion", "mid") == {"mid": "default"}
    assert resolve_winners(experiment, "gentle") == dict.fromkeys(["low", "mid", "high", "gentle"], "gentle")
    assert resolve_winners(experiment, "soft", "mid") == {}
    with pytest.raises(ExperimentError, match="no strategy for segment 'nope'"):
        resolve_winners(experiment, "champion", "nope")


@pytest.mark.parametrize(
    ("change", "broken", "message"),
    [
        ('share = "0.20"', 'share = "1.20"', "segments.mid.challengers.0.share"),
        ('share = "0.20"', 'share = "0.12345"', "more than 4 decimals"),
        ('share = "0.15"', 'share = "0.95"', "sum below 1"),
        ('name = "soft"', 'name = "champion"', "reserved arm name"),
        ('name = "exp-1"', 'name = "Exp 1"', "field 'name'"),
        ('champion = "gentle"', 'champion = "../etc"', "segments.gentle.champion"),
    ],
)
def test_a_broken_experiment_names_the_file_and_the_field(change: str, broken: str, message: str) -> None:
    assert change in EXPERIMENT
    with pytest.raises(ExperimentError) as caught:
        parse_experiment(EXPERIMENT.replace(change, broken, 1), "experiments/bad.toml")
    assert str(caught.value).startswith("experiments/bad.toml: ") and message in str(caught.value)


def test_a_strategy_map_has_champions_only_and_must_cover_the_scorecard() -> None:
    card = parse_segmentation(CARD, "card.toml")
    with pytest.raises(ExperimentError, match="challengers belong in an experiment"):
        parse_strategy_map(EXPERIMENT.replace('name = "exp-1"\n', ""), "map.toml")
    strategy = parse_strategy_map('segmentation = "test-card"\n[segments.low]\nchampion = "default"\n', "map.toml")
    with pytest.raises(ExperimentError, match=r"no strategy for segment\(s\) gentle, high, mid"):
        check_covers(strategy, card, "map.toml")
    extra = parse_experiment(EXPERIMENT + '[segments.lo]\nchampion = "default"\n', "exp.toml")
    with pytest.raises(
        ExperimentError, match=r"^exp\.toml: field 'segments': scorecard test-card has no segment\(s\) lo$"
    ):
        check_covers(extra, card, "exp.toml")


def test_the_shipped_strategies_load_and_their_policies_validate() -> None:
    strategy, card = load_strategy_map(STRATEGIES)
    assert card.segment_names == ["low-risk", "standard", "high-risk", "gentle"]
    experiment, _ = check_experiment(
        (STRATEGIES / "experiments" / "sample.toml").read_text(encoding="utf-8"), "sample.toml", STRATEGIES, POLICIES
    )
    assert experiment.policies() == {"default", "early-call", "gentle"} and strategy.policies() <= experiment.policies()
    gentle, early = load_policy("gentle", POLICIES), load_policy("early-call", POLICIES)
    assert "field_visit" not in {s.action for s in gentle.ladder}
    assert min(s.dpd for s in early.ladder if s.action == "call") == 2
    assert load_segmentation("segmentation", STRATEGIES).name == card.name
    with pytest.raises(SegmentationError, match="no such segmentation file"):
        load_segmentation("nothing-here", STRATEGIES)


def test_old_loan_payloads_parse_without_the_screening_fields() -> None:
    old = {
        "loan_id": "L-1",
        "borrower": {"borrower_id": "B-1", "name": "x"},
        "currency": "CNY",
        "principal": "100.00",
        "due_date": "2026-12-01",
    }
    loan = OverdueLoan.model_validate(old)
    assert (loan.earlier_delinquencies, loan.last_payment_date, loan.hardship_flag) == (0, None, False)


# ------------------------------------------------------------------ what the decider records


def _strategy(arm: str = "early-call", experiment: str = "exp-1") -> StrategyAssignment:
    card = parse_segmentation(CARD, "card.toml")
    return StrategyAssignment(
        screening=screen(card, facts(dpd_at_handover=30)),
        assignment=Assignment(experiment=experiment, arm=arm, policy="default", in_test=True),
    )


def _begin(strategy: StrategyAssignment | None) -> lifecycle.Outcome:
    loan = OverdueLoan(
        loan_id="L-9",
        borrower=Borrower(borrower_id="B-9", name="x"),
        currency="CNY",
        principal=Decimal("1000.00"),
        due_date=date(2026, 12, 1),
    )
    policy = load_policy("default", POLICIES)
    rules = ConductRules(ruleset=load_ruleset("cn", ROOT / "rulesets"))
    return lifecycle.begin(loan, policy, rules, datetime(2026, 12, 2, 4, tzinfo=UTC), strategy=strategy)


def test_begin_records_the_strategy_on_the_timeline_and_in_the_audit_only_when_given() -> None:
    plain = _begin(None)
    assert plain.commands == [] and [e.action for e in plain.state.timeline] == ["collection_started"]
    assert plain.state.strategy is None
    assert {"CollectionSegment", "CollectionArm"}.isdisjoint(
        lifecycle.search_values(plain.state, plain.state.started_at)
    )

    screened = _begin(_strategy())
    assert [e.action for e in screened.state.timeline] == ["collection_started", "strategy_assigned"]
    assert screened.state.timeline[1].outcome == "mid (score 20)"
    [audit] = screened.commands
    assert isinstance(audit, Audit) and audit.req.key == "L-9/strategy" and audit.req.actor == "screening"
    detail = audit.req.detail
    assert (detail["segment"], detail["score"], detail["experiment"], detail["arm"]) == (
        "mid",
        "20",
        "exp-1",
        "early-call",
    )
    assert "dpd_at_handover 30+ +20" in detail["points"]
    values = lifecycle.search_values(screened.state, screened.state.started_at)
    assert (values["CollectionSegment"], values["CollectionArm"]) == ("mid", "exp-1/early-call")
    status = lifecycle.status(screened.state, screened.state.started_at)
    assert status.strategy == screened.state.strategy

    named = _begin(StrategyAssignment(screening=_strategy().screening, assignment=explicit("default")))
    assert lifecycle.search_values(named.state, named.state.started_at)["CollectionArm"] == "explicit"


def test_the_facts_carry_nothing_personal() -> None:
    assert not {"name", "phone", "email", "address", "borrower", "borrower_id"} & set(HandoverFacts.model_fields)
