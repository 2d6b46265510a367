"""The figures a template may use, computed from the workflow state (pure, so workflows
can build them and tests can check them)."""

from __future__ import annotations

from datetime import datetime, timedelta

from models.loan import Stage
from models.money import quantize
from models.schedule import days_past_due, local_date
from models.status import CollectionState


def template_context(
    state: CollectionState, now: datetime, stage: Stage, deadline_days: int | None = None, **extra: str
) -> dict[str, str]:
    """Strings for templates: borrower, amounts by component, dates in the borrower's zone."""
    loan, policy, balance = state.loan, state.policy, state.balance
    tz = loan.borrower.timezone
    today = local_date(now, tz)

    def money(value: object) -> str:
        return f"{quantize(value, loan.currency):,}"  # type: ignore[arg-type]

    context = {
        "loan_id": loan.loan_id,
        "borrower_name": loan.borrower.name,
        "borrower_address": loan.borrower.address,
        "currency": loan.currency,
        "amount_due": money(balance.total),
        "principal": money(balance.principal),
        "interest": money(balance.interest),
        "fees": money(balance.fees),
        "penalties": money(balance.penalties),
        "paid_total": money(state.paid_total),
        "due_date": loan.due_date.isoformat(),
        "dpd": str(days_past_due(now, loan.due_date, tz, state.paused_days)),
        "today": today.isoformat(),
        "stage": str(stage),
        "lender_name": policy.lender.name,
        "lender_phone": policy.lender.phone,
        "lender_website": policy.lender.website,
        "dispute_contact": policy.lender.dispute_contact,
    }
    if deadline_days is not None:
        context["deadline"] = (today + timedelta(days=deadline_days)).isoformat()
    return {**context, **extra}
