"""The daily scan's rules as pure functions: which loan of the book is newly overdue on a day,
how the scan walks the book page by page, and the figures it reports.

The lending platform keeps its loan book (`db.book.BookLoan`); the scan reads it a page at a
time in loan-id order (keyset pagination: each page starts after the last id of the one before,
so a page is the same however many pages came earlier and nothing is held between pages).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, timedelta
from itertools import pairwise

from pydantic import BaseModel, Field

from models.schedule import local_date

OPEN = "current"
"""Book status of a loan the platform still expects payments on; anything else (closed,
sold, ...) is never handed to collection by the scan."""

SCHEDULE_ID = "daily-overdue-scan"
"""The Temporal Schedule that runs the scan; its runs get ids `daily-overdue-scan-<time>`."""

SCHEDULED_START_TIME = "TemporalScheduledStartTime"
"""The search attribute Temporal sets on every scheduled run: the time it was due."""


def collection_day(due_date: date, grace_days: int) -> date:
    """The first day a loan unpaid since `due_date` is handed to collection: the day after its
    grace (grace 0: the day after the due date, DPD 1)."""
    return due_date + timedelta(days=grace_days + 1)


def is_newly_overdue(status: str, due_date: date, grace_days: int, as_of: date) -> bool:
    """Whether the scan of `as_of` hands this loan to collection (if it has not been already):
    still open on the book, and its grace after the first unpaid due date is over."""
    return status == OPEN and as_of >= collection_day(due_date, grace_days)


def scan_date(scheduled_at: datetime, tz: str) -> date:
    """The business date a scan due at `scheduled_at` works for: the calendar day in the
    scan's zone (a 01:00 Shanghai scan is still 17:00 UTC the day before)."""
    return local_date(scheduled_at, tz)


def next_cursor(after: str, page_ids: Sequence[str], limit: int) -> tuple[str, bool]:
    """Where the next page starts and whether the walk is over. A page comes back in loan-id
    order; the next one starts after its last id. A short page is the last one (an empty page
    keeps the cursor where it was)."""
    if len(page_ids) > limit:
        raise ValueError(f"page of {len(page_ids)} rows for a limit of {limit}")
    if any(b <= a for a, b in pairwise(page_ids)) or (page_ids and page_ids[0] <= after):
        raise ValueError("page ids must be increasing and after the cursor")
    return (page_ids[-1] if page_ids else after), len(page_ids) < limit


class ScanTotals(BaseModel):
    """What a scan did, summed over its pages and runs.

    `scanned` rows were read (open, past their due date, not yet recorded as handed over);
    `started` loans got a new collection workflow from this scan; `already_started` were
    already in collection, or had been and closed, or were handed over by another scan at the
    same moment (recorded, nothing started); `in_grace` are past due but still within grace;
    `invalid` rows cannot make a loan (logged by id and field, retried by the next scan)."""

    scanned: int = 0
    started: int = 0
    already_started: int = 0
    in_grace: int = 0
    invalid: int = 0
    pages: int = 0
    runs: int = 1

    def plus(self, other: ScanTotals) -> ScanTotals:
        """Both together (`runs` is not summed: a page result has no runs of its own)."""
        fields = ("scanned", "started", "already_started", "in_grace", "invalid", "pages")
        return self.model_copy(update={f: getattr(self, f) + getattr(other, f) for f in fields})


class ScanInput(BaseModel):
    """Input of the scan workflow. The schedule starts it with `as_of` unset (the date comes
    from the scheduled time); continue-as-new carries the date, the cursor and the totals."""

    as_of: date | None = None
    timezone: str = "Asia/Shanghai"
    cursor: str = ""
    page_size: int = Field(default=500, ge=1, le=10_000)
    pages_per_run: int = Field(default=20, ge=1)
    totals: ScanTotals = ScanTotals()


class ScanPageRequest(BaseModel):
    """One page: the open loans after `after` in loan-id order, at most `limit` of them."""

    scan_id: str = Field(min_length=1)
    as_of: date
    after: str = ""
    limit: int = Field(ge=1)


class ScanPageResult(BaseModel):
    """What one page did; only figures and the cursor travel back, never the rows."""

    next_cursor: str
    done: bool
    totals: ScanTotals
