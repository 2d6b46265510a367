"""The lending platform's loan book, as the daily scan reads it, and the record of which loans
the scan handed to collection.

`book_loans` is the platform's side: every loan it has granted, written and updated by the
platform (one row per loan, with the first unpaid due date, the grace and the book status).
`loans` (db/tables.py) is collection's side, written when a loan enters collection.
`collection_starts` is where the two meet: one row per loan the scan handed over, unique by
loan id, so no two scans (or two attempts of one page) can record a loan twice.

Kept out of anything a workflow imports (the sandbox would define the tables twice).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Column, Engine, exists
from sqlmodel import Field, Session, SQLModel, col, select

from db.store import insert_once
from db.tables import utcnow
from db.types import Money, UtcDateTime
from models.loan import Borrower, OverdueLoan
from models.scan import OPEN


def _money(default: str | None = None) -> Decimal:
    if default is None:
        return Field(sa_column=Column(Money(), nullable=False))
    return Field(default=Decimal(default), sa_column=Column(Money(), nullable=False))


class BookLoan(SQLModel, table=True):
    """A loan on the platform's book. `due_date` is the first unpaid due date (the platform
    moves it on when an instalment is paid); `status` is `current` while the loan is open.

    The scan's query ("open, due before the scan date, not handed over, after the cursor, in
    loan-id order, LIMIT n") walks this primary key from the cursor and probes the primary key
    of `collection_starts` for each open past-due row: one pass over the book per scan, no
    sort, and a page stops as soon as it has n rows. Measured plans (`bench/scan.py` prints
    them): SQLite and PostgreSQL 15 both walk the primary key (PostgreSQL as a merge anti-join
    with an index-only scan of collection_starts). An index on (status, due_date) was tried
    and not used by either on the benchmark's book, so the platform's writes do not pay for one.
    The borrower's fields are the platform's copy, so a row makes a whole `OverdueLoan`
    without another table."""

    __tablename__ = "book_loans"

    loan_id: str = Field(primary_key=True)
    borrower_id: str
    borrower_name: str
    phone: str = ""
    email: str = ""
    address: str = ""
    timezone: str = "Asia/Shanghai"
    language: str = "zh"
    currency: str
    principal: Decimal = _money()
    interest: Decimal = _money("0")
    fees: Decimal = _money("0")
    penalties: Decimal = _money("0")
    product: str = "consumer"
    due_date: date
    grace_days: int = 0
    policy: str = "default"
    status: str = OPEN
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class CollectionStart(SQLModel, table=True):
    """A loan the scan handed to collection: its workflow, the scan and the date it scanned
    for, and what Temporal answered (`started` a new workflow, found one `running`, or found
    one that had `closed`). The loan id is the key: recorded once, whoever is first."""

    __tablename__ = "collection_starts"

    loan_id: str = Field(primary_key=True)
    workflow_id: str
    scan_id: str = Field(index=True)
    as_of: date
    outcome: str  # started | running | closed
    started_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


def read_page(engine: Engine, as_of: date, after: str, limit: int) -> list[BookLoan]:
    """Up to `limit` open loans due before `as_of`, not yet handed over, with ids after
    `after`, in loan-id order. A superset of the newly overdue (grace is checked by
    `models.scan.is_newly_overdue`, so the rule lives in one place)."""
    handed_over = exists().where(col(CollectionStart.loan_id) == col(BookLoan.loan_id))
    query = (
        select(BookLoan)
        .where(BookLoan.status == OPEN, BookLoan.due_date < as_of, BookLoan.loan_id > after, ~handed_over)
        .order_by(BookLoan.loan_id)
        .limit(limit)
    )
    with Session(engine, expire_on_commit=False) as session:
        return list(session.exec(query).all())


def record_start(engine: Engine, start: CollectionStart) -> bool:
    """Record a hand-over once per loan; False if the loan was recorded already (by an earlier
    attempt or by another scan), in which case the stored row stays as it was."""
    _, existed = insert_once(engine, start, "loan_id")
    return not existed


def overdue_loan(row: BookLoan) -> OverdueLoan:
    """The snapshot collection starts from (raises pydantic's ValidationError for a row that
    cannot be one: no amount owed, an unknown zone, an id collection cannot use)."""
    borrower = Borrower(
        borrower_id=row.borrower_id,
        name=row.borrower_name,
        phone=row.phone,
        email=row.email,
        address=row.address,
        timezone=row.timezone,
        language=row.language,
    )
    return OverdueLoan(
        loan_id=row.loan_id,
        borrower=borrower,
        currency=row.currency,
        principal=row.principal,
        interest=row.interest,
        fees=row.fees,
        penalties=row.penalties,
        due_date=row.due_date,
        product=row.product,
    )
