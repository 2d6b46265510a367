"""The report's figures per strategy and arm, from per-loan records (`lab.results.LoanResult`).

Pure (no I/O, no clock): the simulator's report, the live report, the CLI and the API all call
`compute` on a list of records and get the same figures, in the same order, every time (the
bootstrap's random draws come from a fixed seed, `lab.compare`).

Loans are grouped by currency (a report never adds two currencies, so a portfolio in two
currencies gets two sets of figures), then by segment ("all", and each segment as well when
the loans come from more than one) and by arm. A "strategy" is the arm with the policies its
loans ran under: the champion of "all" may run a different policy in each segment.

Why one pass over the records and then numpy: a simulated portfolio has up to 100,000 loans;
the records are read once into flat arrays (balances, recoveries, payments by day, snapshot
transitions) and every figure of every group is a sum over an index of those arrays.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import numpy as np
import numpy.typing as npt

from lab import compare
from lab.results import BUCKETS, CHANNELS, COST_KINDS, LoanResult

ALL = "all"
"""The segment of the figures over every loan of an arm, whatever its segment."""

UNSCREENED = "unscreened"
"""How the report names the segment of loans the screening did not see (`segment == ""`)."""

CHAMPION = "champion"
NOT_IN_TEST = frozenset({"winner", "explicit"})
"""Arms the report shows but never compares: loans given the winner after an experiment ended,
and loans whose policy the platform named; neither was assigned at random."""

OPEN_BUCKETS: tuple[str, ...] = BUCKETS[:4]
"""The roll-rate matrix's rows: a loan can only roll from a bucket it is still open in."""

_BUCKET_INDEX = {name: i for i, name in enumerate(BUCKETS)}

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class GroupKey:
    currency: str
    segment: str
    arm: str


@dataclass(frozen=True, slots=True)
class ArmFigures:
    """One arm of one segment in one currency. Shares are fractions (0.25 = 25 %); a figure
    whose denominator is zero is None (no balance, nothing recovered, no promise)."""

    currency: str
    segment: str
    arm: str
    policies: tuple[str, ...]
    loans: int
    days: int
    """The longest record (the simulation's horizon; in a live report, the oldest loan's age)."""
    handover_balance: Decimal
    recovered: Decimal
    recovery_rate: float | None
    curve: tuple[float | None, ...]
    """Share of the hand-over balance recovered by day d (index d, 0..days), over the loans
    whose record is at least d days long (all of them in a simulation)."""
    curve_loans: tuple[int, ...]
    """How many loans each day of the curve counts."""
    cured: int
    cure_rate: float | None
    outcomes: dict[str, int]
    roll_counts: dict[str, dict[str, int]]
    """Transitions between consecutive snapshots: from an open bucket (rows, `OPEN_BUCKETS`) to
    any bucket (`BUCKETS`)."""
    roll_rates: dict[str, dict[str, float | None]]
    """`roll_counts` as shares of each row (None for a row without transitions)."""
    cost: Decimal
    costs: dict[str, Decimal]
    cost_per_unit: float | None
    """Cost to collect per unit recovered (cost / recovered)."""
    contacts: dict[str, int]
    contacts_per_loan: dict[str, float]
    call_minutes: Decimal
    guard: dict[str, int]
    promises_made: int
    promises_kept: int
    promises_broken: int
    promise_kept_rate: float | None
    """Kept / made: a promise still open at the end counts as not kept."""
    plans: int
    plans_kept: int
    plans_broken: int
    settlements: int
    hardships: int
    disputes: int
    contacts_after_refusal: int
    fees_posted: Decimal
    charged_off: Decimal
    ci: dict[str, tuple[float, float] | None] = field(default_factory=dict)
    """95 % bootstrap interval of this arm's own recovery_rate, cure_rate, cost_per_unit."""

    @property
    def key(self) -> GroupKey:
        return GroupKey(self.currency, self.segment, self.arm)

    @property
    def small(self) -> bool:
        """Too few loans for its rates to mean much (`compare.MIN_LOANS`)."""
        return self.loans < compare.MIN_LOANS

    @property
    def in_test(self) -> bool:
        return self.arm not in NOT_IN_TEST

    @property
    def label(self) -> str:
        """How the report names the strategy: the arm and its policies."""
        who = "champion" if self.arm == CHAMPION else self.arm if self.arm in NOT_IN_TEST else f"challenger {self.arm}"
        return f"{who} ({', '.join(self.policies)})" if self.policies else who


