"""Wall time to simulate a portfolio through the ladder on the time-skipping server.

    python bench/simulate.py [--n 1000] [--batch 250] [--days 180] [--concurrency 50] [--plain]

Starts --n loans at DPD 0 (same due date, default policy, nobody pays or reports an outcome),
then moves the clock with env.sleep one day at a time to noon of DPD --days (180: write-off is at
10:00 that day). The loans run in batches of --batch, each on a fresh time-skipping server with
the project's worker and a SQLite database in a temp dir, one batch after the other (a server
has one clock, and its cost grows with the total steps, not with loans run side by side; 1,000
loans on one server broke its connection here). Wall time is the sum over batches, from each
batch's first start to its last day. Afterwards (not timed) it checks every loan reached the day
(written off at 180) and counts activities and timers from the histories.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import _common

ISSUE_N = 1000


@dataclass
class Batch:
    """What one time-skipping environment measured for its share of the loans."""

    wall: float = 0.0
    start_wall: float = 0.0
    marks: list[tuple[int, float]] = field(default_factory=list)
    activities: int = 0
    timers: int = 0
    events: int = 0
    stages: Counter[str] = field(default_factory=Counter)


async def simulate(first: int, n: int, args: argparse.Namespace) -> Batch:
    """Loans SIM-<first>..SIM-<first+n-1> through --days on a fresh time-skipping server."""
    from temporalio.api.enums.v1 import EventType

    import starter
    from db.migrate import upgrade
    from db.store import make_engine
    from tests.helpers import Harness, make_loan
    from worker import create_worker

    out = Batch()
    with tempfile.TemporaryDirectory(prefix="bench-simulate-") as tmp_name:
        db_file = Path(tmp_name) / "collections.db"
        db_url = f"sqlite:///{db_file}"
        upgrade(db_url)
        env = await _common.start_time_skipping()
        try:
            queue = f"bench-simulate-{uuid.uuid4().hex[:8]}"
            async with create_worker(env.client, task_queue=queue, database_url=db_url, max_cached_workflows=max(n, 1)):
                harness = Harness(env=env, engine=make_engine(db_url), task_queue=queue)
                now = await harness.now()
                loans = [make_loan(f"SIM-{i:05d}", dpd=0, now=now) for i in range(first, first + n)]
                t0 = time.perf_counter()
                out.start_wall, _ = await _common.bounded(
                    n, args.concurrency, lambda i: starter.start_collection(env.client, loans[i], task_queue=queue)
                )
                _common.progress(
                    f"started loans {first}-{first + n - 1} in {out.start_wall:.1f} s; skipping {args.days} days"
                )
                for day in range(1, args.days + 1):
                    await harness.at_dpd(loans[0], day)
                    if day % 30 == 0 or day == args.days:
                        out.marks.append((day, time.perf_counter() - t0))
                        _common.progress(f"DPD {day}: {out.marks[-1][1]:.1f} s")
                out.wall = time.perf_counter() - t0

                sem = asyncio.Semaphore(20)

                async def count(loan_id: str) -> None:  # not timed
                    async with sem:
                        history = await env.client.get_workflow_handle(f"collection-{loan_id}").fetch_history()
                    out.events += len(history.events)
                    for e in history.events:
                        if e.event_type in (
                            EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
                            EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED,
                        ):
                            out.activities += 1
                        elif e.event_type == EventType.EVENT_TYPE_TIMER_FIRED:
                            out.timers += 1

                await asyncio.gather(*(count(loan.loan_id) for loan in loans))
        finally:
            await env.shutdown()
        conn = sqlite3.connect(db_file)
        out.stages.update(dict(conn.execute("SELECT stage, count(*) FROM loans GROUP BY stage").fetchall()))
        conn.close()
    return out


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    encryption = _common.configure(args.plain)
    cpu = _common.CpuMeter()
    batches: list[Batch] = [
        await simulate(first, min(args.batch, args.n - first), args) for first in range(0, args.n, args.batch)
    ]
    cpu_text = cpu.describe("worker+client", "test server")
    wall = sum(b.wall for b in batches)
    start_wall = sum(b.start_wall for b in batches)
    activities = sum(b.activities for b in batches)
    timers = sum(b.timers for b in batches)
    events = sum(b.events for b in batches)
    stages: Counter[str] = sum((b.stages for b in batches), Counter())
    marks = [(day, sum(b.marks[i][1] for b in batches)) for i, (day, _) in enumerate(batches[0].marks)]

    n, days = args.n, args.days
    per_loan = wall / n
    projected = per_loan * ISSUE_N
    figures = [
        (
            "setup",
            (
                f"time-skipping test server, {n} loans at DPD 0, default policy, never paying; "
                f"{len(batches)} batch(es) of up to {args.batch}, one fresh server each, run one after the other; "
                f"started {args.concurrency} at a time, then env.sleep 1 day at a time"
            ),
        ),
        ("payload encryption", encryption),
        ("loans", f"{n} (stages at the end: {', '.join(f'{k} {v}' for k, v in sorted(stages.items()))})"),
        ("days", f"{days} (noon of DPD {days})"),
        ("wall time", f"{wall:.1f} s ({start_wall:.1f} s of it starting the loans; {per_loan * 1000:.0f} ms per loan)"),
        ("by day", ", ".join(f"DPD {d} {t:.0f} s" for d, t in marks)),
        (
            "steps",
            f"{activities} activities ({activities / n:.1f} per loan), {timers} timers fired, {events} history events",
        ),
        (
            "steps/s",
            (
                f"{activities / wall:.1f} activities/s ({wall / max(activities, 1) * 1000:.1f} ms each), "
                f"{events / wall:.0f} history events/s, {n * days / wall:.0f} loan-days/s"
            ),
        ),
        ("CPU", cpu_text),
        (
            f"{ISSUE_N:,} loans x {days} days",
            (
                f"measured: {wall:.1f} s"
                if n == ISSUE_N
                else f"projected {projected:.0f} s ({projected / 60:.1f} min), linear in loans "
                f"(no gain from concurrency on this server); measure with --n {ISSUE_N}"
            ),
        ),
    ]
    notes = [
        "the test server serialises time skipping: cost grows with total steps, not with loans in parallel",
    ]
    if days >= 180 and stages.get("written_off", 0) != n:
        notes.append(f"only {stages.get('written_off', 0)} of {n} loans were written off by DPD {days}: check the run")
    _common.report(f"Simulation: {n} loans through {days} days (time-skipping server)", parser, args, figures, notes)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=ISSUE_N, help=f"loans (default {ISSUE_N}, what the issue asks for)")
    parser.add_argument("--days", type=int, default=180, help="days past due to reach (default 180, write-off)")
    parser.add_argument("--concurrency", type=int, default=50, help="loan starts in flight (default 50)")
    parser.add_argument(
        "--batch",
        type=int,
        default=250,
        help="loans per time-skipping server, run one after the other (default 250; "
        "1,000 on one server broke its connection here: 'h2 protocol error')",
    )
    _common.add_common_arguments(parser)
    arguments = parser.parse_args()
    code = asyncio.run(main(arguments, parser))
    _common.finish(code)
    sys.exit(code)
