"""The daily scan's one activity: read one page of the loan book and hand its newly overdue
loans to collection.

Never twice, at every level:
- Temporal: each loan is started through `client.loans.hand_over`, the code every start goes
  through (workflow id `collection-<loan id>`, USE_EXISTING on a running workflow, no reuse
  of a closed one), so a repeated page, a retried attempt or a second scan cannot make a
  second collection workflow.
- Database: the hand-over is recorded in `collection_starts` under the loan id (unique) after
  the start. A crash between the two leaves the loan unrecorded; the retried page finds it
  again, the start attaches to the running workflow, and the record is written then.
- A loan whose collection already ended is recorded as `closed` and never started again.
Only figures and the cursor go back to the workflow, never the rows.
"""

from __future__ import annotations

import asyncio
import logging

from pydantic import ValidationError
from sqlalchemy import Engine
from temporalio import activity
from temporalio.client import Client

from client.loans import StartOutcome, hand_over
from db.book import BookLoan, CollectionStart, overdue_loan, read_page, record_start
from infra.temporal import workflow_id
from models.scan import ScanPageRequest, ScanPageResult, ScanTotals, is_newly_overdue, next_cursor

log = logging.getLogger("collections.scan")

START_CONCURRENCY = 16
"""Start requests in flight at once within a page (the server, not the worker, is the limit)."""


class ScanActivities:
    def __init__(self, client: Client, engine: Engine, task_queue: str) -> None:
        self._client = client
        self._engine = engine
        self._task_queue = task_queue

    @activity.defn
    async def scan_page(self, req: ScanPageRequest) -> ScanPageResult:
        """Read the page after `req.after`, start collection for each loan newly overdue on
        `req.as_of` and record it; the page's figures and where the next page starts."""
        rows = await asyncio.to_thread(read_page, self._engine, req.as_of, req.after, req.limit)
        cursor, done = next_cursor(req.after, [row.loan_id for row in rows], req.limit)
        due = [row for row in rows if is_newly_overdue(row.status, row.due_date, row.grace_days, req.as_of)]
        gate = asyncio.Semaphore(START_CONCURRENCY)

        async def one(row: BookLoan) -> str:
            async with gate:
                outcome = await self._hand_over(row, req)
                activity.heartbeat(row.loan_id)
                return outcome

        outcomes = await asyncio.gather(*(one(row) for row in due))
        totals = ScanTotals(
            scanned=len(rows),
            started=outcomes.count("started"),
            already_started=outcomes.count("already"),
            in_grace=len(rows) - len(due),
            invalid=outcomes.count("invalid"),
            pages=1,
        )
        return ScanPageResult(next_cursor=cursor, done=done, totals=totals)

    async def _hand_over(self, row: BookLoan, req: ScanPageRequest) -> str:
        """`started`, `already` (in collection, closed, or recorded by another scan) or
        `invalid` (the row cannot make a loan: logged by id and field only, since the values
        may be personal data; the next scan tries again once the platform fixes it)."""
        try:
            loan = overdue_loan(row)
        except ValidationError as exc:
            fields = ", ".join(".".join(str(p) for p in e["loc"]) or e["msg"] for e in exc.errors())
            log.warning("loan %s on the book cannot start collection: invalid %s", row.loan_id, fields)
            return "invalid"
        outcome = await hand_over(self._client, loan, row.policy, task_queue=self._task_queue)
        start = CollectionStart(
            loan_id=row.loan_id,
            workflow_id=workflow_id(row.loan_id),
            scan_id=req.scan_id,
            as_of=req.as_of,
            outcome=str(outcome),
        )
        await asyncio.to_thread(record_start, self._engine, start)
        return "started" if outcome is StartOutcome.started else "already"
