"""Payments through the HTTP API against direct client calls: same server, same loans, same run.

    python bench/api_payments.py [--n 200] [--concurrency 50] [--rounds 6] [--warmup 10] [--plain]

The deployment of bench/_api.py: the embedded dev server (SQLite file, WAL), the project's
worker in a process of its own and the API (`python -m api`, uvicorn) in another, sharing the
collection database (a SQLite file) with the worker. --n loans are started at DPD 0 and left
asleep. Each round then pays every loan once directly (`client.register_payment` from this
process, at most --concurrency in flight) and once through the API (`POST
/v1/loans/{id}/payments` with an Idempotency-Key and a platform token, httpx with a pool of
--concurrency connections), 100.00 each (partial: the loans stay open), timed from the request to
the receipt. The order of the two phases alternates from round to round (direct first in odd
rounds), so neither always runs on a warmer system, and each phase starts with the worker idle
(the last phase's ledger rows, messages and audit written), so neither pays for the other's
effects. Figures: payments/s and p50/p99 latency of each, per round and in all, the ratio
API/direct (the issue's target: at least 0.8x) and the CPU each process used per payment.

Where the API's extra cost goes (the direct path is the same `register_payment`: a `request`
signal and a `reply` query, and the worker's workflow task and `perform` activity; the API adds,
per payment):

- HTTP: this process's httpx sends the request, uvicorn parses it, FastAPI validates the body
  (pydantic) and the headers, and serialises the receipt back; one more process hop each way.
- The token check: `Authorization: Bearer` is looked up in memory (API_TOKEN_CACHE_SECONDS,
  5 s); the token table is read once per 5 s per token, not per request.
- The idempotency record: two writes to the collection database per payment, each its own
  transaction in a thread of the API's pool (`api.idempotency.claim`: an INSERT of the key
  and the body's fingerprint before the request goes to the loan; `complete`: an UPDATE with
  the answer after the receipt). With SQLite these are commits to the same file the worker
  writes the loan's ledger rows and audit entries to, one writer at a time across both processes.
- JSON: the receipt is dumped to JSON once, for the record, and answered from that text
  (tens of microseconds: nothing next to the rest).
- The API process itself: its event loop, its own Temporal client (the same signal and query
  the direct path makes from this process) and its database threads take a share of the same
  two cores the worker and the server need.

On a 2-core machine every phase keeps both cores busy (the CPU rows: worker and server take
most of it), so the ratio follows the CPU each way costs per payment, summed over all the
processes: the "CPU per payment" rows say where the API's extra goes. The figures and what
dominates them: docs/benchmarks.md, "HTTP API". Status reads through the API are
bench/api_status.py's.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import _api
import _common

TARGET_RATIO = 0.8
AMOUNT = Decimal("100.00")
ROLES = ("bench", "api", "worker", "server")


@dataclass
class Phase:
    """One timed phase: every loan paid once, one way."""

    how: str
    wall: float
    latencies: list[float]
    cpu: dict[str, float]
    errors: list[str] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.wall


async def pay_direct(stack: _api.Stack, ids: list[str], concurrency: int, tag: str) -> Phase:
    """Each loan once through `client.register_payment` (signal + reply query) from this process."""
    from client import register_payment
    from models import Payment

    errors: list[str] = []

    async def one(i: int) -> None:
        payment = Payment(payment_id=f"direct-{tag}-{ids[i]}", amount=AMOUNT, currency="CNY", paid_at=datetime.now(UTC))
        try:
            await register_payment(stack.client, ids[i], payment)
        except Exception as exc:  # noqa: BLE001  # a benchmark counts failures, it does not stop on them
            errors.append(f"{ids[i]}: {type(exc).__name__}: {exc}")

    cpu = _api.ProcessCpu(stack.pids())
    wall, latencies = await _common.bounded(len(ids), concurrency, one)
    return Phase("direct", wall, latencies, cpu.read()[1], errors)


async def pay_api(stack: _api.Stack, http: Any, ids: list[str], concurrency: int, tag: str) -> Phase:
    """Each loan once through `POST /v1/loans/{id}/payments` (Idempotency-Key per loan and round)."""
    errors: list[str] = []

    async def one(i: int) -> None:
        body = {"amount": str(AMOUNT), "currency": "CNY", "paid_at": datetime.now(UTC).isoformat()}
        key = f"api-{tag}-{ids[i]}"
        try:
            response = await http.post(f"/v1/loans/{ids[i]}/payments", json=body, headers={"Idempotency-Key": key})
        except Exception as exc:  # noqa: BLE001  # counted, as above
            errors.append(f"{ids[i]}: {type(exc).__name__}: {exc}")
            return
        if response.status_code != 201:
            errors.append(f"{ids[i]}: HTTP {response.status_code}: {response.text[:200]}")

    cpu = _api.ProcessCpu(stack.pids())
    wall, latencies = await _common.bounded(len(ids), concurrency, one)
    return Phase("api", wall, latencies, cpu.read()[1], errors)


def _lat(values: list[float]) -> str:
    return f"p50 {_common.pct(values, 50) * 1000:.0f} ms, p99 {_common.pct(values, 99) * 1000:.0f} ms"


def _cpu_per_payment(phases: list[Phase]) -> str:
    """CPU milliseconds per payment of each process, over these phases."""
    n = sum(len(p.latencies) for p in phases)
    per = {role: sum(p.cpu[role] for p in phases) / n * 1000 for role in ROLES}
    return ", ".join(f"{role} {per[role]:.1f}" for role in ROLES) + f" (sum {sum(per.values()):.1f}) ms"


async def main(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    import httpx

    encryption = _common.configure(args.plain)  # the children inherit the key through the environment
    ids = [f"APAY-{i:05d}" for i in range(args.n)]
    warm = [f"APAY-W{i:03d}" for i in range(args.warmup)]
    phases: list[tuple[int, Phase]] = []
    with tempfile.TemporaryDirectory(prefix="bench-api-payments-") as tmp_name:
        async with _api.api_stack(Path(tmp_name)) as stack:
            _common.progress(f"starting {len(warm) + len(ids)} loans")
            start_wall = await _api.start_loans(stack, warm + ids)
            limits = httpx.Limits(
                max_connections=args.concurrency,
                max_keepalive_connections=args.concurrency,
                keepalive_expiry=_api.KEEPALIVE_EXPIRY,
            )
            async with httpx.AsyncClient(
                base_url=stack.base_url, headers=stack.headers, limits=limits, timeout=120
            ) as http:
                idle = [stack.worker_pid, stack.api_pid]
                if warm:
                    _common.progress(f"warm-up: {len(warm)} loans paid each way (not counted)")
                    await _api.wait_idle(idle)
                    await pay_direct(stack, warm, args.concurrency, "warmup")
                    await pay_api(stack, http, warm, args.concurrency, "warmup")
                idle_waits = 0.0
                for r in range(1, args.rounds + 1):
                    order = ["direct", "api"] if r % 2 else ["api", "direct"]
                    for how in order:
                        idle_waits += await _api.wait_idle(idle)
                        _common.progress(f"round {r}: {args.n} payments {how}, {args.concurrency} in flight")
                        if how == "direct":
                            phase = await pay_direct(stack, ids, args.concurrency, f"r{r}")
                        else:
                            phase = await pay_api(stack, http, ids, args.concurrency, f"r{r}")
                        phases.append((r, phase))
                        if phase.errors:
                            _common.progress(f"  {len(phase.errors)} failed, e.g. {phase.errors[0]}")

    direct = [p for _, p in phases if p.how == "direct"]
    api = [p for _, p in phases if p.how == "api"]
    direct_rate = sum(len(p.latencies) for p in direct) / sum(p.wall for p in direct)
    api_rate = sum(len(p.latencies) for p in api) / sum(p.wall for p in api)
    ratio = api_rate / direct_rate
    ratios = [a.rate / d.rate for d, a in zip(direct, api, strict=True)]
    errors = [e for _, p in phases for e in p.errors]

    figures: list[tuple[str, str]] = [
        (
            "setup",
            (
                f"dev server (SQLite file, WAL), worker process, API process (python -m api, uvicorn), "
                f"collection database SQLite; {args.n} loans at DPD 0 (+{args.warmup} warm-up, paid each way "
                f"first, not counted), started in {start_wall:.1f} s; each round pays every loan {AMOUNT} CNY "
                f"directly and through the API, {args.concurrency} in flight, order alternating, worker idle "
                f"before each phase ({idle_waits:.0f} s waited in all)"
            ),
        ),
        ("payload encryption", encryption),
        ("", ""),
    ]
    for r, phase in phases:
        first = "direct first" if r % 2 else "API first"
        figures.append(
            (
                f"round {r} {phase.how}",
                (
                    f"{phase.rate:6.1f} /s  ({phase.wall:.1f} s; {_lat(phase.latencies)}; "
                    f"{_api.ProcessCpu.describe(phase.wall, phase.cpu)}; {first})"
                ),
            )
        )
    figures += [
        ("", ""),
        ("direct", f"{direct_rate:6.1f} /s  request->receipt ({_lat([x for p in direct for x in p.latencies])})"),
        ("API", f"{api_rate:6.1f} /s  POST->201 receipt ({_lat([x for p in api for x in p.latencies])})"),
        (
            "ratio API/direct",
            (
                f"{ratio:.2f} x over all rounds (per round {', '.join(f'{x:.2f}' for x in ratios)}; "
                f"median {statistics.median(ratios):.2f}) -> "
                + ("meets" if ratio >= TARGET_RATIO else "BELOW")
                + f" the {TARGET_RATIO} target"
            ),
        ),
        ("CPU per payment, direct", _cpu_per_payment(direct)),
        ("CPU per payment, API", _cpu_per_payment(api)),
        ("errors", f"{len(errors)}" + (f" (first: {errors[0]})" if errors else "")),
    ]
    notes = [
        (
            "bench = this process (the Temporal client for direct payments, httpx for the API's), api = the uvicorn "
            "process, worker = the project's worker process, server = the dev server; percentages are of one core"
        ),
        (
            "a payment through the API adds an HTTP hop, body validation, two idempotency writes (INSERT before, "
            "UPDATE after) to the database the worker writes too, and the API process's share of the CPUs"
        ),
    ]
    _common.report("Payments through the HTTP API vs direct client calls (dev server)", parser, args, figures, notes)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="loans, each paid once each way per round (default 200)")
    parser.add_argument("--concurrency", type=int, default=50, help="payments in flight (default 50)")
    parser.add_argument("--rounds", type=int, default=6, help="rounds of both phases, order alternating (default 6)")
    parser.add_argument("--warmup", type=int, default=10, help="extra loans paid each way first, not counted")
    _common.add_common_arguments(parser)
    arguments = parser.parse_args()
    code = asyncio.run(main(arguments, parser))
    _common.finish(code)
    sys.exit(code)
