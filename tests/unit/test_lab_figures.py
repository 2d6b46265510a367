"""The strategy report's figures (`lab.figures`, `lab.compare`) on hand-made loan records with
known answers: recovery rate and curve, the roll-rate matrix, cost per unit recovered, the
bootstrap interval around a known difference, determinism, and the warnings a manager must see
(too few loans, contacts after a refusal, several currencies)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from lab.figures import ALL, compute
from lab.results import LoanResult

HANDOVER = datetime(2026, 6, 1, tzinfo=UTC)


def loan(
    n: int,
    arm: str = "champion",
    *,
    balance: str = "100",
    payments: list[tuple[int, str]] | None = None,
    buckets: list[str] | None = None,
    outcome: str = "open",
    segment: str = "",
    currency: str = "CNY",
    days: int = 180,
    **extra: object,
) -> LoanResult:
    return LoanResult(
        loan_id=f"L{n}",
        borrower_id=f"B{n}",
        segment=segment,
        experiment="exp",
        arm=arm,
        policy="default" if arm == "champion" else arm.replace("-", "_"),
        currency=currency,
        handover_at=HANDOVER,
        handover_dpd=1,
        handover_balance=Decimal(balance),
        days=days,
        payments=[(d, Decimal(a)) for d, a in payments or []],
        buckets=buckets or [],
        outcome=outcome,
        **extra,  # type: ignore[arg-type]
    )


def test_recovery_rate_and_curve_are_ratios_of_sums() -> None:
    f = compute([loan(1, balance="100", payments=[(0, "50")]), loan(2, balance="300", payments=[(40, "100")])])
    (a,) = f.arms
    assert (a.loans, a.handover_balance, a.recovered) == (2, Decimal(400), Decimal(150))
    assert a.recovery_rate == pytest.approx(0.375)
    assert a.curve[0] == pytest.approx(50 / 400)
    assert a.curve[39] == pytest.approx(50 / 400)
    assert a.curve[40] == a.curve[180] == pytest.approx(0.375)
    assert len(a.curve) == 181 and a.curve_loans[180] == 2


def test_the_curve_counts_only_loans_followed_that_long() -> None:
    f = compute([loan(1, balance="100", payments=[(5, "100")], days=10), loan(2, balance="100", days=30)])
    (a,) = f.arms
    assert a.curve[10] == pytest.approx(0.5) and a.curve_loans[10] == 2
    assert a.curve[11] == 0 and a.curve_loans[11] == 1


def test_roll_rate_matrix_counts_transitions_from_open_buckets() -> None:
    f = compute(
        [
            loan(1, buckets=["1-30", "31-60", "paid"], outcome="paid"),
            loan(2, buckets=["1-30", "1-30", "31-60"]),
            loan(3, buckets=["91-180", "written_off", "written_off"], outcome="written_off"),
        ]
    )
    (a,) = f.arms
    assert a.roll_counts["1-30"]["31-60"] == 2 and a.roll_counts["1-30"]["1-30"] == 1
    assert a.roll_rates["1-30"]["31-60"] == pytest.approx(2 / 3)
    assert a.roll_rates["31-60"]["paid"] == 1.0
    assert a.roll_rates["91-180"]["written_off"] == 1.0
    assert all(v is None for v in a.roll_rates["61-90"].values())
    assert "written_off" not in a.roll_counts  # no row for a bucket a loan cannot leave by collection
    assert a.cured == 1 and a.cure_rate == pytest.approx(1 / 3)


def test_cost_per_unit_recovered_contacts_and_counts() -> None:
    f = compute(
        [
            loan(1, payments=[(3, "100")], costs={"sms": Decimal(10)}, contacts={"sms": 4}, promises_made=2),
            loan(2, payments=[(9, "50")], costs={"call_minutes": Decimal(20)}, contacts={"phone": 2}, promises_kept=1),
        ]
    )
    (a,) = f.arms
    assert a.cost == Decimal(30)
    assert a.cost_per_unit == pytest.approx(0.2)
    assert a.contacts_per_loan["sms"] == 2 and a.contacts_per_loan["phone"] == 1 and a.contacts["letter"] == 0
    assert (a.promises_made, a.promises_kept, a.promise_kept_rate) == (2, 1, 0.5)


def portfolio(n: int, champion_cure: float, challenger_cure: float, seed: int = 7) -> list[LoanResult]:
    rnd = random.Random(seed)
    out = []
    for i in range(2 * n):
        arm = "champion" if i % 2 else "early-call"
        cured = rnd.random() < (champion_cure if arm == "champion" else challenger_cure)
        out.append(
            loan(
                i,
                arm,
                balance="1000",
                payments=[(rnd.randint(0, 180), "1000")] if cured else [],
                outcome="paid" if cured else "open",
                costs={"sms": Decimal(5)},
            )
        )
    return out


def test_bootstrap_interval_contains_the_true_difference_and_says_significant() -> None:
    f = compute(portfolio(600, 0.30, 0.45))
    by_metric = {c.metric: c for c in f.comparisons}
    cure = by_metric["cure_rate"]
    assert cure.ci is not None and cure.ci[0] < 0.15 < cure.ci[1]
    assert cure.significant is True and cure.ahead == "challenger"
    assert "Challenger early-call (early_call) cures" in cure.sentence and cure.sentence.endswith(": significant.")
    assert "95 % CI" in cure.sentence
    cost = by_metric["cost_per_unit"]
    assert cost.ahead == "challenger"  # the same cost for more recovered: less per unit


def test_no_difference_is_not_significant() -> None:
    f = compute(portfolio(300, 0.4, 0.4))
    rate = next(c for c in f.comparisons if c.metric == "recovery_rate")
    assert rate.ci is not None
    assert rate.ci[0] < 0 < rate.ci[1] or rate.significant is False
    if not rate.significant:
        assert rate.sentence.endswith("not significant at 95 %.")


def test_same_records_same_figures() -> None:
    records = portfolio(200, 0.3, 0.4)
    first, second = compute(records), compute(records)
    assert [c.ci for c in first.comparisons] == [c.ci for c in second.comparisons]
    assert [c.sentence for c in first.comparisons] == [c.sentence for c in second.comparisons]
    assert [a.ci for a in first.arms] == [a.ci for a in second.arms]


def test_a_small_arm_is_not_compared() -> None:
    f = compute([loan(i, "champion") for i in range(40)] + [loan(100 + i, "early-call") for i in range(5)])
    assert all(not c.enough and c.significant is None for c in f.comparisons)
    assert "too few loans to say anything" in f.comparisons[0].sentence
    assert any("only 5 loan(s)" in w for w in f.warnings)


def test_contacts_after_a_refusal_are_flagged() -> None:
    f = compute([loan(1, contacts_after_refusal=2)])
    assert f.arms[0].contacts_after_refusal == 2
    assert any("This must be zero" in w for w in f.warnings)


def test_currencies_are_never_added_and_segments_get_their_own_figures() -> None:
    records = [
        loan(1, segment="young", balance="100"),
        loan(2, segment="old", balance="200"),
        loan(3, currency="USD", balance="7"),
    ]
    f = compute(records)
    keys = [(a.currency, a.segment, a.arm) for a in f.arms]
    assert keys == [
        ("CNY", ALL, "champion"),
        ("CNY", "old", "champion"),
        ("CNY", "young", "champion"),
        ("USD", ALL, "champion"),
    ]
    assert f.arms[0].handover_balance == Decimal(300) and f.arms[3].handover_balance == Decimal(7)
    assert any("2 currencies" in w for w in f.warnings)
    assert f.loans == 3


def test_arms_outside_the_test_are_shown_but_not_compared() -> None:
    f = compute([loan(i, "champion") for i in range(40)] + [loan(100 + i, "explicit") for i in range(40)])
    assert [a.arm for a in f.arms] == ["champion", "explicit"]
    assert f.comparisons == []


def test_a_challenger_in_some_segments_is_compared_with_the_champion_there_only() -> None:
    """The challenger ran only in `standard` (half cured, like the champion there); the champion
    also has 200 `low-risk` loans that all cured. Against every champion loan the challenger
    would look far worse; against the champion's `standard` loans it is level."""
    results = [loan(i, segment="low-risk", outcome="paid", payments=[(3, "100")]) for i in range(200)]
    results += [
        loan(1000 + i, segment="standard", outcome="paid" if i % 2 else "open", payments=[(9, "100")] if i % 2 else [])
        for i in range(200)
    ]
    results += [
        loan(
            2000 + i,
            "early-call",
            segment="standard",
            outcome="paid" if i % 2 else "open",
            payments=[(9, "100")] if i % 2 else [],
        )
        for i in range(200)
    ]
    f = compute(results, resamples=300)
    overall = next(c for c in f.comparisons if c.segment == ALL and c.metric == "cure_rate")
    assert overall.champion_loans == 200 and overall.difference == pytest.approx(0.0)
    assert not overall.significant
    assert "than the champion in the same segments (standard)" in overall.sentence