@dataclass(frozen=True, slots=True)
class Figures:
    arms: list[ArmFigures]
    comparisons: list[compare.Comparison]
    warnings: list[str]
    matched: list[tuple[ArmFigures, str]] = field(default_factory=list)
    """The champion's loans in the segments where a challenger ran, with those segments named:
    what the overall comparison and the overall recovery curve set the challenger against."""
    """What a manager must not miss: contacts after a refusal or opt-out (must be zero),
    arms too small to say anything, several currencies."""

    @property
    def loans(self) -> int:
        return sum(a.loans for a in self.arms if a.segment == ALL)

    def sections(self) -> list[tuple[str, str, list[ArmFigures]]]:
        """(currency, segment, its arms) in report order."""
        out: dict[tuple[str, str], list[ArmFigures]] = {}
        for a in self.arms:
            out.setdefault((a.currency, a.segment), []).append(a)
        return [(c, s, arms) for (c, s), arms in out.items()]


# ------------------------------------------------------------------ reading the records once


@dataclass
class _Acc:
    """Exact totals of one group, summed in the one pass over the records."""

    loans: list[int] = field(default_factory=list)
    policies: set[str] = field(default_factory=set)
    balance: Decimal = Decimal(0)
    recovered: Decimal = Decimal(0)
    cost: Decimal = Decimal(0)
    costs: dict[str, Decimal] = field(default_factory=dict)
    contacts: dict[str, int] = field(default_factory=dict)
    guard: dict[str, int] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    counts: Counter[str] = field(default_factory=Counter)
    call_minutes: Decimal = Decimal(0)
    fees_posted: Decimal = Decimal(0)
    charged_off: Decimal = Decimal(0)


_COUNTED = (
    "promises_made",
    "promises_kept",
    "promises_broken",
    "plans",
    "plans_kept",
    "plans_broken",
    "settlements",
    "hardships",
    "disputes",
    "contacts_after_refusal",
)


@dataclass
class _Arrays:
    """The records as flat arrays, one row per loan (payments and transitions: one row each)."""

    balance: F64
    recovered: F64
    cured: F64
    cost: F64
    days: I64
    pay_loan: I64
    pay_day: I64
    pay_amount: F64
    roll_loan: I64
    roll_cell: I64
    """from-bucket index * len(BUCKETS) + to-bucket index."""


def _read(results: Sequence[LoanResult]) -> tuple[dict[GroupKey, _Acc], _Arrays]:
    """One pass: each loan's totals into its cell (currency, segment, arm) and its numbers
    into the arrays."""
    cells: dict[GroupKey, _Acc] = {}
    n = len(results)
    balance, recovered, cured, cost = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    days = np.zeros(n, dtype=np.int64)
    pay_loan: list[int] = []
    pay_day: list[int] = []
    pay_amount: list[float] = []
    roll_loan: list[int] = []
    roll_cell: list[int] = []
    width, open_rows = len(BUCKETS), len(OPEN_BUCKETS)
    for i, r in enumerate(results):
        key = GroupKey(r.currency, r.segment or UNSCREENED, r.arm)
        acc = cells.get(key)
        if acc is None:
            acc = cells[key] = _Acc()
        got = _add(acc, i, r)
        balance[i], recovered[i], cured[i] = float(r.handover_balance), float(got), r.outcome in _CURED
        cost[i] = float(sum(r.costs.values())) if r.costs else 0.0
        days[i] = r.days
        for day, amount in r.payments:
            pay_loan.append(i)
            pay_day.append(min(max(day, 0), r.days))
            pay_amount.append(float(amount))
        b = r.buckets
        for j in range(len(b) - 1):
            start = _BUCKET_INDEX[b[j]]
            if start < open_rows:
                roll_loan.append(i)
                roll_cell.append(start * width + _BUCKET_INDEX[b[j + 1]])
    arrays = _Arrays(
        balance=balance,
        recovered=recovered,
        cured=cured,
        cost=cost,
        days=days,
        pay_loan=np.asarray(pay_loan, dtype=np.int64),
        pay_day=np.asarray(pay_day, dtype=np.int64),
        pay_amount=np.asarray(pay_amount, dtype=np.float64),
        roll_loan=np.asarray(roll_loan, dtype=np.int64),
        roll_cell=np.asarray(roll_cell, dtype=np.int64),
    )
    return cells, arrays


