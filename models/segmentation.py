"""Screening at hand-over: a scorecard (a TOML file, validated here like a policy) turns what is
known about a loan when it is handed over (`HandoverFacts`) into points per attribute, a score
and a segment; explicit overrides send some loans to a segment whatever their score (a known
hardship, a dispute on another loan of the borrower). `screen` says which band of each attribute
gave how many points and which override matched, so anyone can see why a loan got its strategy.

Pure: no I/O, no clock. `infra.loaders.load_segmentation` reads the file; the start activity
(`activities.start`) gathers the facts and the strategy lab (`lab/`) screens synthetic loans
with the same function.

The file:

    name = "handover"
    [attributes]                       # any of the attributes below; one not listed scores 0
    dpd_at_handover = [ { at_least = 0, below = 8, points = 0 }, { at_least = 8, points = 10 } ]
    product = [ { values = ["consumer"], points = 0 }, { other = true, points = 10 } ]
    hardship_flag = [ { value = true, points = 0 }, { value = false, points = 0 } ]
    days_since_last_payment = [ { missing = true, points = 15 }, { at_least = 0, points = 0 } ]
    [attributes.outstanding]           # per currency, in the currency's major units
    CNY = [ { at_least = 0, below = 5000, points = 0 }, { at_least = 5000, points = 10 } ]
    [[segments]]                       # by score, lowest first; the last has no `below`
    name = "low-risk"
    below = 20
    [[segments]]
    name = "high-risk"
    [[overrides]]                      # first match wins, before the score's segment
    name = "hardship"
    segment = "gentle"
    when = { hardship_flag = true }    # every condition must hold: a value, or {at_least, below}

Numeric bands are `[at_least, below)`: they must follow each other without gap or overlap from
0 (or from the first band's `at_least` with no bound) to no upper bound, so every value has
exactly one band. Outstanding bands are per currency, in major units of that currency (a CNY
band and a USD band are not the same money, and no exchange rate belongs in a scorecard); a
loan in a currency the scorecard does not list cannot be screened (`ScreeningError`).
"""

from __future__ import annotations

import hashlib
import itertools
import tomllib
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from models.loan import OverdueLoan
from models.money import Amount, Currency
from models.policy import describe
from models.schedule import days_past_due, local_date

NUMERIC_ATTRIBUTES = (
    "dpd_at_handover",
    "earlier_delinquencies",
    "days_since_last_payment",
    "other_loans_in_collection",
)
FLAG_ATTRIBUTES = ("hardship_flag", "dispute_on_other_loan")
ATTRIBUTES = (*NUMERIC_ATTRIBUTES[:1], "outstanding", "product", *NUMERIC_ATTRIBUTES[1:], *FLAG_ATTRIBUTES)
"""Every attribute a scorecard may give points for, in the order `screen` reports them."""


class SegmentationError(ValueError):
    """A scorecard file that cannot be used; the message names the file and the field."""


class ScreeningError(ValueError):
    """A loan the scorecard cannot screen (its currency has no outstanding bands)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HandoverFacts(_Strict):
    """What is known about a loan when it is handed over: the loan's own fields and, from the
    database, the borrower's other loans. No name, contact or address: nothing personal."""

    dpd_at_handover: int = Field(ge=0)
    outstanding: Amount = Field(ge=0)
    currency: Currency
    product: str
    earlier_delinquencies: int = Field(default=0, ge=0)
    days_since_last_payment: int | None = Field(default=None, ge=0)
    """None: the borrower never paid (or the platform did not say)."""
    other_loans_in_collection: int = Field(default=0, ge=0)
    hardship_flag: bool = False
    dispute_on_other_loan: bool = False


class Band(_Strict):
    """One band of an attribute and its points. Numeric attributes use `at_least`/`below`
    (and `missing` for an unknown value), `product` uses `values` (or `other`), the flags `value`."""

    label: str = ""
    points: int = Field(ge=-1000, le=1000)
    at_least: Decimal | None = None
    below: Decimal | None = None
    missing: bool = False
    values: list[str] | None = None
    other: bool = False
    value: bool | None = None

    @model_validator(mode="after")
    def _bounds(self) -> Band:
        if self.at_least is not None and self.below is not None and self.below <= self.at_least:
            raise ValueError(f"band below ({self.below}) must be above at_least ({self.at_least})")
        return self

    @property
    def name(self) -> str:
        """The label, or one made from the band's bounds ("8-30", "91+", "consumer,car", "true")."""
        if self.label:
            return self.label
        if self.missing:
            return "missing"
        if self.other:
            return "other"
        if self.values is not None:
            return ",".join(self.values)
        if self.value is not None:
            return str(self.value).lower()
        low = self.at_least if self.at_least is not None else "min"
        if self.below is None:
            return f"{low}+"
        top = self.below - 1 if self.below == self.below.to_integral_value() else self.below
        return f"{low}-{top}" if top != low else f"{low}"

    def kind(self) -> Literal["range", "missing", "values", "other", "value"]:
        if self.missing:
            return "missing"
        if self.other:
            return "other"
        if self.values is not None:
            return "values"
        if self.value is not None:
            return "value"
        return "range"


