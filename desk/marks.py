"""Keeping `desk_loan_marks` (`db.desk_marks`) up to date: each time the desk reads a loan's
status it writes down the balance, the arrangement's next due date and the loan's situation, so
the queue can order by them without asking the loan again."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from api.state import ApiState
from db.desk_marks import LoanMark
from models import CollectionStatus


def save_mark(state: ApiState, status: CollectionStatus) -> None:
    """Write what `status` says of the loan (one row per loan, replaced)."""
    arrangement = status.arrangement
    with Session(state.engine) as session:
        row = session.get(LoanMark, status.loan_id) or LoanMark(
            loan_id=status.loan_id, outstanding=status.outstanding.total, currency=status.currency
        )
        row.outstanding, row.currency = status.outstanding.total, status.currency
        row.next_due = arrangement.next_due_date if arrangement is not None and not status.closed else None
        row.stopped = status.stop is not None
        row.held = bool(status.holds)
        row.paused = status.paused_reason is not None
        row.opted_out = ",".join(status.opted_out)
        row.refreshed_at = datetime.now(UTC)
        session.add(row)
        try:
            session.commit()
        except IntegrityError:  # another request wrote the loan's first mark a moment before
            session.rollback()
