"""History size of one never-paying loan through the whole default ladder (time-skipping server).

    python bench/history.py [--until-dpd 600] [--plain]

Starts one loan at DPD 0 under policies/default.toml, never pays and never reports a task
outcome, and moves the clock (env.sleep) to noon of DPD 30, 60, 90, 120, 180 (write-off is at
10:00 that day) and --until-dpd (default 600: recovery ends at 545 and the workflow closes).
At each point it reads `handle.fetch_history()`: the number of events and the serialized size
(protobuf bytes of the History message, i.e. what the server stores and a replay downloads).
If the workflow continued as new, every run of the chain is counted.

Target (issue 5): under 1,000 events at DPD 180, i.e. no continue-as-new needed before write-off.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import _common

if TYPE_CHECKING:
    from temporalio.client import Client, WorkflowHistory

TARGET_EVENTS_AT_180 = 1000


async def chain_histories(client: Client, workflow_id: str, first_run_id: str) -> list[WorkflowHistory]:
    """Histories of every run from the first, following continue-as-new."""
    from temporalio.api.enums.v1 import EventType

    histories: list[WorkflowHistory] = []
    run_id: str | None = first_run_id
    while run_id:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        last = history.events[-1] if history.events else None
        run_id = None
        if last is not None and last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW:
            run_id = last.workflow_execution_continued_as_new_event_attributes.new_execution_run_id
    return histories


def sizes(histories: list) -> tuple[int, int, int]:
    """(events in all runs, serialized bytes of all runs, events in the latest run)."""
    from temporalio.api.history.v1 import History

    events = sum(len(h.events) for h in histories)
    size = sum(History(events=h.events).ByteSize() for h in histories)
    return events, size, len(histories[-1].events)


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    encryption = _common.configure(args.plain)
    from temporalio.api.enums.v1 import EventType

    from db.store import make_engine
    from tests.helpers import Harness, make_loan
    from worker import create_worker

    milestones = sorted({d for d in (30, 60, 90, 120, 180) if d < args.until_dpd} | {args.until_dpd})
    rows: list[tuple[int, int, int, int, int, str]] = []
    wall0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-history-") as tmp_name:
        db_url = f"sqlite:///{Path(tmp_name) / 'collections.db'}"
        env = await _common.start_time_skipping()
        try:
            queue = f"bench-history-{uuid.uuid4().hex[:8]}"
            async with create_worker(env.client, task_queue=queue, database_url=db_url):
                harness = Harness(env=env, engine=make_engine(db_url), task_queue=queue)
                loan = make_loan(dpd=0, now=await harness.now())
                wf_id = await harness.start(loan)
                handle = env.client.get_workflow_handle(wf_id)
                first_run = (await handle.describe()).run_id
                for dpd in milestones:
                    await harness.at_dpd(loan, dpd)
                    histories = await chain_histories(env.client, wf_id, first_run)
                    events, size, latest = sizes(histories)
                    status = (await handle.describe()).status
                    state = status.name.lower() if status else "?"
                    rows.append((dpd, events, size, len(histories), latest, state))
                    _common.progress(f"DPD {dpd}: {events} events, {size:,} bytes, {len(histories)} run(s), {state}")
                by_type: Counter[str] = Counter()
                bytes_by_type: Counter[str] = Counter()
                for h in histories:
                    for e in h.events:
                        name = EventType.Name(e.event_type).removeprefix("EVENT_TYPE_")
                        by_type[name] += 1
                        bytes_by_type[name] += e.ByteSize()
                activities = by_type["ACTIVITY_TASK_COMPLETED"] + by_type["ACTIVITY_TASK_FAILED"]
                timers = by_type["TIMER_FIRED"]
        finally:
            await env.shutdown()
    wall = time.perf_counter() - wall0

    at180 = next((r for r in rows if r[0] == 180), None)
    final = rows[-1]
    figures: list[tuple[str, str]] = [
        (
            "setup",
            (
                "time-skipping test server, 1 loan at DPD 0 (10,000 + 500 + 100 CNY), default policy, "
                "never pays, no task outcomes"
            ),
        ),
        ("payload encryption", encryption),
        ("", ""),
        ("DPD   events     bytes  runs", "(all runs of the chain; 'latest' = events in the current run)"),
    ]
    for dpd, events, size, runs, latest, state in rows:
        figures.append((f"{dpd:>3} {events:>8} {size:>9,} {runs:>5}", f"latest run {latest} events, {state}"))
    figures.append(("", ""))
    if at180 is not None:
        ok = at180[1] < TARGET_EVENTS_AT_180 and at180[3] == 1
        figures.append(
            (
                "at DPD 180",
                f"{at180[1]} events, {at180[2]:,} bytes ({at180[2] / max(at180[1], 1):.0f} B/event) -> "
                + (
                    "meets the target (< 1,000 events, no continue-as-new)"
                    if ok
                    else "MISSES the target (< 1,000 events without continue-as-new)"
                ),
            )
        )
    figures += [
        (
            "whole life",
            f"{final[1]} events, {final[2]:,} bytes per loan at DPD {final[0]} ({final[5]}), {final[3]} run(s)",
        ),
        ("of which", f"{activities} activities, {timers} timers fired"),
        (
            "largest by bytes",
            "; ".join(f"{k.lower()} {bytes_by_type[k]:,} B ({by_type[k]})" for k, _ in bytes_by_type.most_common(4)),
        ),
        ("wall time", f"{wall:.1f} s"),
    ]
    notes = [
        "--plain gives the size without the codec (on 2026-11-28: 59,028 bytes at DPD 180, 13% less; same events)",
    ]
    _common.report("History per loan: never-paying loan through the default ladder", parser, args, figures, notes)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--until-dpd",
        type=int,
        default=600,
        help="last DPD to reach (default 600; recovery ends at 545 and the loan closes)",
    )
    _common.add_common_arguments(parser)
    arguments = parser.parse_args()
    code = asyncio.run(main(arguments, parser))
    _common.finish(code)
    sys.exit(code)
