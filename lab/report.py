"""The strategy report: `DIR/report.html` and the figures as CSV files beside it.

One HTML file with its CSS inline and its pictures as base64 PNG, so a manager can mail it or
open it on a plane: nothing is loaded from anywhere. The simulator's report and the live
report (`starter.py report`) are the same function on different records, so they read alike.

Money is printed rounded to the currency's minor unit with the currency code; shares as
percentages with one decimal; the cost to collect per 100 units recovered.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape

from lab import plots, tables
from lab.compare import MIN_LOANS, PER, RESAMPLES, Comparison
from lab.figures import ALL, OPEN_BUCKETS, ArmFigures, Figures, compute
from lab.results import BUCKETS, CHANNELS, COST_KINDS, LoanResult
from models.money import quantize

TEMPLATES = Path(__file__).parent / "templates"
_ENV = Environment(
    loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]), trim_blocks=True, lstrip_blocks=True
)


def write_report(results: list[LoanResult], out: Path, *, title: str, context: dict[str, str]) -> Path:
    """Compute the figures of `results` and write report.html and the CSV files into `out`
    (made if missing); returns the path of report.html. `context`: what the reader must know
    first (scenario, seed, period, database ...), shown at the top in the order given."""
    figures = compute(results)
    return write_figures(figures, out, title=title, context=context)


def write_figures(figures: Figures, out: Path, *, title: str, context: dict[str, str]) -> Path:
    """`write_report` for figures already computed (the CLI prints their sentences too)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, table in tables.ALL_TABLES.items():
        header, rows = table(figures)
        with (out / name).open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    html = render(figures, title=title, context=context)
    path = out / "report.html"
    path.write_text(html, encoding="utf-8")
    return path


def render(figures: Figures, *, title: str, context: dict[str, str]) -> str:
    """The report's HTML."""
    template = _ENV.get_template("report.html")
    return template.render(
        title=title,
        context=context,
        loans=figures.loans,
        warnings=figures.warnings,
        headline=[c for c in figures.comparisons if c.segment == ALL],
        sections=[
            _section(currency, segment, arms, figures.comparisons, figures.matched)
            for currency, segment, arms in figures.sections()
        ],
        csv_files=list(tables.ALL_TABLES),
        min_loans=MIN_LOANS,
        resamples=RESAMPLES,
        per=PER,
    )


# ------------------------------------------------------------------ what the template shows


NONE = "\u2013"
"""An en dash: the figure has no value (nothing to divide by)."""


def money(amount: Decimal, currency: str) -> str:
    """1,234.50 CNY (rounded to the currency's minor unit)."""
    return f"{quantize(amount, currency):,} {currency}"


def pct(share: float | None) -> str:
    return NONE if share is None else f"{100 * share:.1f} %"


def _ci_pct(ci: tuple[float, float] | None) -> str:
    return "" if ci is None else f"{100 * ci[0]:.1f} to {100 * ci[1]:.1f} %"


def _per(value: float | None, currency: str) -> str:
    return NONE if value is None else f"{PER * value:.2f} {currency}"


def _ci_per(ci: tuple[float, float] | None, currency: str) -> str:
    return "" if ci is None else f"{PER * ci[0]:.2f} to {PER * ci[1]:.2f} {currency}"


@dataclass
class Section:
    currency: str
    segment: str
    title: str
    arms: list[ArmFigures]
    labels: list[str]
    headline: list[list[str]]
    comparisons: list[Comparison]
    curve_png: str
    cost_png: str
    contacts_png: str
    roll: list[tuple[str, list[list[str]], str]]
    """Per arm: its label, the matrix rows as text, its heat map."""
    costs: list[list[str]]
    contacts: list[list[str]]
    guard: list[list[str]]
    arrangements: list[list[str]]
    complaints: list[list[str]]
    outcomes: list[list[str]]


