"""Daily scan time over a loan book of N rows (embedded dev server; SQLite or PostgreSQL).

    python bench/scan.py [--n 100000] [--database-url postgresql+psycopg://user@host:port/db]
                         [--page-size 500] [--pages-per-run 20] [--isolated] [--workflow-tasks N] [--plain]

Fills `book_loans` with --n rows in a realistic mix (most not yet due or already in
collection, a small share newly overdue: see MIX), starts the dev server and a worker in a child
process of its own (so its RSS is the worker alone), and times two scans for today's date:
the first hands the newly overdue loans to collection, the second (nothing new) is the cost of
a quiet day. Figures: wall time, book rows/s, rows read, pages, runs, starts and starts/s,
the worker's peak RSS, CPU by process, and the query plan of one page.

SQLite (default) is a file in a temporary directory. With --database-url the bench creates a
database of its own on that server (`bench_scan_<hex>`, dropped at the end), so the URL's
database is only used to connect; the role needs CREATEDB. Tables come from the Alembic
migrations (`db.migrate.upgrade`), like the worker's. The started loans run on the same worker as the scan (their
first steps compete with it for the two cores, as in production); --isolated sends them to a
task queue no worker polls, to time the scan alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import _common

CHILD_ENV = "BENCH_SCAN_WORKER"
TZ = "Asia/Shanghai"
MIX = {"not_due": 0.70, "in_collection": 0.15, "closed": 0.08, "in_grace": 0.05, "newly_overdue": 0.02}
"""Shares of the book: due in the next 30 days; past due and handed over before (a
collection_starts row); closed with a past due date; 1-3 days past due with 3 days' grace;
4-20 days past due, past their grace and never handed over."""
FILL_BATCH = 5000


# ----------------------------------------------------------------------------- the worker child


async def worker_child(spec: dict[str, Any]) -> None:
    import logging

    from temporalio.worker import Worker

    from activities.scan import ScanActivities
    from db.store import make_engine
    from infra.temporal import connect
    from worker import create_worker, until_stopped
    from workflows.scan import OverdueScanWorkflow

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    client = await connect(spec["address"], spec["namespace"])
    if spec["isolated"]:  # the scan only; the loans it starts wait on a queue nobody polls
        engine = make_engine(spec["db_url"])
        scan = ScanActivities(client, engine, f"{spec['queue']}-unpolled")
        worker = Worker(client, task_queue=spec["queue"], workflows=[OverdueScanWorkflow], activities=[scan.scan_page])
    else:
        tuning = {"max_concurrent_workflow_tasks": spec["workflow_tasks"]} if spec["workflow_tasks"] else {}
        worker = create_worker(client, task_queue=spec["queue"], database_url=spec["db_url"], **tuning)
    async with worker:
        print("ready", flush=True)
        await until_stopped()


# ----------------------------------------------------------------------------- the book


def book_rows(n: int, as_of: date, tag: str, seed: int = 5) -> tuple[list[dict[str, Any]], list[str], dict[str, int]]:
    """--n rows of the mix (as dicts for a bulk insert), the ids already in collection, and
    the count of each kind. Ids are zero-padded so loan-id order is insertion order shuffled
    by kind, as on a real book."""
    rng = random.Random(seed)
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=n)
    now = datetime.now(UTC)
    rows, handed, counts = [], [], dict.fromkeys(MIX, 0)
    for i, kind in enumerate(kinds):
        counts[kind] += 1
        due, grace, status = {
            "not_due": (as_of + timedelta(days=rng.randint(0, 30)), 3, "current"),
            "in_collection": (as_of - timedelta(days=rng.randint(5, 200)), 3, "current"),
            "closed": (as_of - timedelta(days=rng.randint(1, 400)), 3, "closed"),
            "in_grace": (as_of - timedelta(days=rng.randint(1, 3)), 3, "current"),
            "newly_overdue": (as_of - timedelta(days=rng.randint(4, 20)), 3, "current"),
        }[kind]
        loan_id = f"{tag}-{i:07d}"
        if kind == "in_collection":
            handed.append(loan_id)
        rows.append(
            {
                "loan_id": loan_id,
                "borrower_id": f"B{tag}-{i:07d}",
                "borrower_name": "陈静",
                "phone": "+8613600000000",
                "email": "cj@example.cn",
                "address": "",
                "timezone": TZ,
                "language": "zh",
                "currency": "CNY",
                "principal": Decimal(rng.randrange(50_000, 2_000_000)) / 100,
                "interest": Decimal("35.00"),
                "fees": Decimal(0),
                "penalties": Decimal(0),
                "product": "consumer",
                "due_date": due,
                "grace_days": grace,
                "policy": "default",
                "status": status,
                "updated_at": now,
            }
        )
    return rows, handed, counts


def fill(url: str, n: int, as_of: date, tag: str) -> tuple[dict[str, int], float]:
    """Insert the book (and the earlier hand-overs) in batches; (counts, seconds)."""
    from sqlalchemy import insert

    from db.book import BookLoan, CollectionStart
    from db.migrate import upgrade
    from db.store import make_engine

    rows, handed, counts = book_rows(n, as_of, tag)
    upgrade(url)
    engine = make_engine(url)
    t0 = time.perf_counter()
    with engine.begin() as conn:
        for lo in range(0, len(rows), FILL_BATCH):
            conn.execute(insert(BookLoan), rows[lo : lo + FILL_BATCH])
        starts = [
            {
                "loan_id": i,
                "workflow_id": f"collection-{i}",
                "scan_id": "earlier",
                "as_of": as_of - timedelta(days=1),
                "outcome": "started",
                "started_at": datetime.now(UTC),
            }
            for i in handed
        ]
        for lo in range(0, len(starts), FILL_BATCH):
            conn.execute(insert(CollectionStart), starts[lo : lo + FILL_BATCH])
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE book_loans")
            conn.exec_driver_sql("ANALYZE collection_starts")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    seconds = time.perf_counter() - t0
    engine.dispose()
    return counts, seconds


def query_plan(url: str, as_of: date, limit: int) -> list[str]:
    """The database's plan for one page (the first: cursor "")."""
    from sqlalchemy import exists
    from sqlmodel import col, select

    from db.book import BookLoan, CollectionStart
    from db.store import make_engine

    engine = make_engine(url)
    handed = exists().where(col(CollectionStart.loan_id) == col(BookLoan.loan_id))
    query = (
        select(BookLoan.loan_id)
        .where(BookLoan.status == "current", BookLoan.due_date < as_of, BookLoan.loan_id > "", ~handed)
        .order_by(BookLoan.loan_id)
        .limit(limit)
    )
    sql = str(query.compile(engine, compile_kwargs={"literal_binds": True}))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            lines = [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql)]
        else:
            lines = [row[0] for row in conn.exec_driver_sql("EXPLAIN " + sql)]
    engine.dispose()
    return lines


