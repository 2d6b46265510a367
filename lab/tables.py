"""The figures as flat tables, one per CSV file the report writes beside report.html, for a
spreadsheet or another tool. Pure: (header, rows) only; `lab.report` writes them.

Raw values, not the report's formatting: shares as fractions (0.253), money as exact decimal
strings with a currency column, cost per unit recovered per unit (not per 100), empty cells
where a figure has no value. Every row starts with currency, segment and arm.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from lab.compare import Comparison
from lab.figures import OPEN_BUCKETS, ArmFigures, Figures
from lab.results import BUCKETS, CHANNELS, COST_KINDS

Table = tuple[list[str], list[list[str]]]
_KEY = ["currency", "segment", "arm"]


def cell(value: object) -> str:
    """A CSV cell: None empty, floats with 6 decimals, decimals exact, booleans yes/no."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}"
    if isinstance(value, Decimal):
        return str(value)
    return str(value)


def _key(a: ArmFigures) -> list[str]:
    return [a.currency, a.segment, a.arm]


def summary(f: Figures) -> Table:
    header = [
        *_KEY,
        "policies",
        "loans",
        "days",
        "handover_balance",
        "recovered",
        "recovery_rate",
        "recovery_rate_ci_low",
        "recovery_rate_ci_high",
        "cured",
        "cure_rate",
        "cure_rate_ci_low",
        "cure_rate_ci_high",
        "cost",
        "cost_per_unit",
        "cost_per_unit_ci_low",
        "cost_per_unit_ci_high",
        "call_minutes",
        "fees_posted",
        "charged_off",
        "too_few_loans",
    ]
    rows = []
    for a in f.arms:

        def ci(metric: str, a: ArmFigures = a) -> list[object]:
            found = a.ci.get(metric)
            return [found[0], found[1]] if found else [None, None]

        row: list[object] = [
            " ".join(a.policies),
            a.loans,
            a.days,
            a.handover_balance,
            a.recovered,
            a.recovery_rate,
            *ci("recovery_rate"),
            a.cured,
            a.cure_rate,
            *ci("cure_rate"),
            a.cost,
            a.cost_per_unit,
            *ci("cost_per_unit"),
            a.call_minutes,
            a.fees_posted,
            a.charged_off,
            a.small,
        ]
        rows.append(_key(a) + [cell(v) for v in row])
    return header, rows


def recovery_curve(f: Figures) -> Table:
    rows = [
        [*_key(a), str(day), str(a.curve_loans[day]), cell(share)] for a in f.arms for day, share in enumerate(a.curve)
    ]
    return [*_KEY, "day", "loans_observed", "recovered_share"], rows


def roll_rates(f: Figures) -> Table:
    rows = [
        [*_key(a), start, end, str(a.roll_counts[start][end]), cell(a.roll_rates[start][end])]
        for a in f.arms
        for start in OPEN_BUCKETS
        for end in BUCKETS
    ]
    return [*_KEY, "from_bucket", "to_bucket", "loans", "share"], rows


def contacts(f: Figures) -> Table:
    rows = [[*_key(a), ch, str(a.contacts[ch]), cell(a.contacts_per_loan[ch])] for a in f.arms for ch in CHANNELS]
    return [*_KEY, "channel", "contacts", "per_loan"], rows


def guard(f: Figures) -> Table:
    rows = []
    for a in f.arms:
        for name, count in a.guard.items():
            verdict, _, rule = name.partition(":")
            rows.append([*_key(a), verdict, rule, str(count)])
    return [*_KEY, "verdict", "rule", "decisions"], rows


def costs(f: Figures) -> Table:
    rows = [[*_key(a), kind, cell(a.costs[kind])] for a in f.arms for kind in COST_KINDS]
    return [*_KEY, "kind", "cost"], rows


ARRANGEMENT_FIELDS = (
    "promises_made",
    "promises_kept",
    "promises_broken",
    "promise_kept_rate",
    "plans",
    "plans_kept",
    "plans_broken",
    "settlements",
    "hardships",
    "disputes",
    "contacts_after_refusal",
)


def arrangements(f: Figures) -> Table:
    rows = [[*_key(a), *(cell(getattr(a, name)) for name in ARRANGEMENT_FIELDS)] for a in f.arms]
    return [*_KEY, *ARRANGEMENT_FIELDS], rows


def outcomes(f: Figures) -> Table:
    rows = [[*_key(a), name, str(n)] for a in f.arms for name, n in a.outcomes.items()]
    return [*_KEY, "outcome", "loans"], rows


def differences(f: Figures) -> Table:
    header = [
        "currency",
        "segment",
        "metric",
        "champion",
        "challenger",
        "champion_loans",
        "challenger_loans",
        "champion_value",
        "challenger_value",
        "difference",
        "ci_low",
        "ci_high",
        "significant",
        "ahead",
        "sentence",
    ]

    def row(c: Comparison) -> list[str]:
        low, high = c.ci or (None, None)
        values: list[object] = [
            c.currency,
            c.segment,
            c.metric,
            c.champion,
            c.challenger,
            c.champion_loans,
            c.challenger_loans,
            c.champion_value,
            c.challenger_value,
            c.difference,
            low,
            high,
            "" if c.significant is None else c.significant,
            c.ahead,
            c.sentence,
        ]
        return [cell(v) for v in values]

    return header, [row(c) for c in f.comparisons]


ALL_TABLES: dict[str, Callable[[Figures], Table]] = {
    "summary.csv": summary,
    "differences.csv": differences,
    "recovery_curve.csv": recovery_curve,
    "roll_rates.csv": roll_rates,
    "contacts.csv": contacts,
    "guard.csv": guard,
    "costs.csv": costs,
    "arrangements.csv": arrangements,
    "outcomes.csv": outcomes,
}
"""Each CSV file the report writes, and the table it holds."""
