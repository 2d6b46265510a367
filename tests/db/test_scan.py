"""The daily scan's pure part and its database side, without a Temporal server: which rows of
the book are newly overdue, the cursor, the keyset walk over the book, the once-only record,
and the replay of recorded scan histories."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from db.book import BookLoan, CollectionStart, overdue_loan, read_page, record_start
from infra.temporal import data_converter
from models.scan import OPEN, ScanTotals, collection_day, is_newly_overdue, next_cursor, scan_date
from workflows.scan import OverdueScanWorkflow

AS_OF = date(2026, 11, 28)


def book_row(loan_id: str, due: date, *, grace: int = 0, status: str = OPEN, principal: str = "1000.00",
             tz: str = "Asia/Shanghai") -> BookLoan:
    return BookLoan(
        loan_id=loan_id, borrower_id=f"B-{loan_id}", borrower_name="王芳", phone="+8613900000000",
        email="wf@example.cn", timezone=tz, currency="CNY", principal=Decimal(principal),
        interest=Decimal("10.00"), due_date=due, grace_days=grace, status=status,
    )


# ----------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(("days_late", "grace", "status", "expected"), [
    (1, 0, OPEN, True),  # due yesterday, no grace: DPD 1
    (0, 0, OPEN, False),  # due today: not late yet
    (-5, 0, OPEN, False),  # not due for five days
    (3, 3, OPEN, False),  # last day of grace
    (4, 3, OPEN, True),  # first day after grace
    (400, 3, OPEN, True),  # long overdue and never handed over: handed over now
    (10, 0, "closed", False),  # paid off or sold: never
])
def test_newly_overdue_after_due_date_and_grace(days_late: int, grace: int, status: str, expected: bool) -> None:
    assert is_newly_overdue(status, AS_OF - timedelta(days=days_late), grace, AS_OF) is expected


@given(due=st.dates(date(2020, 1, 1), date(2030, 12, 31)), grace=st.integers(0, 60),
       as_of=st.dates(date(2020, 1, 1), date(2030, 12, 31)))
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


# ----------------------------------------------------------------------------- the book


def fill(engine: Engine) -> set[str]:
    """A mixed book; returns the ids a page read must return (open, due before AS_OF, not
    handed over), whatever their grace."""
    rows, expected = [], set()
    for i in range(120):
        kind = i % 6
        due = {0: AS_OF - timedelta(days=1 + i), 1: AS_OF + timedelta(days=i), 2: AS_OF,
               3: AS_OF - timedelta(days=2), 4: AS_OF - timedelta(days=30), 5: AS_OF - timedelta(days=5)}[kind]
        row = book_row(f"L{i:04d}", due, grace=3 if kind == 3 else 0, status="closed" if kind == 4 else OPEN)
        rows.append(row)
        if kind in (0, 3, 5):
            expected.add(row.loan_id)
    with Session(engine) as session:
        session.add_all(rows)
        session.commit()
    for i in range(5, 120, 12):  # every other kind-5 row was handed over already
        record_start(engine, CollectionStart(loan_id=f"L{i:04d}", workflow_id=f"collection-L{i:04d}",
                                             scan_id="earlier", as_of=AS_OF - timedelta(days=1), outcome="started"))
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
            record_start(engine, CollectionStart(loan_id=row.loan_id, workflow_id="w", scan_id="other",
                                                 as_of=AS_OF, outcome="started"))
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
        "L9", Decimal("1234.56"), Decimal("10.00"), Decimal("0"), "CNY")
    assert loan.due_date == AS_OF - timedelta(days=3) and loan.borrower.timezone == "Asia/Shanghai"


@pytest.mark.parametrize("row", [
    book_row("L1", AS_OF, principal="0"),  # owes nothing (interest aside, set to zero below)
    book_row("L2", AS_OF, tz="Mars/Olympus"),
    book_row("bad id!", AS_OF),
])
def test_a_row_that_cannot_be_a_loan_is_refused(row: BookLoan) -> None:
    if row.loan_id == "L1":
        row.interest = Decimal(0)
    with pytest.raises(ValidationError):
        overdue_loan(row)


# ----------------------------------------------------------------------------- replay

SCAN_HISTORIES = sorted((Path(__file__).parent / "histories" / "scan").glob("*.json"))


def test_scan_histories_are_kept() -> None:
    assert {p.stem.rsplit("-", 1)[0] for p in SCAN_HISTORIES} >= {"scan-first", "scan-last"}


@pytest.mark.parametrize("path", SCAN_HISTORIES, ids=lambda p: p.stem)
async def test_recorded_scan_history_replays(path: Path) -> None:
    """A scan in flight when a new version is deployed must go on: its recorded runs (pages,
    continue-as-new, the last page) replay on the current code."""
    history = WorkflowHistory.from_json("recorded-scan", path.read_text())
    replayer = Replayer(workflows=[OverdueScanWorkflow], data_converter=data_converter())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