_CURED = frozenset({"paid", "settled"})


def _add(acc: _Acc, i: int, r: LoanResult) -> Decimal:
    """Add loan `i` to its cell; returns what it recovered."""
    got = sum((amount for _, amount in r.payments), Decimal(0))
    acc.loans.append(i)
    acc.policies.add(r.policy)
    acc.balance += r.handover_balance
    acc.recovered += got
    _sum_into(acc.costs, r.costs)
    _sum_into(acc.contacts, r.contacts)
    _sum_into(acc.guard, r.guard)
    acc.outcomes[r.outcome] += 1
    acc.call_minutes += r.call_minutes
    acc.fees_posted += r.fees_posted
    acc.charged_off += r.charged_off
    counts = acc.counts
    for name in _COUNTED:
        value = getattr(r, name)
        if value:
            counts[name] += value
    return got


def _sum_into(target: dict[str, Any], source: dict[str, Any]) -> None:
    for k, v in source.items():
        target[k] = target.get(k, 0) + v


def _merge(cells: list[_Acc]) -> _Acc:
    """The accumulator of several cells (an arm over all its segments)."""
    if len(cells) == 1:
        return cells[0]
    out = _Acc()
    for c in cells:
        out.loans += c.loans
        out.policies |= c.policies
        out.balance += c.balance
        out.recovered += c.recovered
        out.cost += c.cost
        _sum_into(out.costs, c.costs)
        _sum_into(out.contacts, c.contacts)
        _sum_into(out.guard, c.guard)
        out.outcomes.update(c.outcomes)
        out.counts.update(c.counts)
        out.call_minutes += c.call_minutes
        out.fees_posted += c.fees_posted
        out.charged_off += c.charged_off
    out.loans.sort()
    return out


def _groups(cells: dict[GroupKey, _Acc]) -> dict[GroupKey, list[GroupKey]]:
    """Each group the report shows and the cells it is made of: every arm over all segments,
    and each segment's arms too when a currency's loans come from more than one segment."""
    groups: dict[GroupKey, list[GroupKey]] = {}
    segments: dict[str, set[str]] = {}
    for key in cells:
        segments.setdefault(key.currency, set()).add(key.segment)
        groups.setdefault(GroupKey(key.currency, ALL, key.arm), []).append(key)
    for key in cells:
        if len(segments[key.currency]) > 1:
            groups[key] = [key]
    return groups


# ------------------------------------------------------------------ the figures of a group


def _ratio(num: float | Decimal | int, den: float | Decimal | int) -> float | None:
    return float(num) / float(den) if den else None


def _curve(idx: I64, a: _Arrays) -> tuple[tuple[float | None, ...], tuple[int, ...]]:
    """Cumulative recovered share by day: a payment on day p counts from p to its loan's last
    day; a loan's balance counts on every day its record covers (difference arrays, then
    cumulative sums)."""
    horizon = int(a.days[idx].max()) if len(idx) else 0
    length = horizon + 2
    mask = np.zeros(len(a.balance), dtype=bool)
    mask[idx] = True
    pays = mask[a.pay_loan] if len(a.pay_loan) else np.zeros(0, dtype=bool)
    loan_of, amount = a.pay_loan[pays], a.pay_amount[pays]
    got = np.bincount(a.pay_day[pays], weights=amount, minlength=length)
    got -= np.bincount(a.days[loan_of] + 1, weights=amount, minlength=length)
    owed = np.bincount(np.zeros(len(idx), dtype=np.int64), weights=a.balance[idx], minlength=length)
    owed -= np.bincount(a.days[idx] + 1, weights=a.balance[idx], minlength=length)
    counted = np.bincount(a.days[idx] + 1, minlength=length)
    loans = len(idx) - np.cumsum(counted)[:-1]
    num, den = np.cumsum(got)[:-1], np.cumsum(owed)[:-1]
    shares = tuple(float(x) / float(y) if y > 1e-9 else None for x, y in zip(num, den, strict=True))
    return shares, tuple(int(x) for x in loans)


