"""What the desk last read of each loan (`desk_loan_marks`), so that the work queue can be ordered
in one query over the database instead of asking every loan's workflow: the outstanding balance,
the next date an arrangement is due (a promise's date, a plan's next instalment, a settlement's
deadline) and whether the loan is stopped, on hold, paused or opted out of channels.

Written by the desk each time it reads a loan's status (opening it, after an outcome or a
request), so a mark may be older than the loan: the queue page says so, and the loan page always
reads the loan itself. A loan never opened at the desk has no mark; the queue then uses what the
platform handed over (`loans`)."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlmodel import Field, SQLModel

from db.tables import money_field, utcnow
from db.types import UtcDateTime


class LoanMark(SQLModel, table=True):
    __tablename__ = "desk_loan_marks"

    loan_id: str = Field(primary_key=True)
    outstanding: Decimal = money_field()
    currency: str
    next_due: date | None = Field(default=None, index=True)
    """The arrangement's next due date (None: no open arrangement)."""
    stopped: bool = False
    held: bool = False
    paused: bool = False
    opted_out: str = ""
    """Comma-separated channels the borrower opted out of."""
    refreshed_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