def _check_ranges(bands: list[Band], allow_missing: bool) -> None:
    """Range bands follow each other without gap or overlap, up to no upper bound."""
    ranges = [b for b in bands if b.kind() == "range"]
    others = [b for b in bands if b.kind() != "range"]
    wrong = [b.kind() for b in others if not (allow_missing and b.kind() == "missing")]
    if wrong:
        raise ValueError(f"a numeric attribute takes at_least/below bands, not {wrong[0]}")
    if len(others) > 1:
        raise ValueError("at most one 'missing' band")
    if not ranges:
        raise ValueError("needs at least one at_least/below band")
    if ranges[0].at_least not in (None, Decimal(0)):
        raise ValueError(f"the first band must start at 0 (or have no at_least), not {ranges[0].at_least}")
    for before, after in itertools.pairwise(ranges):
        if before.below is None or after.at_least != before.below:
            raise ValueError(
                f"bands must follow each other: band {before.name!r} ends below {before.below}, "
                f"the next starts at {after.at_least}"
            )
    if ranges[-1].below is not None:
        raise ValueError(f"the last band must have no 'below' (values from {ranges[-1].below} have no band)")


def _check_product(bands: list[Band]) -> None:
    kinds = {b.kind() for b in bands}
    if not kinds <= {"values", "other"}:
        raise ValueError("product bands take 'values' (a list of products) or 'other = true'")
    if [b.kind() for b in bands].count("other") != 1:
        raise ValueError("product needs exactly one 'other = true' band (products not listed)")
    seen: set[str] = set()
    for band in bands:
        twice = seen & set(band.values or [])
        if twice:
            raise ValueError(f"product {min(twice)!r} is in two bands")
        seen |= set(band.values or [])


def _check_flag(bands: list[Band]) -> None:
    if any(b.kind() != "value" for b in bands) or sorted(str(b.value) for b in bands) != ["False", "True"]:
        raise ValueError("a flag takes two bands: 'value = true' and 'value = false'")


class Attributes(_Strict):
    """The attributes that score, each a list of bands (outstanding: per currency)."""

    dpd_at_handover: list[Band] | None = None
    outstanding: dict[Currency, list[Band]] | None = None
    product: list[Band] | None = None
    earlier_delinquencies: list[Band] | None = None
    days_since_last_payment: list[Band] | None = None
    other_loans_in_collection: list[Band] | None = None
    hardship_flag: list[Band] | None = None
    dispute_on_other_loan: list[Band] | None = None

    @field_validator(*NUMERIC_ATTRIBUTES)
    @classmethod
    def _numeric(cls, bands: list[Band] | None, info: ValidationInfo) -> list[Band] | None:
        if bands is not None:
            _check_ranges(bands, info.field_name == "days_since_last_payment")
        return bands

    @field_validator("outstanding")
    @classmethod
    def _money(cls, by_currency: dict[str, list[Band]] | None) -> dict[str, list[Band]] | None:
        for currency, bands in (by_currency or {}).items():
            try:
                _check_ranges(bands, False)
            except ValueError as exc:
                raise ValueError(f"{currency}: {exc}") from exc
        return by_currency

    @field_validator("product")
    @classmethod
    def _product(cls, bands: list[Band] | None) -> list[Band] | None:
        if bands is not None:
            _check_product(bands)
        return bands

    @field_validator(*FLAG_ATTRIBUTES)
    @classmethod
    def _flag(cls, bands: list[Band] | None) -> list[Band] | None:
        if bands is not None:
            _check_flag(bands)
        return bands


