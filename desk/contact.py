"""The conduct guard's answer, previewed: may this person be contacted on this channel now, and
if not, when and under which rule; and how much of the contact budget is left. The same pure
rules the guard decides with (`models.conduct.decide`, `budget`) over the same contact history
(`db.contacts`, every loan of the person), read without the guard's lock and without taking a
slot: looking makes no contact. The guard itself still decides when a contact is made."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from db.contacts import recent_contacts
from desk.state import Desk
from models.conduct import ChannelBudget, ContactRequest, GuardDecision, PastContact, Situation, budget, decide
from models.conduct import history_horizon as horizon

TASK_CHANNEL = {"call": "phone", "field_visit": "visit"}
"""The channel a task's contact uses; other tasks (reviews) contact nobody."""


@dataclass(frozen=True)
class Person:
    """Whom a preview is for: the loan, the person, their zone, the loan's policy and situation."""

    loan_id: str
    borrower_id: str
    timezone: str
    policy: str
    situation: Situation


def histories(desk: Desk, people: Iterable[Person], now: datetime) -> dict[str, list[PastContact]]:
    """Every person's recent contacts in one query (as far back as any rule looks: a week)."""
    people = list(people)
    if not people:
        return {}
    longest = max((horizon(r.ruleset) for p in people if (r := desk.rules(p.policy)) is not None), default=None)
    if longest is None:
        return {}
    with Session(desk.api.engine) as session:
        return recent_contacts(session, (p.borrower_id for p in people), now - longest)


def preview(
    desk: Desk, person: Person, channel: str, history: list[PastContact], now: datetime
) -> GuardDecision | None:
    """The guard's answer for a contact on `channel` now (None: the loan's rules cannot be read)."""
    rules = desk.rules(person.policy)
    if rules is None:
        return None
    request = ContactRequest(
        borrower_id=person.borrower_id,
        loan_id=person.loan_id,
        channel=channel,
        purpose="escalation",
        at=now,
        timezone=person.timezone,
    )
    return decide(request, history, rules.ruleset, person.situation, frozenset(rules.holidays))


def budgets(desk: Desk, person: Person, history: list[PastContact], now: datetime) -> list[ChannelBudget]:
    rules = desk.rules(person.policy)
    return [] if rules is None else budget(now, history, rules.ruleset)
