"""Is the challenger ahead of the champion, and could the difference be chance? Bootstrap
intervals on challenger minus champion, and the sentence a manager reads.

Why the bootstrap: the three headline figures are ratios of sums over loans (recovered /
hand-over balance, cured / loans, cost / recovered) whose loans differ wildly in size, so no
textbook formula fits them well. Resampling loans with replacement within each arm (and
within each segment of it: the experiment splits each segment, so the figures over all segments
keep each segment's share of loans in every resample), 2,000 times, and recomputing the ratio
each time shows how much the figure moves with the luck of which loans an arm got; the 2.5th
and 97.5th percentiles of challenger minus champion are the 95 % interval, and the difference
is "significant" when that interval excludes 0.

Deterministic: each arm's draws come from a generator seeded with `SEED` and the arm's own
name (crc32), so the same records give the same intervals, and adding an arm changes no other
arm's draws. Vectorised: a resample is a vector of counts (how often each loan was drawn), so
the sums of a batch of resamples are one matrix product.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from lab.figures import ArmFigures

RESAMPLES = 2_000
SEED = 20_261_213
MIN_LOANS = 30
"""Below this many loans in an arm the report says nothing about the arm's rates."""

PER = 100
"""Cost to collect is shown per 100 units recovered (0.62 CNY per 100 CNY reads better than
0.0062 per CNY); the CSV files and the API give it per unit."""

LEVEL = 0.95
METRICS: tuple[str, ...] = ("recovery_rate", "cure_rate", "cost_per_unit")
Metric = Literal["recovery_rate", "cure_rate", "cost_per_unit"]

_BATCH_CELLS = 4_000_000
"""Draws per batch (resamples x loans): about 32 MB of indices at a time."""

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Resampled:
    """An arm's bootstrap: per resample, the sums of (balance, recovered, cured, cost)."""

    loans: int
    sums: F64

    def __add__(self, other: Resampled) -> Resampled:
        """Two strata together (an arm's segments): their draws are independent."""
        return Resampled(loans=self.loans + other.loans, sums=self.sums + other.sums)


