"""The daily scan's pure part: which rows of the book are newly overdue, the scan date, the
cursor, the totals, and which book rows can be loans (the database side: tests/db/test_scan.py;
the replay of recorded scan histories: tests/replay/test_scan_histories.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from db.book import BookLoan, overdue_loan
from models.scan import OPEN, ScanTotals, collection_day, is_newly_overdue, next_cursor, scan_date
from tests.helpers import book_row

AS_OF = date(2026, 11, 28)


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("days_late", "grace", "status", "expected"),
    [
        (1, 0, OPEN, True),  # due yesterday, no grace: DPD 1
        (0, 0, OPEN, False),  # due today: not late yet
        (-5, 0, OPEN, False),  # not due for five days
        (3, 3, OPEN, False),  # last day of grace
        (4, 3, OPEN, True),  # first day after grace
        (400, 3, OPEN, True),  # long overdue and never handed over: handed over now
        (10, 0, "closed", False),  # paid off or sold: never
    ],
)
def test_newly_overdue_after_due_date_and_grace(days_late: int, grace: int, status: str, expected: bool) -> None:
    assert is_newly_overdue(status, AS_OF - timedelta(days=days_late), grace, AS_OF) is expected


@given(
    due=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
    grace=st.integers(0, 60),
    as_of=st.dates(date(2020, 1, 1), date(2030, 12, 31)),
)
def test_newly_overdue_exactly_when_days_past_due_exceed_grace(due: date, grace: int, as_of: date) -> None:
    assert is_newly_overdue(OPEN, due, grace, as_of) is ((as_of - due).days > grace)
    assert is_newly_overdue(OPEN, due, grace, collection_day(due, grace))
    assert not is_newly_overdue(OPEN, due, grace, collection_day(due, grace) - timedelta(days=1))


def test_scan_date_is_the_calendar_day_in_the_scan_zone() -> None:
    at = datetime(2026, 11, 28, 17, 0, tzinfo=UTC)  # 01:00 on the 29th in Shanghai
    assert scan_date(at, "Asia/Shanghai") == date(2026, 11, 29)
    assert scan_date(at, "UTC") == date(2026, 11, 28)
    assert scan_date(at, "America/New_York") == date(2026, 11, 28)


# ----------------------------------------------------------------------------- the cursor


def test_cursor_moves_to_the_last_id_and_a_short_page_ends_the_walk() -> None:
    assert next_cursor("", ["a", "b", "c"], 3) == ("c", False)
    assert next_cursor("c", ["d"], 3) == ("d", True)
    assert next_cursor("d", [], 3) == ("d", True)


@pytest.mark.parametrize("ids", [["b", "a"], ["a", "a"], ["0"]])
def test_cursor_refuses_a_page_out_of_order_or_behind_it(ids: list[str]) -> None:
    with pytest.raises(ValueError):
        next_cursor("1", ids, 5)


def test_cursor_refuses_a_page_longer_than_the_limit() -> None:
    with pytest.raises(ValueError):
        next_cursor("", ["a", "b", "c"], 2)


def test_totals_add_up_pages_but_not_runs() -> None:
    a = ScanTotals(scanned=5, started=2, already_started=1, in_grace=1, invalid=1, pages=1, runs=2)
    b = ScanTotals(scanned=3, started=3, pages=1)
    assert a.plus(b) == ScanTotals(scanned=8, started=5, already_started=1, in_grace=1, invalid=1, pages=2, runs=2)


# ----------------------------------------------------------------------------- book rows


@pytest.mark.parametrize(
    "row",
    [
        book_row("L1", AS_OF, principal="0"),  # owes nothing (interest aside, set to zero below)
        book_row("L2", AS_OF, tz="Mars/Olympus"),
        book_row("bad id!", AS_OF),
    ],
)
def test_a_row_that_cannot_be_a_loan_is_refused(row: BookLoan) -> None:
    if row.loan_id == "L1":
        row.interest = Decimal(0)
    with pytest.raises(ValidationError):
        overdue_loan(row)
