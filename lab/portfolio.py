"""A synthetic portfolio drawn from a scenario: loans, their borrowers, hand-over moments and
the facts the screening sees. Same scenario and seed, same portfolio: each borrower draws from
a `random.Random` of their own (seeded with the seed and their number), so any process can
build any borrower's loans.

No personal data: names, phones and addresses are placeholders (the simulator sends nothing).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from decimal import Decimal

from lab.scenario import Profile, Scenario
from models.loan import Borrower, OverdueLoan
from models.money import quantize
from models.schedule import at_local


@dataclass(frozen=True, slots=True)
class SimLoan:
    """A synthetic loan at hand-over, with what the screening may know about it."""

    loan: OverdueLoan
    profile: Profile
    handover_at: datetime
    handover_dpd: int
    earlier_delinquencies: int
    days_since_last_payment: int
    hardship_flag: bool
    other_loans_in_collection: int
    """Loans of the same borrower already in collection when this one is handed over."""


def _pick(rng: random.Random, weights: dict[str, Decimal]) -> str:
    roll = Decimal(rng.random())
    acc = Decimal(0)
    for name, weight in weights.items():
        acc += weight
        if roll < acc:
            return name
    return next(reversed(weights))


def _profile(rng: random.Random, scenario: Scenario) -> Profile:
    name = _pick(rng, {p.name: p.share for p in scenario.profiles})
    return next(p for p in scenario.profiles if p.name == name)


def _principal(rng: random.Random, profile: Profile, currency: str) -> Decimal:
    """Log-uniform in the profile's range, in whole units: small loans are many."""
    low, high = (math.log(float(v)) for v in profile.balance)
    return quantize(Decimal(round(math.exp(rng.uniform(low, high)))), currency)


def plan_portfolio(scenario: Scenario, loans: int, seed: int) -> list[tuple[int, int, int]]:
    """(borrower number, number of their first loan, how many loans) until there are `loans`
    loans: one draw per borrower (a second loan or not), so a process can build any borrower's
    loans on its own (`build_person`) without drawing everyone before them."""
    plan: list[tuple[int, int, int]] = []
    total, borrower_no = 0, 0
    second = float(scenario.portfolio.second_loan)
    while total < loans:
        borrower_no += 1
        n = min(2 if _rng(seed, borrower_no, "second").random() < second else 1, loans - total)
        plan.append((borrower_no, total + 1, n))
        total += n
    return plan


def build_portfolio(scenario: Scenario, loans: int, seed: int) -> list[SimLoan]:
    """`loans` synthetic loans (a borrower's second loan counts as one of them)."""
    return [sim for person in plan_portfolio(scenario, loans, seed) for sim in build_person(scenario, seed, *person)]


def _rng(seed: int, borrower_no: int, what: str) -> random.Random:
    return random.Random(f"portfolio:{seed}:{borrower_no}:{what}")


def build_person(scenario: Scenario, seed: int, borrower_no: int, first_no: int, count: int) -> list[SimLoan]:
    """Borrower `borrower_no`'s loans (numbered from `first_no`), from their own generator."""
    rng = _rng(seed, borrower_no, "loans")
    pf = scenario.portfolio
    profile = _profile(rng, scenario)
    tz = _pick(rng, pf.timezones)
    borrower = Borrower(
        borrower_id=f"SB-{borrower_no:07d}",
        name="Sim Borrower",
        phone="+0000000000",
        email="sim@example.invalid",
        address="Sim Street 1",
        timezone=tz,
        language=pf.language,
    )
    day = pf.handover_from + timedelta(days=rng.randrange(pf.handover_days))
    handover = at_local(day, time(rng.randrange(8, 20), rng.randrange(60)), tz)
    dpd = rng.randint(*profile.dpd)
    delinquencies = rng.randint(*profile.earlier_delinquencies)
    since_payment = rng.randint(*profile.days_since_last_payment)
    hardship = rng.random() < float(profile.hardship_flag)
    gap = rng.randint(2, 6)
    out: list[SimLoan] = []
    for n in range(count):
        principal = _principal(rng, profile, pf.currency)
        loan = OverdueLoan(
            loan_id=f"SIM-{first_no + n:07d}",
            borrower=borrower,
            currency=pf.currency,
            principal=principal,
            interest=quantize(principal * profile.interest_rate, pf.currency),
            fees=quantize(principal * profile.fee_rate, pf.currency),
            due_date=day + timedelta(days=gap * n) - timedelta(days=dpd),
            product=_pick(rng, profile.products),
            earlier_delinquencies=delinquencies,
            last_payment_date=day + timedelta(days=gap * n) - timedelta(days=since_payment + gap * n),
            hardship_flag=hardship,
        )
        out.append(
            SimLoan(
                loan=loan,
                profile=profile,
                handover_at=handover + timedelta(days=gap * n),
                handover_dpd=dpd,
                earlier_delinquencies=delinquencies,
                days_since_last_payment=since_payment + gap * n,
                hardship_flag=hardship,
                other_loans_in_collection=n,
            )
        )
    return out
