"""Worker resident memory with many loans in flight (embedded dev server).

    python bench/memory.py [--n 2000] [--max-cached 2000] [--concurrency 100] [--plain]

Starts the dev server (SQLite file in a temp dir, WAL) and the project's worker
(`worker.create_worker`, with --max-cached as max_cached_workflows) in a child process of its
own, so its RSS is the worker alone: no client, no server. Then starts --n loans at DPD 0 and
waits until every one is registered (the last thing before its first sleep, until DPD 1) and the
worker's CPU is idle. RSS is read from /proc/<worker pid>/status (VmRSS; VmHWM is the peak)
idle, after 10 warm-up loans, at each quarter of the loans and at the end.

Issue 5's target: 10,000 loans in flight under 500 MB with a bounded workflow cache. The
default run is smaller, so the table projects 10,000 from the readings: KiB per cached loan, and
KiB per loan past the cache when --n exceeds --max-cached by enough to fit one (evicted
workflows hold little worker memory until their next task replays them, but not nothing).
--n 10000 measures the target instead of projecting it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
import uuid
from pathlib import Path

import _common

CHILD_ENV = "BENCH_MEMORY_WORKER"
TARGET_LOANS = 10_000
TARGET_BYTES = 500 * 1000 * 1000  # 500 MB
WARMUP = 10
MIN_PAST_SPREAD = 200
"""Loans between the first and last reading past the cache before their slope means anything."""


def mib(kib: float) -> str:
    return f"{kib / 1024:.0f} MiB"


# ----------------------------------------------------------------------------- the worker child


async def worker_child(spec: dict) -> None:
    import logging

    from infra.temporal import connect
    from worker import create_worker, until_stopped

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    client = await connect(spec["address"], spec["namespace"])
    worker = create_worker(
        client, task_queue=spec["queue"], database_url=spec["db_url"], max_cached_workflows=spec["cache"]
    )
    async with worker:
        print("ready", flush=True)
        await until_stopped()


# ----------------------------------------------------------------------------- the benchmark


async def wait_idle(pid: int, quiet_cpu: float = 0.05, quiet_for: int = 2, timeout: float = 120) -> float:
    """Wait until the process used less than `quiet_cpu` CPU seconds in each of `quiet_for`
    consecutive seconds; returns the seconds waited."""
    t0, quiet, last = time.monotonic(), 0, _common.cpu_seconds(pid)
    while quiet < quiet_for and time.monotonic() - t0 < timeout:
        await asyncio.sleep(1)
        now = _common.cpu_seconds(pid)
        quiet = quiet + 1 if now - last < quiet_cpu else 0
        last = now
    return time.monotonic() - t0


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    encryption = _common.configure(args.plain)  # the child inherits the key through the environment
    import starter
    from tests.helpers import make_loan

    samples: list[tuple[str, int, dict[str, int]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp_name:
        tmp = Path(tmp_name)
        db_file = tmp / "collections.db"
        _common.progress(f"starting the dev server (state in {tmp})")
        env = await _common.start_dev_server(tmp)
        async with env:
            client = env.client
            queue = f"bench-memory-{uuid.uuid4().hex[:8]}"
            spec = {
                "address": client.service_client.config.target_host,
                "namespace": client.namespace,
                "queue": queue,
                "db_url": f"sqlite:///{db_file}",
                "cache": args.max_cached,
            }
            child = await _common.start_worker_process(
                Path(__file__).resolve(), {**os.environ, CHILD_ENV: json.dumps(spec)}, None, timeout=60
            )
            pid = child.pid
            try:
                await wait_idle(pid, timeout=10)
                samples.append(("idle, no loan", 0, _common.rss_kib(pid)))
                async with _common.LoanRegistrations(db_file) as regs:

                    async def start_range(lo: int, hi: int, tag: str) -> float:
                        loans = [make_loan(f"MEM-{tag}-{i:06d}") for i in range(lo, hi)]

                        async def one(i: int) -> None:
                            await starter.start_collection(client, loans[i], task_queue=queue)
                            await regs.wait(loans[i].loan_id)

                        wall, _ = await _common.bounded(len(loans), args.concurrency, one)
                        return wall

                    await start_range(0, WARMUP, "warmup")
                    await wait_idle(pid, timeout=30)
                    samples.append((f"{WARMUP} warm-up loans", WARMUP, _common.rss_kib(pid)))
                    points = {max(1, args.n * q // 4) for q in (1, 2, 3, 4)}
                    if 0 < args.max_cached - WARMUP < args.n:
                        points.add(args.max_cached - WARMUP)  # the cache just full
                    done, start_wall, idle_wait = 0, 0.0, 0.0
                    for upto in sorted(points):
                        start_wall += await start_range(done, upto, "run")
                        done = upto
                        t_idle = time.perf_counter()
                        await wait_idle(pid)
                        idle_wait += time.perf_counter() - t_idle
                        samples.append((f"{WARMUP + upto} loans asleep", WARMUP + upto, _common.rss_kib(pid)))
                        _common.progress(f"{upto}/{args.n} loans asleep, worker RSS {mib(samples[-1][2]['VmRSS'])}")
                running = await client.count_workflows(f"TaskQueue = '{queue}' AND ExecutionStatus = 'Running'")
            finally:
                child.send_signal(signal.SIGTERM)
                try:
                    await asyncio.wait_for(child.wait(), timeout=30)
                except TimeoutError:
                    child.kill()
                    await child.wait()

    idle = samples[0][2]["VmRSS"]
    final = samples[-1][2]["VmRSS"]
    peak = samples[-1][2]["VmHWM"]
    model = MemoryModel(samples[1:], args.max_cached)
    figures = [
        (
            "setup",
            (
                f"dev server (SQLite file, WAL), project worker in its own process, {WARMUP} warm-up + {args.n} loans "
                f"at DPD 0 started {args.concurrency} at a time; all asleep until DPD 1"
            ),
        ),
        ("max_cached_workflows", f"{args.max_cached} (project default {_default_cache()})"),
        ("payload encryption", encryption),
        ("loans running", f"{running.count} on the server at the end"),
        (
            "start rate",
            (
                f"{args.n / start_wall:.1f} loans/s to asleep ({start_wall:.0f} s, plus {idle_wait:.0f} s "
                "waiting for an idle worker before each reading)"
            ),
        ),
        ("", ""),
        ("RSS idle, no loan", f"{mib(idle)}"),
    ]
    for label, _loans, rss in samples[1:]:
        figures.append((f"RSS {label}", f"{mib(rss['VmRSS'])} (peak so far {mib(rss['VmHWM'])})"))
    figures += [
        ("", ""),
        (
            "per cached loan",
            f"{model.per_cached:.0f} KiB (fit over {model.cached_points} readings up to the cache size)",
        ),
        (
            "per loan past cache",
            (
                f"{model.per_evicted:.0f} KiB (fit over {model.evicted_points} readings past the cache "
                "size; it flattens as loans are added, so a short run overstates it)"
                if model.per_evicted is not None
                else f"not measured (needs --n at least {MIN_PAST_SPREAD} above --max-cached)"
            ),
        ),
        (f"{TARGET_LOANS:,} loans", _verdict(args, model, final, peak)),
        ("cache that fits", _fitting(model)),
    ]
    notes = [
        (
            "readings are taken with the worker idle and every loan asleep; projections are linear fits, "
            f"only --n {TARGET_LOANS} measures the target"
        ),
    ]
    if args.n + WARMUP > args.max_cached:
        notes.append(
            f"{args.n + WARMUP - args.max_cached} workflows were evicted from the cache (replayed on their next task)"
        )
    _common.report("Worker memory with loans in flight (dev server)", parser, args, figures, notes)
    return 0


def _slope(points: list[tuple[int, int]]) -> float | None:
    """Least-squares KiB per loan over (loans, RSS KiB) readings; None with fewer than two."""
    if len(points) < 2:
        return None
    mx = sum(x for x, _ in points) / len(points)
    my = sum(y for _, y in points) / len(points)
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else None


class MemoryModel:
    """RSS = at_warm + per_cached x (cached loans) + per_evicted x (loans beyond the cache),
    fitted on the idle readings (loans, RSS) from the warm-up on."""

    def __init__(self, samples: list[tuple[str, int, dict[str, int]]], cache: int) -> None:
        readings = [(loans, rss["VmRSS"]) for _, loans, rss in samples]
        self.cache = cache
        self.warm_loans, self.warm = readings[0]
        upto = [r for r in readings if r[0] <= cache]
        past = [r for r in readings if r[0] >= cache]
        self.cached_points = len(upto)
        self.per_cached = _slope(upto) or _slope(readings[:2]) or 0.0
        spread = max((r[0] for r in past), default=0) - min((r[0] for r in past), default=0)
        self.evicted_points = len(past)
        self.per_evicted = _slope(past) if spread >= MIN_PAST_SPREAD else None

    def rss_at(self, loans: int, cache: int | None = None, past: float = 0.0) -> float:
        """RSS for `loans` in flight with `cache`; `past` KiB for each loan beyond the cache."""
        cache = self.cache if cache is None else cache
        cached = min(loans, cache)
        return self.warm + self.per_cached * (cached - self.warm_loans) + past * max(0, loans - cache)

    def fitting_cache(self) -> int:
        """The largest cache whose cached loans alone stay under the target."""
        best = 0
        for cache in range(self.warm_loans, TARGET_LOANS + 1, 10):
            if self.rss_at(TARGET_LOANS, cache) * 1024 < TARGET_BYTES:
                best = cache
        return best


def _fitting(model: MemoryModel) -> str:
    return (
        f"max_cached_workflows <= {model.fitting_cache()} keeps the cached loans under 500 MB "
        "(plus whatever loans past the cache cost: see above)"
    )


def _verdict(args: argparse.Namespace, model: MemoryModel, final: int, peak: int) -> str:
    if args.n + WARMUP >= TARGET_LOANS:
        measured = "meets" if final * 1024 < TARGET_BYTES and peak * 1024 < TARGET_BYTES else "MISSES"
        return f"measured: {mib(final)} at the end, peak {mib(peak)} -> {measured} the 500 MB target"
    low = model.rss_at(TARGET_LOANS)
    cached = min(TARGET_LOANS, args.max_cached)
    if low * 1024 >= TARGET_BYTES:
        return (
            f"projected at least {mib(low)} ({low * 1024 / 1e6:.0f} MB) for the {cached} cached loans alone "
            f"-> OVER the 500 MB target"
        )
    if model.per_evicted is None or model.per_evicted <= 0:
        return (
            f"projected {mib(low)} ({low * 1024 / 1e6:.0f} MB) with {cached} cached, counting nothing for loans "
            f"past the cache -> under the target only if they cost nothing: measure with --n {TARGET_LOANS}"
        )
    high = model.rss_at(TARGET_LOANS, past=model.per_evicted)
    if high * 1024 < TARGET_BYTES:
        return (
            f"projected {mib(low)}-{mib(high)} with {cached} cached -> under the 500 MB target "
            f"(measure with --n {TARGET_LOANS})"
        )
    return (
        f"projected between {mib(low)} (loans past the cache free) and {mib(high)} "
        f"(their {model.per_evicted:.0f} KiB each going on linearly) -> undecided: measure with --n {TARGET_LOANS}"
    )


def _default_cache() -> int:
    from infra.settings import settings

    return settings().max_cached_workflows


if __name__ == "__main__":
    child_spec = os.environ.get(CHILD_ENV)
    if child_spec:
        asyncio.run(worker_child(json.loads(child_spec)))
        _common.finish(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--n", type=int, default=2000, help=f"loans in flight (default 2000; the issue's target is {TARGET_LOANS:,})"
    )
    parser.add_argument(
        "--max-cached",
        type=int,
        default=None,
        help="the worker's max_cached_workflows (default: the project setting, MAX_CACHED_WORKFLOWS)",
    )
    parser.add_argument("--concurrency", type=int, default=100, help="loan starts in flight (default 100)")
    _common.add_common_arguments(parser)
    arguments = parser.parse_args()
    if arguments.max_cached is None:
        arguments.max_cached = _default_cache()
    code = asyncio.run(main(arguments, parser))
    _common.finish(code)
    sys.exit(code)
