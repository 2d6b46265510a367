"""The daily scan's database side, without a Temporal server: the keyset walk over the book, the
once-only record of a hand-over, and the loan a book row makes (the pure part:
tests/unit/test_scan.py)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from db.book import CollectionStart, overdue_loan, read_page, record_start
from models.scan import OPEN, next_cursor
from tests.helpers import book_row

AS_OF = date(2026, 11, 28)


# ----------------------------------------------------------------------------- the book


def fill(engine: Engine) -> set[str]:
    """A mixed book; returns the ids a page read must return (open, due before AS_OF, not
    handed over), whatever their grace."""
    rows, expected = [], set()
    for i in range(120):
        kind = i % 6
        due = {
            0: AS_OF - timedelta(days=1 + i),
            1: AS_OF + timedelta(days=i),
            2: AS_OF,
            3: AS_OF - timedelta(days=2),
            4: AS_OF - timedelta(days=30),
            5: AS_OF - timedelta(days=5),
        }[kind]
        row = book_row(f"L{i:04d}", due, grace=3 if kind == 3 else 0, status="closed" if kind == 4 else OPEN)
        rows.append(row)
        if kind in (0, 3, 5):
            expected.add(row.loan_id)
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    for i in range(5, 120, 12):  # every other kind-5 row was handed over already
        record_start(
            engine,
            CollectionStart(
                loan_id=f"L{i:04d}",
                workflow_id=f"collection-L{i:04d}",
                scan_id="earlier",
                as_of=AS_OF - timedelta(days=1),
                outcome="started",
            ),
        )
        expected.discard(f"L{i:04d}")
    return expected


def walk(engine: Engine, limit: int, record_every: int = 0) -> list[str]:
    """Page through the book as the scan does; with `record_every`, hand over every n-th row
    read before reading the next page (as a concurrent scan might)."""
    seen: list[str] = []
    cursor, done = "", False
    while not done:
        page = read_page(engine, AS_OF, cursor, limit)
        cursor, done = next_cursor(cursor, [r.loan_id for r in page], limit)
        seen += [r.loan_id for r in page]
        for row in page[::record_every] if record_every else []:
            record_start(
                engine,
                CollectionStart(loan_id=row.loan_id, workflow_id="w", scan_id="other", as_of=AS_OF, outcome="started"),
            )
    return seen


@pytest.mark.parametrize("limit", [1, 7, 40, 1000])
def test_keyset_walk_reads_each_candidate_once_in_id_order(engine: Engine, limit: int) -> None:
    expected = fill(engine)
    seen = walk(engine, limit)
    assert seen == sorted(expected)


def test_rows_handed_over_during_a_walk_do_not_shift_the_pages(engine: Engine) -> None:
    expected = fill(engine)
    assert walk(engine, 5, record_every=2) == sorted(expected)  # records land behind the cursor only
    with Session(engine) as session:
        recorded = set(session.exec(select(CollectionStart.loan_id).where(CollectionStart.scan_id == "other")).all())
    assert walk(engine, 5) == sorted(expected - recorded)


def test_a_hand_over_is_recorded_once_and_the_first_record_stays(engine: Engine) -> None:
    first = CollectionStart(loan_id="L1", workflow_id="collection-L1", scan_id="scan-a", as_of=AS_OF, outcome="started")
    again = CollectionStart(loan_id="L1", workflow_id="collection-L1", scan_id="scan-b", as_of=AS_OF, outcome="running")
    assert record_start(engine, first) is True
    assert record_start(engine, again) is False
    with Session(engine) as session:
        rows = session.exec(select(CollectionStart)).all()
    assert [(r.loan_id, r.scan_id, r.outcome) for r in rows] == [("L1", "scan-a", "started")]


def test_a_book_row_makes_the_loan_collection_starts_from(engine: Engine) -> None:
    with Session(engine) as session:
        session.add(book_row("L9", AS_OF - timedelta(days=3), principal="1234.56"))
        session.commit()
    row = read_page(engine, AS_OF, "", 10)[0]
    loan = overdue_loan(row)
    assert (loan.loan_id, loan.principal, loan.interest, loan.fees, loan.currency) == (
        "L9",
        Decimal("1234.56"),
        Decimal("10.00"),
        Decimal(0),
        "CNY",
    )
    assert loan.due_date == AS_OF - timedelta(days=3) and loan.borrower.timezone == "Asia/Shanghai"
