"""A synthetic portfolio drawn from a scenario: loans, their borrowers, hand-over moments and
the facts the screening sees. Same scenario and seed, same portfolio (every draw comes from one
`random.Random` seeded with the seed, in loan order).

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


def build_portfolio(scenario: Scenario, loans: int, seed: int) -> list[SimLoan]:
    """`loans` synthetic loans (a borrower's second loan counts as one of them)."""
    rng = random.Random(f"portfolio:{seed}")
    pf = scenario.portfolio
    out: list[SimLoan] = []
    borrower_no = 0
    while len(out) < loans:
        borrower_no += 1
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
        clock = time(rng.randrange(8, 20), rng.randrange(60))
        handover = at_local(day, clock, tz)
        dpd = rng.randint(*profile.dpd)
        facts = (
            rng.randint(*profile.earlier_delinquencies),
            rng.randint(*profile.days_since_last_payment),
            rng.random() < float(profile.hardship_flag),
        )
        second = rng.random() < float(pf.second_loan)
        gap = rng.randint(2, 6)
        for n in range(2 if second else 1):
            if len(out) >= loans:
                break
            principal = _principal(rng, profile, pf.currency)
            at = handover + timedelta(days=gap * n)
            loan = OverdueLoan(
                loan_id=f"SIM-{len(out) + 1:07d}",
                borrower=borrower,
                currency=pf.currency,
                principal=principal,
                interest=quantize(principal * profile.interest_rate, pf.currency),
                fees=quantize(principal * profile.fee_rate, pf.currency),
                due_date=day + timedelta(days=gap * n) - timedelta(days=dpd),
                product=_pick(rng, profile.products),
            )
            out.append(
                SimLoan(
                    loan=loan,
                    profile=profile,
                    handover_at=at,
                    handover_dpd=dpd,
                    earlier_delinquencies=facts[0],
                    days_since_last_payment=facts[1] + gap * n,
                    hardship_flag=facts[2],
                    other_loans_in_collection=n,
                )
            )
    return out