def resample(balance: F64, recovered: F64, cured: F64, cost: F64, *, key: str, resamples: int, seed: int) -> Resampled:
    """`resamples` draws of the arm's loans with replacement, summed. `key` names the arm (its
    own random stream)."""
    n = len(balance)
    values = np.column_stack([balance, recovered, cured, cost])
    sums = np.zeros((resamples, 4))
    if n == 0:
        return Resampled(loans=0, sums=sums)
    rng = np.random.default_rng([seed, zlib.crc32(key.encode())])
    batch = max(1, min(resamples, _BATCH_CELLS // n))
    for start in range(0, resamples, batch):
        m = min(batch, resamples - start)
        drawn = rng.integers(0, n, size=(m, n), dtype=np.int32) + (np.arange(m, dtype=np.int32) * n)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=m * n).reshape(m, n).astype(np.float64)
        sums[start : start + m] = counts @ values
    return Resampled(loans=n, sums=sums)


def statistic(r: Resampled, metric: str) -> F64:
    """The metric in each resample (NaN where its denominator is zero)."""
    balance, recovered, cured, cost = r.sums.T
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "recovery_rate":
            out = np.where(balance > 0, recovered / balance, np.nan)
        elif metric == "cure_rate":
            out = cured / r.loans if r.loans else np.full(len(cured), np.nan)
        elif metric == "cost_per_unit":
            out = np.where(recovered > 0, cost / recovered, np.nan)
        else:
            raise ValueError(f"unknown metric {metric!r}")
    return np.asarray(out, dtype=np.float64)


def interval(values: F64) -> tuple[float, float] | None:
    """The central 95 % of `values`; None when over 5 % of them are undefined (an arm that
    often recovers nothing has no meaningful cost per unit recovered)."""
    if len(values) == 0 or np.isnan(values).mean() > 0.05:
        return None
    low, high = np.nanpercentile(values, [100 * (1 - LEVEL) / 2, 100 * (1 + LEVEL) / 2])
    return float(low), float(high)


@dataclass(frozen=True, slots=True)
class Comparison:
    """Challenger minus champion on one metric, in one currency and segment."""

    currency: str
    segment: str
    metric: str
    champion: str
    challenger: str
    champion_label: str
    challenger_label: str
    champion_loans: int
    challenger_loans: int
    champion_value: float | None
    challenger_value: float | None
    difference: float | None
    ci: tuple[float, float] | None
    enough: bool
    """Both arms have at least `MIN_LOANS` loans."""
    significant: bool | None
    """The interval excludes 0; None when there are too few loans or no interval."""
    ahead: str | None
    """"challenger", "champion" or None (level, or nothing to say). Lower is better for cost."""
    sentence: str


def compare(metric: str, champion: ArmFigures, challenger: ArmFigures, rc: Resampled, rx: Resampled) -> Comparison:
    """The comparison of `challenger` against `champion` on `metric` (their bootstraps `rc`, `rx`)."""
    a: float | None = getattr(champion, metric)
    b: float | None = getattr(challenger, metric)
    diff = None if a is None or b is None else b - a
    ci = interval(statistic(rx, metric) - statistic(rc, metric))
    enough = champion.loans >= MIN_LOANS and challenger.loans >= MIN_LOANS
    significant = None if not enough or ci is None or diff is None else bool(ci[0] > 0 or ci[1] < 0)
    ahead = None
    if enough and diff:
        better = diff < 0 if metric == "cost_per_unit" else diff > 0
        ahead = "challenger" if better else "champion"
    result = Comparison(
        currency=challenger.currency,
        segment=challenger.segment,
        metric=metric,
        champion=champion.arm,
        challenger=challenger.arm,
        champion_label=champion.label,
        challenger_label=challenger.label,
        champion_loans=champion.loans,
        challenger_loans=challenger.loans,
        champion_value=a,
        challenger_value=b,
        difference=diff,
        ci=ci,
        enough=enough,
        significant=significant,
        ahead=ahead,
        sentence="",
    )
    return replace(result, sentence=sentence(result, _period(champion, challenger)))


def _period(champion: ArmFigures, challenger: ArmFigures) -> str:
    """ "by day 180" when every loan of both arms was followed that long, else "so far"."""
    days = min(champion.days, challenger.days)
    whole = all(
        a.curve_loans and a.curve_loans[min(days, len(a.curve_loans) - 1)] == a.loans for a in (champion, challenger)
    )
    return f"by day {days}" if whole else "so far"


_WHAT = {
    "recovery_rate": ("recovers", "of the hand-over balance"),
    "cure_rate": ("cures", "of its loans (paid or settled)"),
}


def sentence(c: Comparison, period: str) -> str:
    """What a manager reads: who is ahead, by how much, the interval and whether it is
    significant at 95 %."""
    who = c.challenger_label[0].upper() + c.challenger_label[1:]
    if c.segment != "all":
        who = f"In segment {c.segment}, {c.challenger_label}"
    if not c.enough:
        return (
            f"{who} against the champion on {_name(c.metric)}: too few loans to say anything "
            f"({c.challenger_loans} and {c.champion_loans}; at least {MIN_LOANS} in each arm are needed)."
        )
    if c.difference is None:
        return f"{who} against the champion on {_name(c.metric)}: no figure (nothing recovered or no balance)."
    verdict = "significant" if c.significant else "not significant at 95 %"
    if c.metric == "cost_per_unit":
        unit, per = c.currency, PER
        size = f"{abs(per * c.difference):.2f} {unit} {'more' if c.difference > 0 else 'less'}"
        if not c.difference:
            size = "the same"
        ci = f"95 % CI {per * c.ci[0]:.2f} to {per * c.ci[1]:.2f} {unit}" if c.ci else "no interval"
        return f"{who} spends {size} to collect every {per} {unit} recovered than the champion ({ci}): {verdict}."
    verb, of = _WHAT[c.metric]
    points = 100 * c.difference
    size = f"{abs(points):.1f} points {'more' if points > 0 else 'less'}" if points else "the same share"
    ci = f"95 % CI {100 * c.ci[0]:.1f} to {100 * c.ci[1]:.1f} points" if c.ci else "no interval"
    return f"{who} {verb} {size} {of} {period} than the champion ({ci}): {verdict}."


def _name(metric: str) -> str:
    return {"recovery_rate": "recovery rate", "cure_rate": "cure rate", "cost_per_unit": "cost per unit recovered"}[
        metric
    ]