def _rolls(idx: I64, a: _Arrays) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, float | None]]]:
    mask = np.zeros(len(a.balance), dtype=bool)
    mask[idx] = True
    width = len(BUCKETS)
    cells = a.roll_cell[mask[a.roll_loan]] if len(a.roll_loan) else a.roll_cell
    flat = np.bincount(cells, minlength=len(OPEN_BUCKETS) * width)
    counts = {
        start: {end: int(flat[i * width + j]) for j, end in enumerate(BUCKETS)} for i, start in enumerate(OPEN_BUCKETS)
    }
    rates = {start: {end: _ratio(n, sum(row.values())) for end, n in row.items()} for start, row in counts.items()}
    return counts, rates


def _figures(key: GroupKey, acc: _Acc, a: _Arrays) -> ArmFigures:
    idx = np.asarray(acc.loans, dtype=np.int64)
    n = len(idx)
    curve, curve_loans = _curve(idx, a)
    roll_counts, roll_rates = _rolls(idx, a)
    cured = acc.outcomes["paid"] + acc.outcomes["settled"]
    counts = acc.counts
    return ArmFigures(
        currency=key.currency,
        segment=key.segment,
        arm=key.arm,
        policies=tuple(sorted(acc.policies)),
        loans=n,
        days=int(a.days[idx].max()) if n else 0,
        handover_balance=acc.balance,
        recovered=acc.recovered,
        recovery_rate=_ratio(acc.recovered, acc.balance),
        curve=curve,
        curve_loans=curve_loans,
        cured=cured,
        cure_rate=_ratio(cured, n),
        outcomes=dict(sorted(acc.outcomes.items())),
        roll_counts=roll_counts,
        roll_rates=roll_rates,
        cost=acc.cost,
        costs={k: acc.costs.get(k, Decimal(0)) for k in COST_KINDS},
        cost_per_unit=_ratio(acc.cost, acc.recovered),
        contacts={c: acc.contacts.get(c, 0) for c in CHANNELS},
        contacts_per_loan={c: acc.contacts.get(c, 0) / n for c in CHANNELS},
        call_minutes=acc.call_minutes,
        guard=dict(sorted(acc.guard.items())),
        promises_made=counts["promises_made"],
        promises_kept=counts["promises_kept"],
        promises_broken=counts["promises_broken"],
        promise_kept_rate=_ratio(counts["promises_kept"], counts["promises_made"]),
        plans=counts["plans"],
        plans_kept=counts["plans_kept"],
        plans_broken=counts["plans_broken"],
        settlements=counts["settlements"],
        hardships=counts["hardships"],
        disputes=counts["disputes"],
        contacts_after_refusal=counts["contacts_after_refusal"],
        fees_posted=acc.fees_posted,
        charged_off=acc.charged_off,
    )


def _order(key: GroupKey) -> tuple[str, int, str, int, str]:
    arm_rank = 0 if key.arm == CHAMPION else 2 if key.arm in NOT_IN_TEST else 1
    return (key.currency, key.segment != ALL, key.segment, arm_rank, key.arm)


# ------------------------------------------------------------------ the whole


