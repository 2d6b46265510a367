"""The desk's queue page with many open tasks: the time to render it (HTTP request in, HTML out,
through the whole app: session cookie, the page query over tasks, loans, marks and borrowers,
the guard's preview of every row from the contact history, the template), read from the
database and paged, never by asking the workflows. Nothing Temporal is needed: the app's client
stays unconnected, the queue page does not use it.

    .venv/bin/python bench/desk_queue.py                   # 10,000 open tasks, SQLite
    .venv/bin/python bench/desk_queue.py --database-url postgresql+psycopg://postgres@127.0.0.1:PORT/postgres

Prints p50/p99 of `--requests` renders of the first page as a collector of two queues and as a
supervisor (every queue), and of a deep page (offset paging: the whole order is computed).
Issue 12's target: the queue page with 10,000 open tasks in under 300 ms."""

from __future__ import annotations

import argparse
import asyncio
import random
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import _common


def fill(url: str, n: int, seed: int) -> dict[str, int]:
    """`n` loans of `n` borrowers, each with one open task (calls in two collector queues, field
    visits), a mark for a third of them (a few with an arrangement due soon), one contact today
    for half the people, some tasks already claimed or past their deadline."""
    from sqlalchemy import insert
    from sqlmodel import Session

    from db.contacts import ContactRow
    from db.desk_marks import LoanMark
    from db.store import make_engine
    from db.tables import BorrowerRow, LoanRow, TaskRow

    rng = random.Random(seed)
    now = datetime.now(UTC)
    today = now.date()
    borrowers, loans, tasks, marks, contacts = [], [], [], [], []
    queues = ["collectors", "senior-collectors", "field-agents"]
    for i in range(n):
        loan_id, person = f"BQ-{i:06d}", f"P-{i:06d}"
        dpd = rng.randint(5, 170)
        queue = queues[0] if dpd < 15 else queues[1] if dpd < 45 else queues[2]
        kind = "field_visit" if queue == "field-agents" else "call"
        borrowers.append(
            {
                "borrower_id": person,
                "name": f"Borrower {i}",
                "phone": f"+86138{i:08d}",
                "email": "",
                "address": "",
                "timezone": "Asia/Shanghai",
                "language": "zh",
            }
        )
        principal = Decimal(rng.randint(1_000, 50_000))
        loans.append(
            {
                "loan_id": loan_id,
                "borrower_id": person,
                "currency": "CNY",
                "principal": principal,
                "interest": principal / 20,
                "fees": Decimal(100),
                "penalties": Decimal(0),
                "due_date": today - timedelta(days=dpd),
                "product": "consumer",
                "policy": "default",
                "workflow_id": f"collection-{loan_id}",
                "stage": "early" if dpd < 30 else "middle" if dpd < 90 else "late",
                "created_at": now,
                "updated_at": now,
            }
        )
        due_by = now + timedelta(hours=rng.randint(-24, 48))
        tasks.append(
            {
                "task_id": f"{loan_id}/{kind}@{dpd}/1",
                "loan_id": loan_id,
                "workflow_id": f"collection-{loan_id}",
                "kind": kind,
                "queue": queue,
                "template": "call",
                "attempt": 1,
                "brief": "",
                "status": "open",
                "outcome": "",
                "note": "",
                "recording_ref": "",
                "due_by": due_by,
                "created_at": now - timedelta(hours=rng.randint(0, 72)),
                "closed_by": "",
                "assignee": "someone" if rng.random() < 0.1 else "",
            }
        )
        if rng.random() < 0.33:
            soon = today + timedelta(days=rng.randint(0, 20)) if rng.random() < 0.3 else None
            marks.append(
                {
                    "loan_id": loan_id,
                    "outstanding": principal,
                    "currency": "CNY",
                    "next_due": soon,
                    "stopped": False,
                    "held": False,
                    "paused": soon is not None,
                    "opted_out": "",
                    "refreshed_at": now,
                }
            )
        if rng.random() < 0.5:
            contacts.append(
                {
                    "key": f"{loan_id}/sms@{dpd}",
                    "borrower_id": person,
                    "loan_id": loan_id,
                    "channel": "sms" if rng.random() < 0.5 else "phone",
                    "purpose": "escalation",
                    "at": now - timedelta(hours=rng.randint(1, 20)),
                    "connected": False,
                }
            )
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            for table, rows in (
                (BorrowerRow, borrowers),
                (LoanRow, loans),
                (TaskRow, tasks),
                (LoanMark, marks),
                (ContactRow, contacts),
            ):
                for start in range(0, len(rows), 2000):
                    session.execute(insert(table), rows[start : start + 2000])
            session.commit()
            session.connection().exec_driver_sql("ANALYZE")
    finally:
        engine.dispose()
    return {"loans": n, "marks": len(marks), "contacts": len(contacts)}