class OwnDatabase:
    """A database of the bench's own on the --database-url server (created, then dropped)."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url

        self.admin = create_engine(url, isolation_level="AUTOCOMMIT")
        self.name = f"bench_scan_{uuid.uuid4().hex[:8]}"
        self.url = make_url(url).set(database=self.name).render_as_string(hide_password=False)

    def __enter__(self) -> str:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{self.name}"')
        return self.url

    def __exit__(self, *exc: object) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        self.admin.dispose()


# ----------------------------------------------------------------------------- the benchmark


async def wait_idle(pid: int, quiet_cpu: float = 0.1, quiet_for: int = 2, timeout: float = 900) -> float:
    """Wait until the process used less than `quiet_cpu` CPU seconds in each of `quiet_for`
    consecutive seconds (the started loans have reached their first sleep); seconds waited."""
    t0, quiet, last = time.monotonic(), 0, _common.cpu_seconds(pid)
    while quiet < quiet_for and time.monotonic() - t0 < timeout:
        await asyncio.sleep(1)
        now = _common.cpu_seconds(pid)
        quiet = quiet + 1 if now - last < quiet_cpu else 0
        last = now
    return time.monotonic() - t0


async def timed_scan(client: Any, as_of: date, scan_id: str, queue: str, args: argparse.Namespace) -> tuple[Any, float]:
    import starter

    t0 = time.perf_counter()
    totals = await starter.scan_overdue(
        client, as_of, scan_id=scan_id, task_queue=queue, page_size=args.page_size, pages_per_run=args.pages_per_run
    )
    return totals, time.perf_counter() - t0


async def run(args: argparse.Namespace, url: str, tmp: Path) -> dict[str, Any]:
    from infra.temporal import with_converter
    from models.scan import scan_date

    as_of = scan_date(datetime.now(UTC), TZ)
    tag = f"BK{uuid.uuid4().hex[:6]}"
    _common.progress(f"filling {args.n:,} book rows")
    counts, fill_seconds = fill(url, args.n, as_of, tag)
    plan = query_plan(url, as_of, args.page_size)
    _common.progress("starting the dev server and the worker")
    env = await _common.start_dev_server(tmp)
    async with env:
        client = with_converter(env.client)
        queue = f"bench-scan-{uuid.uuid4().hex[:8]}"
        spec = {
            "address": client.service_client.config.target_host,
            "namespace": client.namespace,
            "queue": queue,
            "db_url": url,
            "isolated": args.isolated,
            "workflow_tasks": args.workflow_tasks,
        }
        child_log = tmp / "worker.log"  # its shutdown cancels the started loans' activities: noise, kept apart
        child = await _common.start_worker_process(
            Path(__file__).resolve(), {**os.environ, CHILD_ENV: json.dumps(spec)}, child_log, timeout=90
        )
        try:
            servers = [p for p in _common.child_pids() if p != child.pid]
            cpu0 = {p: _common.cpu_seconds(p) for p in [child.pid, *servers]}
            rss_before = _common.rss_kib(child.pid)
            _common.progress("first scan (hands the newly overdue loans over)")
            first, first_wall = await timed_scan(client, as_of, f"bench-scan-1-{tag}", queue, args)
            cpu1 = {p: _common.cpu_seconds(p) for p in cpu0}
            _common.progress(f"first scan: {first.started} started in {first_wall:.1f} s; waiting for an idle worker")
            idle_wait = await wait_idle(child.pid)
            _common.progress("second scan (nothing new)")
            second, second_wall = await timed_scan(client, as_of, f"bench-scan-2-{tag}", queue, args)
            rss_after = _common.rss_kib(child.pid)
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(child.wait(), timeout=60)
            except TimeoutError:
                child.kill()
                await child.wait()
    log = child_log.read_text(errors="replace")
    return {
        "counts": counts,
        "fill": fill_seconds,
        "plan": plan,
        "first": first,
        "first_wall": first_wall,
        "slow_tasks": log.count("Workflow task duration exceeded"),
        "lost_tasks": log.count("Task not found when completing"),
        "second": second,
        "second_wall": second_wall,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "cpu_worker": cpu1[child.pid] - cpu0[child.pid],
        "idle_wait": idle_wait,
        "cpu_server": sum(cpu1[p] - cpu0[p] for p in cpu0 if p != child.pid),
    }


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    encryption = _common.configure(args.plain)  # the child inherits the key through the environment
    with tempfile.TemporaryDirectory(prefix="bench-scan-") as tmp_name:
        tmp = Path(tmp_name)
        if args.database_url:
            with OwnDatabase(args.database_url) as url:
                r = await run(args, url, tmp)
            database = f"PostgreSQL ({_server_version(args.database_url)}), database of its own, dropped after"
        else:
            r = await run(args, f"sqlite:///{tmp / 'collections.db'}", tmp)
            database = "SQLite file (WAL), in a temporary directory"
    first, second = r["first"], r["second"]
    mix = ", ".join(f"{k.replace('_', ' ')} {v:,}" for k, v in r["counts"].items())
    loans_run = (
        "scan only; started loans wait on an unpolled queue"
        if args.isolated
        else "the project worker: started loans run on it"
    )
    figures = [
        ("book", f"{args.n:,} rows: {mix}"),
        ("database", database),
        (
            "setup",
            (
                f"dev server (SQLite file, WAL), worker in its own process "
                f"({loans_run}); "
                f"page {args.page_size} rows, continue-as-new every {args.pages_per_run} pages; "
                f"workflow task slots {args.workflow_tasks or 'the worker default (100)'}"
            ),
        ),
        ("payload encryption", encryption),
        ("fill", f"{args.n / r['fill']:,.0f} rows/s ({r['fill']:.1f} s, bulk insert + ANALYZE; not part of the scan)"),
        ("", ""),
        (
            "first scan",
            (
                f"{r['first_wall']:.1f} s wall: {args.n / r['first_wall']:,.0f} book rows/s; "
                f"{first.scanned:,} rows read ({first.scanned / r['first_wall']:,.0f}/s), {first.pages} pages, "
                f"{first.runs} runs"
            ),
        ),
        (
            "  hand-overs",
            (
                f"{first.started:,} started ({first.started / r['first_wall']:.1f}/s), "
                f"{first.already_started} already started, {first.in_grace:,} in grace, "
                f"{first.invalid} invalid"
            ),
        ),
        (
            "second scan",
            (
                f"{r['second_wall']:.1f} s wall: {args.n / r['second_wall']:,.0f} book rows/s; "
                f"{second.scanned:,} rows read, {second.pages} pages, {second.started} started "
                f"(nothing new: the cost of a quiet day; run once the worker was idle, "
                f"{r['idle_wait']:.0f} s after the first)"
            ),
        ),
        (
            "worker RSS",
            (
                f"{r['rss_before']['VmRSS'] / 1024:.0f} MiB before the scans, "
                f"{r['rss_after']['VmRSS'] / 1024:.0f} MiB after, "
                f"peak {r['rss_after']['VmHWM'] / 1024:.0f} MiB"
            ),
        ),
        (
            "CPU, first scan",
            (
                f"worker {r['cpu_worker'] / r['first_wall'] * 100:.0f}%, Temporal server "
                f"{r['cpu_server'] / r['first_wall'] * 100:.0f}% "
                f"(of {len(os.sched_getaffinity(0)) * 100}%)"
            ),
        ),
        (
            "worker's core warnings",
            (
                f"{r['slow_tasks']:,} workflow tasks over 5 s, {r['lost_tasks']:,} completed "
                "after the server had timed them out (10 s); written to the worker's stdout, which "
                "the bench reads to the end (unread, ~90 lines filled the pipe and stopped the "
                "worker)"
            ),
        ),
        ("page query plan", " | ".join(line.strip() for line in r["plan"])),
    ]
    notes = [
        (
            "the first scan's time is mostly the start requests (one per newly overdue loan) and, without "
            "--isolated, the started loans' first steps on the same worker; the read itself is the second scan"
        )
    ]
    _common.report("Daily scan over the loan book (dev server)", parser, args, figures, notes)
    return 0


def _server_version(url: str) -> str:
    from sqlalchemy import create_engine

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.exec_driver_sql("SHOW server_version").scalar())
    finally:
        engine.dispose()


if __name__ == "__main__":
    child_spec = os.environ.get(CHILD_ENV)
    if child_spec:
        asyncio.run(worker_child(json.loads(child_spec)))
        _common.finish(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="rows in the loan book (default 100,000)")
    parser.add_argument("--database-url", help="a PostgreSQL URL (postgresql+psycopg://...); default: SQLite")
    parser.add_argument("--page-size", type=int, default=500, help="rows per scan activity (default 500)")
    parser.add_argument("--pages-per-run", type=int, default=20, help="pages before continue-as-new (default 20)")
    parser.add_argument("--isolated", action="store_true", help="no collection worker: time the scan alone")
    parser.add_argument(
        "--workflow-tasks",
        type=int,
        default=0,
        help="the worker's max_concurrent_workflow_tasks (default: the worker's own, temporalio's 100)",
    )
    _common.add_common_arguments(parser)
    arguments = parser.parse_args()
    code = asyncio.run(main(arguments, parser))
    _common.finish(code)
    sys.exit(code)