def compute(results: Sequence[LoanResult], *, resamples: int = compare.RESAMPLES, seed: int = compare.SEED) -> Figures:
    """Every arm's figures, the challenger-minus-champion differences with their bootstrap
    intervals and sentences, and the warnings. Same records, same figures."""
    cells, arrays = _read(results)
    draws: dict[GroupKey, compare.Resampled] = {}
    for key, acc in cells.items():
        acc.cost = sum(acc.costs.values(), Decimal(0))
        idx = np.asarray(acc.loans, dtype=np.int64)
        draws[key] = compare.resample(
            arrays.balance[idx],
            arrays.recovered[idx],
            arrays.cured[idx],
            arrays.cost[idx],
            key=f"{key.currency}/{key.segment}/{key.arm}",
            resamples=resamples,
            seed=seed,
        )
    arms: list[ArmFigures] = []
    sums: dict[GroupKey, compare.Resampled] = {}
    groups = _groups(cells)
    for key in sorted(groups, key=_order):
        parts = groups[key]
        sums[key] = sum((draws[p] for p in parts[1:]), draws[parts[0]])
        figures = _figures(key, _merge([cells[p] for p in parts]), arrays)
        ci = {metric: compare.interval(compare.statistic(sums[key], metric)) for metric in compare.METRICS}
        arms.append(replace(figures, ci=ci))
    matched = _matched_champions(arms, cells, draws, arrays)
    shown = {", ".join(segments): same for same, _, segments in matched.values()}
    return Figures(
        arms=arms,
        comparisons=_comparisons(arms, sums, matched),
        warnings=_warnings(arms),
        matched=[(same, where) for where, same in shown.items()],
    )


def _matched_champions(
    arms: list[ArmFigures], cells: dict[GroupKey, _Acc], draws: dict[GroupKey, compare.Resampled], arrays: _Arrays
) -> dict[GroupKey, tuple[ArmFigures, compare.Resampled, list[str]]]:
    """For each challenger across all segments: the champion's loans in the segments where the
    challenger was offered, and those segments. A challenger that runs in some segments only
    is compared with the champion there, not with every champion loan (low-risk loans the
    challenger never met would flatter or sink the champion)."""
    out: dict[GroupKey, tuple[ArmFigures, compare.Resampled, list[str]]] = {}
    for a in arms:
        if a.segment != ALL or a.arm == CHAMPION or not a.in_test:
            continue
        segments = sorted({k.segment for k in cells if k.currency == a.currency and k.arm == a.arm})
        parts = [GroupKey(a.currency, s, CHAMPION) for s in segments if GroupKey(a.currency, s, CHAMPION) in cells]
        if not parts:
            continue
        key = GroupKey(a.currency, ALL, CHAMPION)
        figures = _figures(key, _merge([cells[p] for p in parts]), arrays)
        resampled = sum((draws[p] for p in parts[1:]), draws[parts[0]])
        out[a.key] = (figures, resampled, segments)
    return out


def _comparisons(
    arms: list[ArmFigures],
    sums: dict[GroupKey, compare.Resampled],
    matched: dict[GroupKey, tuple[ArmFigures, compare.Resampled, list[str]]],
) -> list[compare.Comparison]:
    out: list[compare.Comparison] = []
    by_key = {a.key: a for a in arms}
    for a in arms:
        if a.arm == CHAMPION or not a.in_test:
            continue
        champion = by_key.get(GroupKey(a.currency, a.segment, CHAMPION))
        if champion is None:
            continue
        if a.key in matched:
            same, resampled, segments = matched[a.key]
            for m in compare.METRICS:
                c = compare.compare(m, same, a, resampled, sums[a.key])
                if same.loans != champion.loans:
                    where = f"than the champion in the same segments ({', '.join(segments)})"
                    c = replace(c, sentence=c.sentence.replace("than the champion", where, 1))
                out.append(c)
            continue
        out.extend(compare.compare(m, champion, a, sums[champion.key], sums[a.key]) for m in compare.METRICS)
    return out


def _warnings(arms: list[ArmFigures]) -> list[str]:
    everyone = [a for a in arms if a.segment == ALL]
    warnings = [
        f"{a.label}: {a.contacts_after_refusal} contact(s) after the borrower opted out or after "
        "collection was stopped. This must be zero: find out why before anything else."
        for a in everyone
        if a.contacts_after_refusal
    ]
    for a in arms:
        if a.small:
            where = "" if a.segment == ALL else f" in segment {a.segment}"
            warnings.append(
                f"{a.label}{where} has only {a.loans} loan(s): too few to say anything "
                f"(at least {compare.MIN_LOANS} are needed)."
            )
    currencies = sorted({a.currency for a in everyone})
    if len(currencies) > 1:
        warnings.append(
            f"The loans are in {len(currencies)} currencies ({', '.join(currencies)}): each has its own figures; "
            "amounts in different currencies are never added."
        )
    return warnings
