"""Throughput on the embedded dev server: loan starts/s and payments/s beside a trivial workflow.

    python bench/throughput.py [--n 300] [--concurrency 50] [--warmup 10] [--order trivial-first]
                               [--payment full|partial] [--plain]

One dev server (SQLite file in a temp dir, WAL, synchronous=NORMAL), the project's data converter
and, in this process, two workers: the project's (`worker.create_worker`) and one for a trivial
workflow defined below (one activity, then done). Measured in the same run, one after the other,
at most --concurrency items in flight:

- trivial:    start + result() per workflow                        -> trivial workflows/s
- loan start: start_collection + until its `loans` row exists      -> loan starts/s
              (`register_loan` is the last thing a new loan does before its first sleep)
- payment:    register_payment until the receipt, then (--payment full, which closes the loan)
              until the loan has completed: ledger rows, confirmation SMS, audit, done
                                                                    -> payments/s
              (the receipt comes first: the decider answers before its effects are written;
              the receipt's own latency is shown beside it; partial: 100.00, until the receipt)

The ratios divide each collection rate by the trivial rate (issue target: at least 0.5).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from temporalio import activity, workflow
from temporalio.worker import PollerBehaviorAutoscaling, Worker

with workflow.unsafe.imports_passed_through():  # the sandbox re-imports this module for TrivialWorkflow
    import _common

TARGET_RATIO = 0.5
PARTIAL = Decimal("100.00")


@activity.defn
async def trivial_step(name: str) -> str:
    return f"done {name}"


@workflow.defn
class TrivialWorkflow:
    """The yardstick: one activity and complete."""

    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(trivial_step, name, start_to_close_timeout=timedelta(seconds=60))


async def run_trivial(client, queue: str, n: int, concurrency: int, tag: str) -> tuple[float, list[float], str]:
    async def one(i: int) -> None:
        handle = await client.start_workflow(
            TrivialWorkflow.run, f"{tag}-{i}", id=f"trivial-{tag}-{i}", task_queue=queue
        )
        await handle.result()

    cpu = _common.CpuMeter()
    wall, lat = await _common.bounded(n, concurrency, one)
    return wall, lat, cpu.describe()


async def run_collection(client, queue: str, regs, n: int, concurrency: int, tag: str, full: bool) -> dict:
    import starter
    from models import Payment
    from tests.helpers import make_loan

    loans = [make_loan(f"BENCH-{tag}-{i:05d}") for i in range(n)]
    acks: list[float] = [0.0] * n

    async def start(i: int) -> None:
        t0 = time.perf_counter()
        await starter.start_collection(client, loans[i], task_queue=queue)
        acks[i] = time.perf_counter() - t0
        await regs.wait(loans[i].loan_id)

    receipts: list[float] = [0.0] * n

    async def pay(i: int) -> None:
        loan = loans[i]
        amount = loan.balance().total if full else PARTIAL
        t0 = time.perf_counter()
        receipt = await starter.register_payment(
            client,
            loan.loan_id,
            Payment(
                payment_id=f"PAY-{loan.loan_id}",
                amount=amount,
                currency=loan.currency,
                paid_at=datetime.now(UTC),
            ),
        )
        receipts[i] = time.perf_counter() - t0
        if receipt.closed != full:
            raise RuntimeError(
                f"{loan.loan_id}: unexpected receipt for a {'full' if full else 'partial'} payment: {receipt}"
            )
        if full:
            await client.get_workflow_handle(f"collection-{loan.loan_id}").result()

    cpu = _common.CpuMeter()
    start_wall, start_lat = await _common.bounded(n, concurrency, start)
    start_cpu, cpu = cpu.describe(), _common.CpuMeter()
    pay_wall, pay_lat = await _common.bounded(n, concurrency, pay)
    pay_cpu = cpu.describe()
    return {
        "start": (start_wall, start_lat),
        "ack": acks,
        "pay": (pay_wall, pay_lat),
        "receipt": receipts,
        "start_cpu": start_cpu,
        "pay_cpu": pay_cpu,
    }


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    encryption = _common.configure(args.plain)
    from infra.settings import settings
    from worker import create_worker

    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp_name:
        tmp = Path(tmp_name)
        db_file = tmp / "collections.db"
        _common.progress(f"starting the dev server (state in {tmp})")
        env = await _common.start_dev_server(tmp)
        full = args.payment == "full"
        async with env:
            client = env.client
            cq, tq = f"bench-collections-{uuid.uuid4().hex[:8]}", f"bench-trivial-{uuid.uuid4().hex[:8]}"
            collection_worker = create_worker(client, task_queue=cq, database_url=f"sqlite:///{db_file}")
            trivial_worker = Worker(
                client,
                task_queue=tq,
                workflows=[TrivialWorkflow],
                activities=[trivial_step],
                max_cached_workflows=settings().max_cached_workflows,
                workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
                activity_task_poller_behavior=PollerBehaviorAutoscaling(),
            )
            async with collection_worker, trivial_worker, _common.LoanRegistrations(db_file) as regs:
                if args.warmup:
                    _common.progress(f"warm-up: {args.warmup} trivial workflows and {args.warmup} loans (not counted)")
                    await run_trivial(client, tq, args.warmup, args.concurrency, "warmup")
                    await run_collection(client, cq, regs, args.warmup, args.concurrency, "warmup", full)
                results: dict = {}
                order = ["trivial", "collection"] if args.order == "trivial-first" else ["collection", "trivial"]
                for what in order:
                    _common.progress(f"{what}: {args.n} with {args.concurrency} in flight")
                    if what == "trivial":
                        results["trivial"] = await run_trivial(client, tq, args.n, args.concurrency, "run")
                    else:
                        results["collection"] = await run_collection(
                            client, cq, regs, args.n, args.concurrency, "run", full
                        )

    n = args.n
    t_wall, t_lat, t_cpu = results["trivial"]
    c = results["collection"]
    s_wall, s_lat = c["start"]
    p_wall, p_lat = c["pay"]
    trivial_rate = n / t_wall
    start_rate, pay_rate = n / s_wall, n / p_wall
    life_wall = s_wall + p_wall
    life_rate = n / life_wall
    ratio_start, ratio_pay = start_rate / trivial_rate, pay_rate / trivial_rate

    def fmt(r: float) -> str:  # three decimals when two would round onto the target
        return f"{r:.3f}" if abs(r - TARGET_RATIO) < 0.005 else f"{r:.2f}"

    def verdict(r: float) -> str:
        return "meets the 0.5 target" if r >= TARGET_RATIO else "BELOW the 0.5 target"

    figures = [
        (
            "setup",
            (
                f"dev server, SQLite file + WAL/synchronous=NORMAL, {n} items each, {args.concurrency} in flight, "
                f"{args.warmup} warm-up each, order {args.order}"
            ),
        ),
        ("payload encryption", encryption),
        ("trivial workflow", f"{trivial_rate:6.1f} /s  start->completed ({t_wall:.1f} s; {_common.ms(t_lat)})"),
        (
            "loan starts",
            (
                f"{start_rate:6.1f} /s  start->registered, asleep ({s_wall:.1f} s; {_common.ms(s_lat)}; "
                f"start call alone {_common.ms(c['ack'])})"
            ),
        ),
        (
            "payments",
            (
                f"{pay_rate:6.1f} /s  "
                + (
                    "request->receipt->loan completed (paid in full)"
                    if full
                    else f"request->receipt, partial ({PARTIAL})"
                )
                + f" ({p_wall:.1f} s; {_common.ms(p_lat)}; receipt alone {_common.ms(c['receipt'])})"
            ),
        ),
        ("CPU while trivial", t_cpu),
        ("CPU while starting", c["start_cpu"]),
        ("CPU while paying", c["pay_cpu"]),
        (
            "loan lifecycle",
            (
                f"{life_rate:6.1f} /s  start, pay{' in full, closed' if full else ' (partial)'} "
                f"({life_wall:.1f} s in all)"
            ),
        ),
        ("ratio starts", f"{fmt(ratio_start)} x trivial  -> {verdict(ratio_start)}"),
        ("ratio payments", f"{fmt(ratio_pay)} x trivial  -> {verdict(ratio_pay)}"),
        (
            "ratio lifecycle",
            (
                f"{life_rate / trivial_rate:.2f} x trivial (two client round trips per loan against one; "
                "for information)"
            ),
        ),
    ]
    notes = [
        (
            "the server (one SQLite file) and both workers share this machine's CPUs with anything else running: "
            "see the other load row; compare runs made on a quiet machine"
        ),
        (
            "loan start = StartWorkflowExecution, a workflow task, the `prepare` activity (policy and rules "
            "pinned, loan row and audit written), a workflow task that sets the search attributes and the timer "
            "for DPD 1"
        ),
        (
            "payment in full = an update answered by the decider at once, then one `perform` activity (ledger rows, "
            "tasks closed, guard + confirmation SMS, audit), then completion"
        ),
    ]
    _common.report(
        "Collection throughput vs a trivial one-activity workflow (dev server)", parser, args, figures, notes
    )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="loans, and trivial workflows (default 300)")
    parser.add_argument("--concurrency", type=int, default=50, help="items in flight (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="uncounted items of each kind first (default 10)")
    parser.add_argument("--order", choices=["trivial-first", "collection-first"], default="trivial-first")
    parser.add_argument(
        "--payment",
        choices=["full", "partial"],
        default="full",
        help=f"pay each loan in full (closes it: confirmation SMS, audit) or {PARTIAL} (default full)",
    )
    _common.add_common_arguments(parser)
    arguments = parser.parse_args()
    code = asyncio.run(main(arguments, parser))
    _common.finish(code)
    sys.exit(code)
