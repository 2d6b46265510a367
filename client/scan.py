"""The daily scan from the client side: run it now and wait for its totals (the scheduled run is
`infra.schedules`')."""

from __future__ import annotations

from datetime import UTC, date, datetime

from temporalio.client import Client
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy

from infra.options import SCAN_PRIORITY
from infra.settings import settings
from infra.settings import task_queue as default_queue
from infra.temporal import with_converter
from models.scan import ScanInput, ScanTotals
from models.schedule import local_date
from workflows.scan import OverdueScanWorkflow


async def scan_overdue(
    client: Client,
    as_of: date | None = None,
    *,
    scan_id: str | None = None,
    task_queue: str | None = None,
    page_size: int | None = None,
    pages_per_run: int | None = None,
) -> ScanTotals:
    """Run the daily scan now and wait for its totals: every loan on the book newly overdue
    on `as_of` (default: today in SCAN_TIMEZONE) is handed to collection, none twice. The
    scan id defaults to `overdue-scan-<date>`: asking again while it runs waits for the same
    scan; asking after it finished scans again (and starts only what is new since). Scans
    with different ids may overlap with each other and with the scheduled one."""
    cfg = settings()
    day = scan_day(as_of)
    inp = ScanInput(
        as_of=day,
        timezone=cfg.scan_timezone,
        page_size=page_size or cfg.scan_page_size,
        pages_per_run=pages_per_run or cfg.scan_pages_per_run,
    )
    handle = await with_converter(client).start_workflow(
        OverdueScanWorkflow.run,
        inp,
        id=scan_id or f"overdue-scan-{day.isoformat()}",
        task_queue=default_queue(task_queue),
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        id_reuse_policy=WorkflowIDReusePolicy.ALLOW_DUPLICATE,
        priority=SCAN_PRIORITY,
    )
    return await handle.result()


def scan_day(as_of: date | None) -> date:
    """The scan's business date: `as_of`, else today in SCAN_TIMEZONE."""
    return as_of or local_date(datetime.now(UTC), settings().scan_timezone)
