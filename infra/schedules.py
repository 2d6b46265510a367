"""The daily scan's Temporal Schedule, kept as the settings say by every worker at start.

One schedule, id `daily-overdue-scan`: a calendar entry at SCAN_HOUR:SCAN_MINUTE in
SCAN_TIMEZONE that starts `OverdueScanWorkflow` on the worker's task queue, skipping a run
while the previous one still goes. `ensure_scan_schedule` is idempotent: the first worker
creates it, the next ones find it and change it only if their settings differ (the latest
worker to start wins), and SCAN_ENABLED=false pauses it (true resumes it, unless someone else
paused it for a reason of their own).

Called from `worker.py` (process start), never from `create_worker`: the time-skipping test
server has no schedules. The workflow is named by its type (`SCAN_WORKFLOW`), not imported:
infra sits below workflows.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleCalendarSpec,
    ScheduleHandle,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleRange,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.service import RPCError, RPCStatusCode

from infra.options import SCAN_PRIORITY, SCAN_WORKFLOW
from infra.settings import Settings, settings
from infra.temporal import with_converter
from models.scan import SCHEDULE_ID, ScanInput

log = logging.getLogger("collections.scan")

PAUSE_NOTE = "paused by a worker: SCAN_ENABLED=false"
"""A pause with this note is the setting's; any other pause is an operator's and is kept."""


def desired_schedule(cfg: Settings, task_queue: str) -> Schedule:
    """The schedule the settings ask for."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            SCAN_WORKFLOW,
            ScanInput(timezone=cfg.scan_timezone, page_size=cfg.scan_page_size, pages_per_run=cfg.scan_pages_per_run),
            id=SCHEDULE_ID,
            task_queue=task_queue,
            priority=SCAN_PRIORITY,
        ),
        spec=ScheduleSpec(
            calendars=[
                ScheduleCalendarSpec(hour=[ScheduleRange(cfg.scan_hour)], minute=[ScheduleRange(cfg.scan_minute)]),
            ],
            time_zone_name=cfg.scan_timezone,
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )


async def ensure_scan_schedule(client: Client, task_queue: str, cfg: Settings | None = None) -> str:
    """Create, update, pause or resume the schedule to match the settings; says what it did
    (`created`, `updated`, `paused`, `resumed`, `unchanged`, or `absent` when disabled and
    there is none). Safe to run from any number of workers at once."""
    cfg = cfg or settings()
    client = with_converter(client)
    wanted = desired_schedule(cfg, task_queue)
    if cfg.scan_enabled:
        try:
            await client.create_schedule(SCHEDULE_ID, wanted)
            log.info("created schedule %s: %s", SCHEDULE_ID, describe_settings(cfg))
            return "created"
        except ScheduleAlreadyRunningError:
            pass
    handle = client.get_schedule_handle(SCHEDULE_ID)
    try:
        state = (await handle.describe()).schedule.state
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return "absent"  # disabled, and never created
        raise
    done = ["updated"] if await _update_if_changed(client, handle, wanted) else []
    if not cfg.scan_enabled and not state.paused:
        await handle.pause(note=PAUSE_NOTE)
        done.append("paused")
    elif cfg.scan_enabled and state.paused:
        if state.note == PAUSE_NOTE:
            await handle.unpause(note="resumed by a worker: SCAN_ENABLED=true")
            done.append("resumed")
        else:
            log.warning("schedule %s stays paused (%s); unpause it to resume the scan", SCHEDULE_ID, state.note)
    result = ", ".join(done) or "unchanged"
    log.info("schedule %s %s: %s", SCHEDULE_ID, result, describe_settings(cfg))
    return result


def describe_settings(cfg: Settings) -> str:
    state = "enabled" if cfg.scan_enabled else "disabled"
    return f"daily at {cfg.scan_hour:02d}:{cfg.scan_minute:02d} {cfg.scan_timezone}, {state}"


async def _update_if_changed(client: Client, handle: ScheduleHandle, wanted: Schedule) -> bool:
    """Replace the schedule's spec, action and policy with `wanted` if any differs (its state,
    paused or not, is left as it is); whether it did."""
    changed: list[bool] = []

    async def updater(inp: ScheduleUpdateInput) -> ScheduleUpdate | None:
        current = inp.description.schedule
        if await _fingerprint(client, current) == await _fingerprint(client, wanted):
            return None
        changed.append(True)
        return ScheduleUpdate(schedule=dataclasses.replace(wanted, state=current.state))

    await handle.update(updater)
    return bool(changed)


async def _fingerprint(client: Client, schedule: Schedule) -> tuple[Any, ...]:
    """What the settings decide, in a form that compares equal between the schedule as sent
    and as the server describes it (which fills in ranges' ends and steps, and returns the
    action's argument still encoded)."""

    def ranges(values: Any) -> tuple[tuple[int, int, int], ...]:
        return tuple((r.start, max(r.end, r.start), r.step or 1) for r in values)

    spec, action = schedule.spec, schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    args = list(action.args)
    if args and not isinstance(args[0], ScanInput):
        args = await client.data_converter.decode(args, [ScanInput])
    return (
        spec.time_zone_name,
        tuple((ranges(c.hour), ranges(c.minute)) for c in spec.calendars),
        action.workflow,
        action.id,
        action.task_queue,
        action.priority.priority_key,
        schedule.policy.overlap,
        tuple(args),
    )
