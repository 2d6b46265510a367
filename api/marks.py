"""Keeping `desk_loan_marks` (`db.desk_marks`) up to date: each time the desk reads a loan's
status, and each time a task outcome, a negotiation request or a payment goes through the API or
the desk, the balance, the arrangement's next due date and the loan's situation are written
down, so the desk's queue can order by them without asking the loans again. A mark that cannot
be written is logged and skipped: it only orders the queue, the loan itself is the truth."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import Session

from api.state import ApiState, in_thread
from db.desk_marks import LoanMark
from models import CollectionStatus, PaymentReceipt

log = logging.getLogger("collections.api")


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


async def mark(state: ApiState, status: CollectionStatus) -> None:
    """`save_mark` off the event loop; a database error is logged, never the caller's failure."""
    try:
        await in_thread(save_mark, state, status)
    except SQLAlchemyError as exc:
        log.warning("desk mark of a loan not written: %s", type(exc).__name__)


def save_paid(state: ApiState, receipt: PaymentReceipt) -> None:
    """After a payment: the balance left (the arrangement's dates follow at the next status read)."""
    with Session(state.engine) as session:
        row = session.get(LoanMark, receipt.loan_id)
        if row is None:
            return  # never marked: the queue orders it by its hand-over amount until it is read
        row.outstanding, row.refreshed_at = receipt.outstanding.total, datetime.now(UTC)
        session.add(row)
        session.commit()


async def mark_paid(state: ApiState, receipt: PaymentReceipt) -> None:
    try:
        await in_thread(save_paid, state, receipt)
    except SQLAlchemyError as exc:
        log.warning("desk mark of a loan not written: %s", type(exc).__name__)