class Segment(_Strict):
    """Scores below `below` (and at or above the segment before) fall in this segment."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    below: int | None = None
    description: str = ""


class Range(_Strict):
    at_least: Decimal | None = None
    below: Decimal | None = None


Condition = bool | int | str | Range


class Override(_Strict):
    """Loans whose facts match every condition of `when` go to `segment`, whatever their score."""

    name: str = Field(min_length=1, max_length=64)
    segment: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    when: dict[str, Condition] = Field(min_length=1)
    description: str = ""

    @field_validator("when")
    @classmethod
    def _known(cls, when: dict[str, Condition]) -> dict[str, Condition]:
        unknown = sorted(set(when) - set(HandoverFacts.model_fields))
        if unknown:
            raise ValueError(f"unknown fact(s) {unknown} (known: {', '.join(HandoverFacts.model_fields)})")
        return when

    def matches(self, facts: HandoverFacts) -> bool:
        return all(_holds(getattr(facts, name), cond) for name, cond in self.when.items())


def _holds(value: Any, cond: Condition) -> bool:
    if isinstance(cond, Range):
        if value is None:
            return False
        return (cond.at_least is None or value >= cond.at_least) and (cond.below is None or value < cond.below)
    if isinstance(cond, bool) or isinstance(value, bool):
        return value is cond
    return bool(value == cond)


class Scorecard(_Strict):
    """A whole segmentation: points per attribute band, segments by score, overrides."""

    name: str = Field(min_length=1, max_length=64)
    description: str = ""
    version: str = ""
    attributes: Attributes = Field(default_factory=Attributes)
    segments: list[Segment] = Field(min_length=1)
    overrides: list[Override] = []

    @field_validator("segments")
    @classmethod
    def _ordered(cls, segments: list[Segment]) -> list[Segment]:
        bounds = [s.below for s in segments]
        if bounds[-1] is not None:
            raise ValueError(f"the last segment ({segments[-1].name}) must have no 'below': it takes the rest")
        if any(b is None for b in bounds[:-1]):
            raise ValueError("every segment but the last needs 'below'")
        rising = [b for b in bounds[:-1] if b is not None]
        if rising != sorted(set(rising)):
            raise ValueError("segments must be in score order: each 'below' above the one before")
        names = [s.name for s in segments]
        if len(set(names)) != len(names):
            raise ValueError("two segments share a name")
        return segments

    @property
    def segment_names(self) -> list[str]:
        """Every segment a loan can get: by score, then those only overrides lead to."""
        names = [s.name for s in self.segments]
        return names + sorted({o.segment for o in self.overrides} - set(names))


class ScorePoint(_Strict):
    """What one attribute gave: its band and the points."""

    attribute: str
    band: str
    points: int


class Screening(_Strict):
    """A loan's screening: its segment, score and the points that made it, the override that
    decided the segment (None: the score did), and the scorecard (name and version) used."""

    segment: str
    score: int
    points: list[ScorePoint]
    override: str | None = None
    scorecard: str
    scorecard_version: str

    def summary(self) -> str:
        """One line for the timeline and the audit: `dpd_at_handover 8-30 +10, product other +10`."""
        return ", ".join(f"{p.attribute} {p.band} {p.points:+d}" for p in self.points)


def _band_for(bands: list[Band], value: Any) -> Band:
    """The band `value` falls in (the scorecard's validation makes sure there is one)."""
    for band in bands:
        match band.kind():
            case "missing":
                found = value is None
            case "range":
                found = (
                    value is not None
                    and (band.at_least is None or value >= band.at_least)
                    and (band.below is None or value < band.below)
                )
            case "values":
                found = value in (band.values or [])
            case "value":
                found = value is band.value
            case _:
                found = False
        if found:
            return band
    other = next((b for b in bands if b.kind() == "other"), None)
    if other is None or value is None:
        raise ScreeningError(f"no band for value {value!r}")
    return other


def handover_facts(
    loan: OverdueLoan, at: datetime, other_loans: int = 0, dispute_on_other_loan: bool = False
) -> HandoverFacts:
    """What the scorecard looks at for `loan` handed over at `at`: its own fields and, from the
    caller (the start activity reads the database, the simulator its portfolio), how many other
    loans of the borrower are in collection and whether one of them has a dispute open."""
    tz = loan.borrower.timezone
    today = local_date(at, tz)
    return HandoverFacts(
        dpd_at_handover=days_past_due(at, loan.due_date, tz),
        outstanding=loan.balance().total,
        currency=loan.currency,
        product=loan.product,
        earlier_delinquencies=loan.earlier_delinquencies,
        days_since_last_payment=(
            max(0, (today - loan.last_payment_date).days) if loan.last_payment_date is not None else None
        ),
        other_loans_in_collection=other_loans,
        hardship_flag=loan.hardship_flag,
        dispute_on_other_loan=dispute_on_other_loan,
    )


def screen(card: Scorecard, facts: HandoverFacts) -> Screening:
    """Score `facts` on `card` and choose the segment: the first override that matches, else the
    segment of the score. Raises `ScreeningError` for a currency without outstanding bands."""
    points: list[ScorePoint] = []
    for name in ATTRIBUTES:
        bands = getattr(card.attributes, name)
        if bands is None:
            continue
        if name == "outstanding":
            if facts.currency not in bands:
                raise ScreeningError(
                    f"scorecard {card.name} has no outstanding bands for {facts.currency}"
                    f" (it has {', '.join(sorted(bands))})"
                )
            band = _band_for(bands[facts.currency], facts.outstanding)
        else:
            band = _band_for(bands, getattr(facts, name))
        points.append(ScorePoint(attribute=name, band=band.name, points=band.points))
    score = sum(p.points for p in points)
    override = next((o for o in card.overrides if o.matches(facts)), None)
    segment = override.segment if override else _segment_of(card, score)
    return Screening(
        segment=segment,
        score=score,
        points=points,
        override=override.name if override else None,
        scorecard=card.name,
        scorecard_version=card.version,
    )


def _segment_of(card: Scorecard, score: int) -> str:
    return next(s.name for s in card.segments if s.below is None or score < s.below)


def parse_segmentation(text: str, source: str) -> Scorecard:
    """Validate TOML text as a scorecard; `source` names the file in error messages. Its
    version is the text's hash unless the file sets one (as for policies)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SegmentationError(f"{source}: not valid TOML: {exc}") from exc
    data.setdefault("version", hashlib.sha256(text.encode()).hexdigest()[:12])
    try:
        return Scorecard.model_validate(data)
    except ValidationError as exc:
        raise SegmentationError(describe(source, exc)) from exc