def _section(
    currency: str,
    segment: str,
    arms: list[ArmFigures],
    comparisons: Sequence[Comparison],
    matched: Sequence[tuple[ArmFigures, str]] = (),
) -> Section:
    c = currency
    title = f"All loans in {c}" if segment == ALL else f"Segment {segment} ({c})"
    labels = [a.label for a in arms]
    headline = [
        [
            a.label + (" (too few loans)" if a.small else ""),
            f"{a.loans:,}",
            money(a.handover_balance, c),
            money(a.recovered, c),
            pct(a.recovery_rate),
            _ci_pct(a.ci.get("recovery_rate")),
            pct(a.cure_rate),
            _ci_pct(a.ci.get("cure_rate")),
            money(a.cost, c),
            _per(a.cost_per_unit, c),
            _ci_per(a.ci.get("cost_per_unit"), c),
        ]
        for a in arms
    ]
    roll = [
        (
            a.label,
            [
                [f"DPD {r}"] + [_roll_cell(a, r, b) for b in BUCKETS] + [str(sum(a.roll_counts[r].values()))]
                for r in OPEN_BUCKETS
            ],
            plots.roll_heatmap(a),
        )
        for a in arms
    ]
    guard_names = sorted({name for a in arms for name in a.guard})
    return Section(
        currency=c,
        segment=segment,
        title=title,
        arms=arms,
        labels=labels,
        headline=headline,
        comparisons=[x for x in comparisons if x.currency == c and x.segment == segment != ALL],  # all: the summary
        curve_png=plots.recovery_curves(
            arms, [(m, where) for m, where in matched if m.currency == c] if segment == ALL else ()
        ),
        cost_png=plots.cost_per_unit(arms),
        contacts_png=plots.contacts(arms),
        roll=roll,
        costs=[[k.replace("_", " ")] + [money(a.costs[k], c) for a in arms] for k in COST_KINDS]
        + [["total"] + [money(a.cost, c) for a in arms]]
        + [["call minutes"] + [f"{a.call_minutes:,}" for a in arms]],
        contacts=[[ch] + [f"{a.contacts_per_loan[ch]:.2f} ({a.contacts[ch]:,})" for a in arms] for ch in CHANNELS],
        guard=[
            [name.partition(":")[0], name.partition(":")[2]] + [f"{a.guard.get(name, 0):,}" for a in arms]
            for name in guard_names
        ],
        arrangements=[
            ["promises made"] + [f"{a.promises_made:,}" for a in arms],
            ["promises kept"] + [f"{a.promises_kept:,} ({pct(a.promise_kept_rate)})" for a in arms],
            ["promises broken"] + [f"{a.promises_broken:,}" for a in arms],
            ["instalment plans agreed"] + [f"{a.plans:,}" for a in arms],
            ["plans completed"] + [f"{a.plans_kept:,}" for a in arms],
            ["plans broken"] + [f"{a.plans_broken:,}" for a in arms],
            ["settlements agreed"] + [f"{a.settlements:,}" for a in arms],
            ["hardship (breathing space)"] + [f"{a.hardships:,}" for a in arms],
        ],
        complaints=[
            ["contacts after an opt-out or a stop (must be 0)"]
            + [f"{a.contacts_after_refusal:,}" + (" ⚠" if a.contacts_after_refusal else "") for a in arms],
            ["disputes raised"] + [f"{a.disputes:,}" for a in arms],
            ["disputes per 1,000 loans"] + [f"{1000 * a.disputes / a.loans:.1f}" for a in arms],
        ],
        outcomes=[
            [name.replace("_", " ")] + [f"{a.outcomes.get(name, 0):,}" for a in arms]
            for name in sorted({n for a in arms for n in a.outcomes})
        ],
    )


def _roll_cell(a: ArmFigures, row: str, column: str) -> str:
    share = a.roll_rates[row][column]
    return "" if share is None or not a.roll_counts[row][column] else pct(share)
