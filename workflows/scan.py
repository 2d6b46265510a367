"""The daily scan: walk the loan book page by page and hand each newly overdue loan to
collection (`activities.scan`, called by name: `workflows.calls`), never twice.

The workflow holds only the date, the cursor (the last loan id read) and the totals: a page is
one activity that reads at most `page_size` rows and returns figures. Every `pages_per_run`
pages, or sooner when the server suggests it, the scan continues as new with those three, so
a book of any size never sits in memory or in one history.
"""

from __future__ import annotations

from datetime import date

from temporalio import workflow
from temporalio.common import SearchAttributeKey

with workflow.unsafe.imports_passed_through():  # workflows.calls: the activities, by name
    from infra.options import SCAN_HEARTBEAT as _HEARTBEAT
    from infra.options import SCAN_PAGE_RETRY as _RETRY
    from infra.options import SCAN_PAGE_TIMEOUT as _PAGE_TIMEOUT
    from models.scan import SCHEDULED_START_TIME, ScanInput, ScanPageRequest, ScanTotals, scan_date
    from workflows import calls

_SCHEDULED_AT = SearchAttributeKey.for_datetime(SCHEDULED_START_TIME)


@workflow.defn
class OverdueScanWorkflow:
    def __init__(self) -> None:
        self._progress = ScanInput()

    @workflow.run
    async def run(self, inp: ScanInput) -> ScanTotals:
        as_of = inp.as_of or self._scheduled_date(inp.timezone)
        totals, cursor = inp.totals, inp.cursor
        self._progress = inp.model_copy(update={"as_of": as_of})
        for _ in range(inp.pages_per_run):
            page = await workflow.execute_activity(
                calls.scan_page,
                ScanPageRequest(scan_id=workflow.info().workflow_id, as_of=as_of, after=cursor, limit=inp.page_size),
                start_to_close_timeout=_PAGE_TIMEOUT,
                heartbeat_timeout=_HEARTBEAT,
                retry_policy=_RETRY,
            )
            totals, cursor = totals.plus(page.totals), page.next_cursor
            self._progress = self._progress.model_copy(update={"cursor": cursor, "totals": totals})
            if page.done:
                workflow.logger.info("overdue scan as of %s done: %s", as_of, totals.model_dump_json(exclude={"pages"}))
                return totals
            if workflow.info().is_continue_as_new_suggested():
                break
        workflow.continue_as_new(
            inp.model_copy(
                update={
                    "as_of": as_of,
                    "cursor": cursor,
                    "totals": totals.model_copy(update={"runs": totals.runs + 1}),
                }
            )
        )

    @workflow.query
    def progress(self) -> ScanInput:
        """The scan's date, cursor (last loan id read) and totals so far."""
        return self._progress

    def _scheduled_date(self, tz: str) -> date:
        """The business date of this scan: the schedule's due time (which Temporal puts on each
        scheduled run) in the scan's zone; a scan started by hand without a date uses now."""
        scheduled = workflow.info().typed_search_attributes.get(_SCHEDULED_AT)
        return scan_date(scheduled or workflow.now(), tz)
