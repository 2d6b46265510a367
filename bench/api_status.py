"""Status reads through the HTTP API: latency at a fixed rate, and what 10,000 reads do to a history.

    python bench/api_status.py [--loans 100] [--rate 50] [--seconds 60] [--reads 10000]
                               [--concurrency 20] [--plain]

The deployment of bench/_api.py: the embedded dev server, the project's worker in a process of
its own and the API (`python -m api`, uvicorn) in another. --loans loans are started at DPD 0
and left asleep (until DPD 1), then each is read once (not counted: the API process learns each
loan's workflow type once, with a `describe`). Two measurements, with a platform token:

1. Open loop: `GET /v1/loans/{id}` at --rate requests/s for --seconds, round robin over the
   loans. Request i is due at start + i/rate and is sent then whether or not the earlier ones
   have been answered (no waiting for answers, so a slow answer cannot hold the next requests
   back and hide its own cost: no coordinated omission); its latency is counted from the time
   it was due to its answer. The issue's target on this machine: p50 < 50 ms, p99 < 200 ms.
2. One loan read --reads times, --concurrency at a time, as fast as that goes: the loan's
   history event count before and after (the target: no growth; a status read is the
   `status_at` query, which writes nothing, not an update), with the reads' rate and latency.

What a read costs: uvicorn and FastAPI (the token from the API's in-memory cache, the route, the
`CollectionStatus` answer validated and dumped as JSON), then `client.get_status`: the loan's
type from the API process's memory after its first read and one `status_at` query, which the
server hands to the worker as a query task; the worker answers from the cached workflow (the
decider's view of the loan brought to now; no replay while the loan stays in the worker's cache,
MAX_CACHED_WORKFLOWS). The database is not read, but for the token once per
API_TOKEN_CACHE_SECONDS. The figures and what dominates them: docs/benchmarks.md, "HTTP API".
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import _api
import _common

TARGET_P50 = 0.050
TARGET_P99 = 0.200


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


async def open_loop(http: Any, ids: list[str], rate: float, seconds: float) -> dict[str, Any]:
    """Requests at fixed times; latency from each one's due time to its answer."""
    total = int(rate * seconds)
    latencies: list[float] = [0.0] * total
    lags: list[float] = [0.0] * total
    errors: list[str] = []

    async def one(i: int, due: float) -> None:
        try:
            response = await http.get(f"/v1/loans/{ids[i % len(ids)]}")
            if response.status_code != 200:
                errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
        except Exception as exc:  # noqa: BLE001  # a benchmark counts failures, it does not stop on them
            errors.append(f"{type(exc).__name__}: {exc}")
        latencies[i] = time.perf_counter() - due

    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        lags[i] = time.perf_counter() - due
        tasks.append(asyncio.create_task(one(i, due)))
    await asyncio.gather(*tasks)
    return {
        "latencies": latencies,
        "lags": lags,
        "errors": errors,
        "wall": time.perf_counter() - start,
        "sent": total,
    }


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import httpx

    from client import wait_quiet
    from infra.temporal import workflow_id

    encryption = _common.configure(args.plain)  # the children inherit the key through the environment
    ids = [f"ASTAT-{i:05d}" for i in range(args.loans)]
    with tempfile.TemporaryDirectory(prefix="bench-api-status-") as tmp_name:
        async with _api.api_stack(Path(tmp_name)) as stack:
            _common.progress(f"starting {len(ids)} loans")
            start_wall = await _api.start_loans(stack, ids)
            # Pool big enough that no request waits for a connection at the client: an open
            # loop sends whatever is due, and any queueing is then the API's.
            limits = httpx.Limits(
                max_connections=1000, max_keepalive_connections=200, keepalive_expiry=_api.KEEPALIVE_EXPIRY
            )
            async with httpx.AsyncClient(
                base_url=stack.base_url, headers=stack.headers, limits=limits, timeout=60
            ) as http:
                await _api.wait_idle([stack.worker_pid, stack.api_pid])
                _common.progress("each loan read once (not counted)")
                await _common.bounded(len(ids), args.concurrency, lambda i: http.get(f"/v1/loans/{ids[i]}"))
                await _api.wait_idle([stack.worker_pid, stack.api_pid])

                _common.progress(f"open loop: {args.rate:g} requests/s for {args.seconds:g} s")
                cpu = _api.ProcessCpu(stack.pids())
                loop = await open_loop(http, ids, args.rate, args.seconds)
                loop_cpu = _api.ProcessCpu.describe(*cpu.read())

                one_id = ids[0]
                await wait_quiet(stack.client, one_id)
                before = await _api.history_length(stack.client, workflow_id(one_id))
                _common.progress(f"{args.reads:,} reads of {one_id}, {args.concurrency} at a time")
                read_errors: list[str] = []

                async def read(_: int) -> None:
                    try:
                        response = await http.get(f"/v1/loans/{one_id}")
                        if response.status_code != 200:
                            read_errors.append(f"HTTP {response.status_code}: {response.text[:200]}")
                    except Exception as exc:  # noqa: BLE001  # counted, as above
                        read_errors.append(f"{type(exc).__name__}: {exc}")

                cpu = _api.ProcessCpu(stack.pids())
                reads_wall, reads_lat = await _common.bounded(args.reads, args.concurrency, read)
                reads_cpu = _api.ProcessCpu.describe(*cpu.read())
                after = await _api.history_length(stack.client, workflow_id(one_id))

    lat = loop["latencies"]
    p50, p90, p99 = (_common.pct(lat, q) for q in (50, 90, 99))
    verdict = "meets" if p50 < TARGET_P50 and p99 < TARGET_P99 else "MISSES"
    growth = after - before
    figures = [
        (
            "setup",
            (
                f"dev server (SQLite file, WAL), worker process, API process (python -m api, uvicorn); "
                f"{args.loans} loans at DPD 0, asleep (started in {start_wall:.1f} s), each read once first"
            ),
        ),
        ("payload encryption", encryption),
        ("", ""),
        (
            "open loop",
            (
                f"GET /v1/loans/{{id}} at {args.rate:g}/s for {args.seconds:g} s: {loop['sent']} sent, "
                f"answered at {loop['sent'] / loop['wall']:.1f}/s, latency from each request's due time"
            ),
        ),
        (
            "latency",
            (
                f"p50 {_ms(p50)}, p90 {_ms(p90)}, p99 {_ms(p99)}, max {_ms(max(lat))} -> {verdict} the target "
                f"(p50 < {_ms(TARGET_P50)}, p99 < {_ms(TARGET_P99)})"
            ),
        ),
        ("errors", f"{len(loop['errors'])}" + (f" (first: {loop['errors'][0]})" if loop["errors"] else "")),
        ("sender lag", f"p99 {_ms(_common.pct(loop['lags'], 99))}, max {_ms(max(loop['lags']))} (send time - due)"),
        ("CPU while reading", loop_cpu),
        ("", ""),
        (
            "one loan, many reads",
            (
                f"{args.reads:,} reads of {one_id}, {args.concurrency} in flight: {args.reads / reads_wall:.0f}/s "
                f"({reads_wall:.1f} s; p50 {_ms(_common.pct(reads_lat, 50))}, p99 {_ms(_common.pct(reads_lat, 99))}); "
                f"errors {len(read_errors)}" + (f" (first: {read_errors[0]})" if read_errors else "")
            ),
        ),
        (
            "history events",
            (
                f"{before} before, {after} after -> "
                + ("no growth (meets the target)" if growth == 0 else f"GREW by {growth}")
            ),
        ),
        ("CPU while reading one", reads_cpu),
    ]
    notes = [
        (
            "bench = this process (httpx), api = the uvicorn process, worker = the project's worker process, "
            "server = the dev server; percentages are of one core"
        ),
        (
            "sender lag: how late this process sent requests against their schedule; the latency includes it, and a "
            "large lag says this process, not the API, fell behind"
        ),
    ]
    _common.report("Status reads through the HTTP API (dev server)", parser, args, figures, notes)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--loans", type=int, default=100, help="running loans read round robin (default 100)")
    parser.add_argument("--rate", type=float, default=50, help="requests per second in the open loop (default 50)")
    parser.add_argument("--seconds", type=float, default=60, help="length of the open loop (default 60)")
    parser.add_argument("--reads", type=int, default=10_000, help="reads of one loan (default 10,000)")
    parser.add_argument("--concurrency", type=int, default=20, help="reads of one loan in flight (default 20)")
    _common.add_common_arguments(parser)
    arguments = parser.parse_args()
    code = asyncio.run(main(arguments, parser))
    _common.finish(code)
    sys.exit(code)
