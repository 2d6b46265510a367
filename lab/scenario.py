"""A simulation scenario: the synthetic portfolio (its mix of borrower profiles, balances, time
zones, days past due at hand-over) and how each profile behaves (pays by itself, answers,
promises, keeps promises, reports hardship, disputes), plus what each action costs.

A profile is the scenario's "segment": the borrower as they really are. The scorecard
(`models.segmentation`) only sees the hand-over facts a profile draws, and assigns the lender's
segment from them, so a simulation shows how well the screening sorts real borrowers too.

Validated like a policy: unknown keys and out-of-range chances are errors naming the file.
"""

from __future__ import annotations

import tomllib
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from lab.costs import CostTable
from models.money import Currency

Chance = Decimal
"""A probability, 0 to 1, written as a string in TOML ("0.02")."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _chance(default: str) -> Any:
    return Field(default=Decimal(default), ge=0, le=1)


class Uplift(_Strict):
    """How much a contact adds to the daily chance of paying by oneself, and for how long."""

    sms: Chance = _chance("0.01")
    email: Chance = _chance("0.005")
    letter: Chance = _chance("0.01")
    call: Chance = _chance("0.03")
    """After a call that reached the borrower."""
    visit: Chance = _chance("0.05")
    agency: Chance = _chance("0.01")
    """Every day the account is with an agency."""
    court: Chance = _chance("0.02")
    """Every day after a claim is filed."""
    days: int = Field(default=7, ge=1, le=60)
    """How long a message's, call's or visit's uplift lasts."""


class Behaviour(_Strict):
    """One profile's borrower and how the lender's people fare with them."""

    pay_daily: Chance = _chance("0.02")
    """Chance, each day, of paying by oneself without being contacted lately."""
    uplift: Uplift = Uplift()
    partial: Chance = _chance("0.3")
    """Chance that a payment by oneself is part of the balance rather than all of it."""
    partial_share: tuple[Decimal, Decimal] = (Decimal("0.2"), Decimal("0.6"))
    """A part payment's share of the outstanding balance, drawn uniformly in this range."""
    answer: Chance = _chance("0.4")
    """Chance that a call (or a visit) reaches the borrower."""
    promise: Chance = _chance("0.4")
    """Chance that a reached borrower promises to pay (in full, within the policy's days)."""
    keep: Chance = _chance("0.6")
    """Chance that a promise is kept (paid on or before its date)."""
    plan: Chance = _chance("0.1")
    """Chance that a reached borrower who does not promise asks for an instalment plan."""
    instalments: int = Field(default=6, ge=1, le=36)
    keep_instalment: Chance = _chance("0.8")
    """Chance of paying each instalment on its date."""
    hardship: Chance = _chance("0.02")
    """Chance that a reached borrower reports hardship (a breathing space follows)."""
    dispute: Chance = _chance("0.01")
    """Chance that a reached borrower disputes the debt."""
    dispute_upheld: Chance = _chance("0.2")
    dispute_days: int = Field(default=14, ge=1, le=90)
    """Days the disputes team takes to resolve a dispute."""
    call_report_hours: int = Field(default=3, ge=1, le=23)
    """Hours after a call task is created that the collector reports it (within its deadline)."""
    visit_report_hours: int = Field(default=26, ge=1, le=119)


class Profile(_Strict):
    """A share of the portfolio: what its loans look like at hand-over and how they behave."""

    name: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    share: Decimal = Field(gt=0, le=1)
    balance: tuple[Decimal, Decimal] = (Decimal(1000), Decimal(20000))
    """Principal, drawn log-uniformly in this range (major units)."""
    interest_rate: Decimal = Field(default=Decimal("0.05"), ge=0, le=1)
    fee_rate: Decimal = Field(default=Decimal("0.01"), ge=0, le=1)
    dpd: tuple[int, int] = (1, 10)
    """Days past due at hand-over, uniformly in this range."""
    products: dict[str, Decimal] = {"consumer": Decimal(1)}
    earlier_delinquencies: tuple[int, int] = (0, 2)
    days_since_last_payment: tuple[int, int] = (30, 60)
    hardship_flag: Chance = _chance("0")
    """Chance the borrower told the lender of hardship before hand-over."""
    behaviour: Behaviour = Behaviour()

    @model_validator(mode="after")
    def _ranges(self) -> Profile:
        for name in ("balance", "dpd", "earlier_delinquencies", "days_since_last_payment"):
            low, high = getattr(self, name)
            if low > high or low < 0:
                raise ValueError(f"{name}: need 0 <= low <= high, got {low}, {high}")
        if self.balance[0] <= 0:
            raise ValueError("balance: the lowest principal must be above zero")
        if self.dpd[1] >= 180:
            raise ValueError("dpd: hand-over must be before DPD 180 (write-off)")
        return self


class Portfolio(_Strict):
    """The portfolio as a whole: hand-over dates, currency, time zones, second loans."""

    currency: Currency = "CNY"
    handover_from: date = date(2026, 1, 5)
    handover_days: int = Field(default=28, ge=1, le=366)
    """Loans are handed over on days spread over this many days from `handover_from`."""
    timezones: dict[str, Decimal] = {"Asia/Shanghai": Decimal(1)}
    second_loan: Chance = _chance("0.05")
    """Share of borrowers with a second loan in collection (due a few days after the first):
    the conduct guard's per-person budget counts both."""
    language: str = "zh"


class Scenario(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    portfolio: Portfolio = Portfolio()
    profiles: list[Profile] = Field(min_length=1)
    costs: CostTable = CostTable()

    @model_validator(mode="after")
    def _shares(self) -> Scenario:
        total = sum((p.share for p in self.profiles), Decimal(0))
        if total != 1:
            raise ValueError(f"profiles: shares must add up to 1, they add up to {total}")
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError("profiles: names must be unique")
        if sum(self.portfolio.timezones.values(), Decimal(0)) != 1:
            raise ValueError("portfolio.timezones: weights must add up to 1")
        if self.costs.currency != self.portfolio.currency:
            raise ValueError("costs.currency must be the portfolio's currency")
        return self


def parse_scenario(text: str, source: str) -> Scenario:
    """A scenario's TOML text, validated; `source` names the file in errors."""
    try:
        return Scenario.model_validate(tomllib.loads(text))
    except (ValidationError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"{source}: {exc}") from exc


def load_scenario(path: Path) -> Scenario:
    return parse_scenario(path.read_text(encoding="utf-8"), str(path))