async def measure(url: str, requests: int, warmup: int) -> dict[str, list[float]]:
    import httpx

    from api.app import create_app
    from desk.users import create_user

    password = "bench-password-1"
    create_user(url, "bench.collector", "collector", password, queues=["collectors", "senior-collectors"])
    create_user(url, "bench.supervisor", "supervisor", password)
    app = create_app(database_url=url, deliver_webhooks=False, desk_secret="bench-secret-" + "x" * 32)
    timings: dict[str, list[float]] = {}
    transport = httpx.ASGITransport(app=app)
    for who, path in (
        ("bench.collector", "/desk/"),
        ("bench.supervisor", "/desk/"),
        ("bench.supervisor", "/desk/?page=150"),
    ):
        async with httpx.AsyncClient(transport=transport, base_url="http://desk", follow_redirects=False) as http:
            form = await http.get("/desk/login")
            token = re.search(r'name="csrf" value="([^"]+)"', form.text)
            assert token is not None
            signed = await http.post("/desk/login", data={"csrf": token.group(1), "name": who, "password": password})
            assert signed.status_code == 303, signed.text
            label = f"{who.split('.')[1]} {path}"
            found: list[float] = []
            for i in range(warmup + requests):
                t0 = time.perf_counter()
                page = await http.get(path)
                took = time.perf_counter() - t0
                assert page.status_code == 200 and 'id="queue"' in page.text, page.text[:500]
                if i >= warmup:
                    found.append(took)
            timings[label] = found
            rows = page.text.count("<tr data-task=")
            total = re.search(r'id="total">(\d+)', page.text)
            timings[label + f" ({rows} rows of {total.group(1) if total else '?'})"] = timings.pop(label)
    app.state.api.engine.dispose()
    return timings


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from db import migrate

    with tempfile.TemporaryDirectory(prefix="bench-desk-") as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'collections.db'}"
        if args.database_url:
            from scan import OwnDatabase  # bench/scan.py: a database of its own, dropped after

            with OwnDatabase(args.database_url) as own:
                return await run(own, args, parser, "PostgreSQL, database of its own, dropped after")
        migrate.upgrade(url)
        return await run(url, args, parser, "SQLite file, in a temporary directory")


async def run(url: str, args: argparse.Namespace, parser: argparse.ArgumentParser, database: str) -> int:
    from db import migrate

    migrate.upgrade(url)
    _common.progress(f"filling {args.n:,} loans with one open task each")
    t0 = time.monotonic()
    counts = fill(url, args.n, args.seed)
    fill_s = time.monotonic() - t0
    _common.progress(f"rendering the queue page {args.requests} times per view")
    timings = await measure(url, args.requests, args.warmup)
    figures = [
        ("open tasks", f"{args.n:,} ({counts['marks']:,} loans with a mark, {counts['contacts']:,} contacts today)"),
        ("database", database),
        ("fill", f"{fill_s:.1f} s (not measured)"),
        ("", ""),
    ]
    for label, values in timings.items():
        figures.append(
            (
                label,
                (
                    f"p50 {_common.pct(values, 50) * 1000:.0f} ms, p99 {_common.pct(values, 99) * 1000:.0f} ms, "
                    f"max {max(values) * 1000:.0f} ms ({len(values)} requests)"
                ),
            )
        )
    notes = [
        (
            "each request is a whole page through the app in process (httpx ASGI transport): cookie check, "
            "user row, the ordered page query and the count, every row's guard preview, the template"
        ),
        "target (issue 12): under 300 ms with 10,000 open tasks",
    ]
    _common.report("The desk's queue page", parser, args, figures, notes)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000, help="open tasks (one per loan)")
    p.add_argument("--requests", type=int, default=100, help="renders measured per view")
    p.add_argument("--warmup", type=int, default=5, help="renders before measuring (caches, the policy file)")
    p.add_argument("--seed", type=int, default=12)
    p.add_argument("--database-url", help="a PostgreSQL server to use (a database of its own is made there)")
    args = p.parse_args()
    code = asyncio.run(main(args, p))
    _common.finish(code)
