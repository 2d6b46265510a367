"""Crash safety with real processes.

The embedded Temporal dev server (state in a SQLite file) and the worker run as subprocesses.
A few hundred loans go through an accelerated ladder (`tests/policies/fast.toml`: 14 virtual
days on a clock 28,800 times faster than real time) while payments arrive by validated update
and by bank-feed signal, partial and in full, some sent twice on purpose and every failed call
retried with the same payment id. Meanwhile the worker is killed with SIGKILL at random moments
and restarted, and the dev server is killed once and restarted on the same file and port.

When every loan has closed (paid, or written off at the end of recovery) the database is
checked against what the driver did and what each workflow reports: every fee key once and
exactly the fees of the loan's course, every message once (outbox key, business message and
gateway delivery), every payment answered with a receipt or sent by signal in the ledger
exactly once with the balances adding up, the loans table's stage equal to the workflow's,
and every history replaying on the current code.

Randomness is seeded: the seed is printed; `CRASH_SEED=<n>` reproduces a run (the kill moments
and the interleaving with real processes still vary). `CRASH_LOANS` changes the number of loans.
Run alone with `pytest -m crash`, or leave it out with `-m "not crash"`.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

import codec
import config
import starter
from db.store import make_engine
from db.tables import LedgerEntry, LoanRow, OutboxMessage, TaskRow
from models import Borrower, CollectionStatus, OverdueLoan, Payment, PaymentRejected, Stage
from models.clock import real_time, virtual_now
from models.policy import Policy, load_policy
from models.schedule import PlannedAction, action_time, build_plan, catch_up, local_date
from workflows.collection import CollectionWorkflow

pytestmark = pytest.mark.crash

ROOT = config.ROOT
FAST = Path(__file__).parent / "policies" / "fast.toml"
LOANS = int(os.environ.get("CRASH_LOANS", "200"))
WORKER_KILLS = 4
ZONES = ("Asia/Shanghai", "Europe/London", "America/New_York", "Asia/Kolkata")
CALL_TIMEOUT = 30.0  # seconds before a hanging client call is abandoned and retried
DEADLINE = 240.0  # seconds for every loan to close before the test reports the stuck ones
# The known SDK bugs: temporalio 1.35 goes wrong when a fresh worker takes a loan over from a killed one: for an
# update accepted on that cold-start task it writes a history it cannot replay (sdk-python#1591;
# tests/test_sdk_bugs.py), and its live task can see a stale `workflow.now()` (a timer started
# again, an activity on replay; tests/sdk_bugs/timer-after-cold-start.json), which leaves the loan
# stuck on a nondeterminism error (the workflow guards against the timer case, see `_now`, not
# against a handler waking it in the same task). `after_cold_start` tells these from ours.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ processes


class Process:
    """A subprocess in its own process group, killed with SIGKILL (the whole group)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts + 1} at {datetime.now(UTC).isoformat()} =====\n".encode())
            self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown, no flush, in-flight work lost."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)

    def tail(self, lines: int = 40) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


class Gateway:
    """A messaging gateway on 127.0.0.1 (the webhook adapter posts here): records every POST
    by its Idempotency-Key and, like a real gateway, delivers a key only once."""

    def __init__(self) -> None:
        self.posts: Counter[str] = Counter()
        self.bodies: dict[str, dict[str, Any]] = {}
        lock = threading.Lock()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                key = self.headers["Idempotency-Key"]
                with lock:
                    gateway.posts[key] += 1
                    gateway.bodies.setdefault(key, body)
                    ref = f"gw-{len(gateway.bodies)}"
                payload = json.dumps({"id": ref}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/messages"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass
class System:
    """The dev server, the worker, the gateway and the files they share."""

    tmp: Path
    address: str
    server: Process
    worker: Process
    gateway: Gateway
    policy: Policy
    db_url: str
    events: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic():.1f} {what}")

    async def wait_worker_ready(self, timeout: float = 60) -> None:
        """Until the worker's latest start logs that it serves the queue."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.worker.log.read_text(errors="replace")
            if text.count("worker on ") >= self.worker.starts:
                return
            if not self.worker.alive:
                raise AssertionError(f"worker exited:\n{self.worker.tail()}")
            await asyncio.sleep(0.1)
        raise AssertionError(f"worker not ready in {timeout}s:\n{self.worker.tail()}")

    async def wait_server_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()
                return
            except Exception:  # noqa: BLE001 - not up yet
                if not self.server.alive:
                    raise AssertionError(f"dev server exited:\n{self.server.tail()}") from None
                await asyncio.sleep(0.2)
        raise AssertionError(f"dev server not up in {timeout}s:\n{self.server.tail()}")

    async def restart_worker(self) -> None:
        self.worker.start()
        await self.wait_worker_ready()


def fast_policy(folder: Path, anchor: datetime) -> Policy:
    """The fast policy with its clock anchored now, in `folder`."""
    text = FAST.read_text(encoding="utf-8")
    text, n = re.subn(r"(?m)^anchor = .*$", f"anchor = {anchor.isoformat().replace('+00:00', 'Z')}", text)
    assert n == 1
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "fast.toml").write_text(text, encoding="utf-8")
    return load_policy("fast", folder)


def codec_env() -> dict[str, str]:
    """The worker must seal payloads with this process's keys (the starter API uses the
    process's converter): pass them on, or switch encryption off on both sides."""
    keys = config.codec_keys()
    if keys:
        return {"COLLECTIONS_CODEC_KEYS": ",".join(codec.encode_key(k) for k in keys)}
    return {"COLLECTIONS_CODEC_KEYS": "", "CODEC_KEY_FILE": "/nonexistent/codec.key"}


@pytest.fixture
async def system(tmp_path: Path) -> AsyncIterator[System]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    policy = fast_policy(tmp_path / "policies", datetime.now(UTC).replace(microsecond=0))
    db_url = f"sqlite:///{tmp_path / 'collections.db'}"
    gateway = Gateway()
    server = Process("dev server", [
        config.venv_binary("temporal"), "server", "start-dev", "--headless",
        "--ip", "127.0.0.1", "--port", str(port), "--db-filename", str(tmp_path / "temporal.db"),
        "--sqlite-pragma", "journal_mode=WAL", "--sqlite-pragma", "synchronous=NORMAL",
        "--log-level", "error",
    ], dict(os.environ), tmp_path / "server.log")
    worker_env = {
        **os.environ,
        **codec_env(),
        "PYTHONUNBUFFERED": "1",
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": "crash-test",
        "DATABASE_URL": db_url,
        "POLICIES_DIR": str(tmp_path / "policies"),
        "CHANNEL_ADAPTER": "webhook",
        "WEBHOOK_URL": gateway.url,
    }
    worker = Process("worker", [sys.executable, "worker.py"], worker_env, tmp_path / "worker.log")
    sys_ = System(tmp_path, address, server, worker, gateway, policy, db_url)
    try:
        server.start()
        await sys_.wait_server_ready()
        worker.start()
        await sys_.wait_worker_ready()
        yield sys_
    finally:
        worker.kill()
        server.kill()
        gateway.close()


# ------------------------------------------------------------------ the driver


@dataclass
class Sent:
    """What the driver did with one payment id, and what it was told."""

    loan_id: str
    payment: Payment
    via: str  # update | signal
    outcome: str = ""  # receipt | rejected | signalled | loan_closed | stuck | gave_up
    detail: str = ""
    failed_attempts: int = 0
    duplicate_of_receipt: bool = False  # a deliberate resend of a payment already answered


class Driver:
    """Starts the loans and sends their payments at planned virtual moments, retrying every
    call that fails (worker or server down) with the same payment id."""

    def __init__(self, system: System, client: Client, rng: random.Random) -> None:
        self.sys, self.client, self.rng = system, client, rng
        self.clock = system.policy.clock
        self.loans: dict[str, OverdueLoan] = {}
        self.sent: list[Sent] = []
        self.retried_calls = 0
        self.stuck: dict[str, str] = {}  # loan id -> the nondeterminism failure it is stuck on

    async def is_stuck(self, loan_id: str) -> bool:
        """Whether the loan's workflow is stuck on a nondeterminism failure (remembered)."""
        if loan_id not in self.stuck:
            try:
                failure = await stuck_on_nondeterminism(self.client, config.workflow_id(loan_id))
            except Exception:  # noqa: BLE001 - the server is down: not known to be stuck
                return False
            if failure is None:
                return False
            self.stuck[loan_id] = failure
        return True

    def virtual_now(self) -> datetime:
        return virtual_now(datetime.now(UTC), self.clock)

    async def retry(self, what: str, call: Callable[[], Awaitable[Any]], deadline: float = 120,
                    loan_id: str | None = None) -> Any:
        """Run `call` until it succeeds (or raises what the caller handles; LoanStuck when the
        loan's workflow is stuck on a nondeterminism failure)."""
        give_up = time.monotonic() + deadline
        while True:
            try:
                return await asyncio.wait_for(call(), CALL_TIMEOUT)
            except (PaymentRejected, starter.LoanNotFound):
                raise
            except Exception as exc:  # noqa: BLE001 - server or worker down: try again
                if loan_id is not None and await self.is_stuck(loan_id):
                    raise LoanStuck(loan_id) from exc
                self.retried_calls += 1
                if time.monotonic() > give_up:
                    raise AssertionError(f"{what}: still failing after {deadline}s: {exc!r}") from exc
                await asyncio.sleep(0.5 + self.rng.random())

    async def completed(self, loan_id: str) -> bool:
        try:
            desc = await self.client.get_workflow_handle(config.workflow_id(loan_id)).describe()
        except Exception:  # noqa: BLE001 - the server is down: not known to be closed
            return False
        return desc.status == WorkflowExecutionStatus.COMPLETED

    def make_loans(self) -> list[OverdueLoan]:
        rng, loans, borrowers = self.rng, [], []
        for n in range(LOANS):
            if borrowers and rng.random() < 0.1:  # a second loan of the same person: one contact budget
                borrower = rng.choice(borrowers)
            else:
                zone = rng.choice(ZONES)
                lang = "zh" if zone == "Asia/Shanghai" else "en"
                borrower = Borrower(
                    borrower_id=f"CB-{n:04d}", name="李明" if lang == "zh" else "Jane Doe", phone=f"+86138{n:08d}",
                    email=f"b{n}@example.cn", address=f"{n} Example Road", timezone=zone, language=lang,
                )
                borrowers.append(borrower)
            loans.append(OverdueLoan(
                loan_id=f"CRASH-{n:04d}", borrower=borrower, currency="CNY",
                principal=Decimal(rng.randrange(1000, 5000)), interest=Decimal(rng.randrange(0, 20000)) / 100,
                fees=Decimal(rng.randrange(0, 5000)) / 100, due_date=local_date(self.virtual_now(), borrower.timezone),
            ))
        return loans

    async def start_all(self) -> None:
        """Start every loan at DPD 0 of its own calendar (due today, virtual time)."""
        sem = asyncio.Semaphore(16)
        loans = self.make_loans()

        async def one(loan: OverdueLoan) -> None:
            async with sem:
                loan = loan.model_copy(update={"due_date": local_date(self.virtual_now(), loan.borrower.timezone)})
                self.loans[loan.loan_id] = loan
                await self.retry(f"start {loan.loan_id}", lambda: starter.start_collection(
                    self.client, loan, "fast", task_queue="crash-test"))

        async with asyncio.TaskGroup() as tg:
            for loan in loans:
                tg.create_task(one(loan))

    def plan_payments(self, loan: OverdueLoan) -> list[tuple[float, str, str]]:
        """(virtual days after the start, kind, via) for one loan: partial payments, a payment
        in full before write-off or during recovery, or nothing."""
        rng, events = self.rng, []
        via = lambda: "update" if rng.random() < 0.6 else "signal"  # noqa: E731
        r = rng.random()
        if r < 0.35:  # pays in full during collection, maybe after a partial payment or two
            full = rng.uniform(0.3, 9.5)
            events += [(rng.uniform(0.1, full), "partial", via()) for _ in range(rng.randrange(0, 3))]
            events.append((full, "full", via()))
        elif r < 0.55:  # partial payments only, some during recovery
            events += [(rng.uniform(0.1, 11.8), "partial", via()) for _ in range(rng.randrange(1, 4))]
        elif r < 0.65:  # a recovery: pays in full after the write-off
            events += [(rng.uniform(10.3, 11.8), "full", via())]
        return events

    async def pay_all(self) -> None:
        async with asyncio.TaskGroup() as tg:  # one failure cancels the rest: nothing outlives the test
            for loan in self.loans.values():
                start = self.virtual_now()
                for n, (day, kind, via) in enumerate(self.plan_payments(loan)):
                    at = real_time(start + timedelta(days=day), self.clock)
                    tg.create_task(self.pay_at(loan, f"{loan.loan_id}-P{n}", at, kind, via))

    async def pay_at(self, loan: OverdueLoan, pid: str, at: datetime, kind: str, via: str) -> None:
        await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
        if kind == "full":
            if await self.completed(loan.loan_id):
                return
            try:
                status = await self.retry(f"status {loan.loan_id}",
                                          lambda: starter.get_status(self.client, loan.loan_id, fresh=False),
                                          loan_id=loan.loan_id)
            except LoanStuck:
                return
            if status.closed:
                return
            amount = status.outstanding.total
        else:
            amount = Decimal(self.rng.randrange(1000, 30000)) / 100
        payment = Payment(payment_id=pid, amount=amount, currency="CNY", paid_at=self.virtual_now(),
                          source="platform" if via == "update" else "bank")
        sent = await self.send(loan.loan_id, payment, via)
        if self.rng.random() < 0.12:  # the platform sends it again (same id): must change nothing
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            again = "signal" if self.rng.random() < 0.5 else "update"
            dup = await self.send(loan.loan_id, payment, again)
            dup.duplicate_of_receipt = sent.outcome in ("receipt", "signalled")

    async def send(self, loan_id: str, payment: Payment, via: str) -> Sent:
        record = Sent(loan_id, payment, via)
        self.sent.append(record)
        give_up = time.monotonic() + 120
        while True:
            try:
                if via == "update":
                    receipt = await asyncio.wait_for(starter.register_payment(self.client, loan_id, payment), CALL_TIMEOUT)
                    assert receipt.payment_id == payment.payment_id and receipt.amount == payment.amount
                    record.outcome = "receipt"
                else:
                    await asyncio.wait_for(starter.send_bank_payment(self.client, loan_id, payment), CALL_TIMEOUT)
                    record.outcome = "signalled"
                return record
            except PaymentRejected as exc:
                record.outcome, record.detail = "rejected", str(exc)
                return record
            except Exception as exc:  # noqa: BLE001
                if via == "signal" and isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
                    record.outcome, record.detail = "loan_closed", str(exc)  # workflow completed: nothing sent
                    return record
                if await self.completed(loan_id):  # e.g. a closed loan that cannot answer the refusal's query
                    record.outcome, record.detail = "loan_closed", repr(exc)
                    return record
                if await self.is_stuck(loan_id):
                    record.outcome, record.detail = "stuck", self.stuck[loan_id]
                    return record
                record.failed_attempts += 1
                self.retried_calls += 1
                if time.monotonic() > give_up:
                    record.outcome, record.detail = "gave_up", repr(exc)
                    return record
                await asyncio.sleep(0.5 + self.rng.random())


async def chaos(system: System, rng: random.Random, start: float, span: float) -> None:
    """SIGKILL the worker WORKER_KILLS times and the dev server once, at random moments of the
    first `span` seconds, restarting each after a short outage. Each kill comes a few seconds
    after the previous restart, so the worker really runs (and is caught mid-work) in between."""
    server_turn = rng.randrange(1, WORKER_KILLS + 1)  # not the first kill: loans are in flight by then
    await asyncio.sleep(rng.uniform(3, 8))
    for n in range(WORKER_KILLS + 1):
        if n == server_turn:
            system.note("SIGKILL dev server")
            system.server.kill()
            await asyncio.sleep(rng.uniform(1, 3))
            system.server.start()
            await system.wait_server_ready()
            system.note("dev server restarted")
            if not system.worker.alive:
                system.note("worker had exited while the server was down: restarting it")
                await system.restart_worker()
        else:
            system.note("SIGKILL worker")
            system.worker.kill()
            await asyncio.sleep(rng.uniform(0.5, 3))
            await system.restart_worker()
            system.note("worker restarted")
        left = start + span - time.monotonic()
        await asyncio.sleep(rng.uniform(3, max(4.0, left / max(1, WORKER_KILLS - n))))


class LoanStuck(Exception):
    """The loan's workflow task fails on a nondeterminism error: no call can succeed."""


def after_cold_start(history: WorkflowHistory) -> bool:
    """Whether a workflow task of this run timed out or failed (its worker died) before the
    first nondeterminism failure, if any: a fresh worker then took the loan over from history,
    the situation in which temporalio 1.35 goes wrong (the known SDK bugs above). In this test every
    replay follows such a cold start (200 loans fit the worker's cache), so the check that
    keeps our own nondeterminism visible is the replay of every closed history at the end: a
    bug of ours would break histories that never saw a cold start too."""
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            return True
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            return "[TMPRL1100]" not in event.workflow_task_failed_event_attributes.failure.message
    return False


async def stuck_on_nondeterminism(client: Client, wf_id: str) -> str | None:
    """The nondeterminism failure a running loan's last workflow task ended with, if any: such a
    loan makes no progress until the code (or the SDK) changes."""
    history = await client.get_workflow_handle(wf_id).fetch_history()
    message = None  # the latest nondeterminism failure no completed workflow task followed
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            message = None
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            failure = event.workflow_task_failed_event_attributes.failure.message
            message = failure if "[TMPRL1100]" in failure else message
    if message is None:
        return None
    return message if after_cold_start(history) else f"NOT the known SDK bug: {message}"


async def wait_all_closed(system: System, client: Client, loan_ids: list[str], deadline: float) -> dict[str, str]:
    """Until every loan's workflow has completed (visibility, one listing a second). Returns the
    loans stuck on a nondeterminism failure (the known SDK bugs above), once they are all that is left;
    any other loan still running at the deadline fails the test."""
    wanted = {config.workflow_id(lid) for lid in loan_ids}
    end = time.monotonic() + deadline
    done: set[str] = set()
    stuck: dict[str, str] = {}
    while time.monotonic() < end:
        try:
            async for wf in client.list_workflows("WorkflowType = 'LoanCollection' AND ExecutionStatus != 'Running'"):
                if wf.status != WorkflowExecutionStatus.COMPLETED:
                    raise AssertionError(f"{wf.id}: workflow {wf.status.name if wf.status else '?'}")
                done.add(wf.id)
            left = wanted - done
            if len(left) <= max(5, len(wanted) // 10):  # the last ones: stuck on a nondeterminism failure?
                for wf_id in left - set(stuck):
                    if (failure := await stuck_on_nondeterminism(client, wf_id)) is not None:
                        stuck[wf_id] = failure
        except RPCError:
            pass  # the server is still coming back
        if wanted <= done | set(stuck):
            return stuck
        system.note(f"{len(done & wanted)} closed")
        await asyncio.sleep(1)
    left = sorted(wanted - done - set(stuck))
    raise AssertionError(f"{len(left)} loan(s) never closed, e.g. {left[:5]}")


async def final_states(client: Client, loan_ids: list[str]) -> tuple[dict[str, CollectionStatus], list[WorkflowHistory]]:
    """Each loan's history, fetched once, and the status it completed with (its result)."""
    sem = asyncio.Semaphore(16)

    async def one(lid: str) -> tuple[CollectionStatus, WorkflowHistory]:
        async with sem:
            history = await client.get_workflow_handle(config.workflow_id(lid)).fetch_history()
        last = history.events[-1]
        assert last.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED, f"{lid}: {last.event_type}"
        payloads = last.workflow_execution_completed_event_attributes.result.payloads
        [status] = await client.data_converter.decode(list(payloads), [CollectionStatus])
        return status, history

    got = await asyncio.gather(*(one(lid) for lid in loan_ids))
    return {lid: status for lid, (status, _) in zip(loan_ids, got)}, [h for _, h in got]


# ------------------------------------------------------------------ the checks


@dataclass
class Course:
    """What a loan's own timeline says it went through."""

    executed: list[str]  # plan keys in the order they first ran (the catch-up step left out)
    ahead: list[PlannedAction]  # the plan from where the loan joined it (DPD at its start)
    caught_up: str | None  # the step behind that ran at once when the loan joined late
    closed_as: str
    closed_at: datetime


def plan_key(entry_key: str, action: str, loan_id: str, plan: list[PlannedAction]) -> str | None:
    """The plan action a timeline entry belongs to (None for payments, retries, recalls...)."""
    if action == "stage_changed":
        return entry_key
    if action == "late_fee":
        return f"fee:{entry_key.rsplit('/', 1)[1]}"
    if action == "write_off":
        return "write_off"
    steps = {a.step.key: a.key for a in plan if a.step is not None}
    parts = entry_key.removeprefix(f"{loan_id}/").split("/")
    if parts and parts[0] in steps:
        step = next(a.step for a in plan if a.key == steps[parts[0]])
        assert step is not None
        if step.action != "call" or parts[1:] == ["1"]:  # a call's retries are not plan actions
            return steps[parts[0]]
    return None


def course_of(status: CollectionStatus, plan: list[PlannedAction]) -> Course:
    """A loan whose workflow began a few virtual days after the driver asked (a busy or
    restarting system) joins its plan where its DPD is (`catch_up`), as any late hand-over."""
    started = next(e for e in status.timeline if e.action == "collection_started")
    cursor, behind = catch_up(plan, int(started.outcome.removeprefix("DPD ")))
    caught_up = behind.key if behind is not None else None
    executed: list[str] = []
    for e in status.timeline:
        key = plan_key(e.key, e.action, status.loan_id, plan)
        if key is not None and key not in executed and key != caught_up:
            executed.append(key)
    closing = [e for e in status.timeline if e.action == "collection_closed"]
    assert len(closing) == 1, f"{status.loan_id}: {len(closing)} closing entries"
    return Course(executed, plan[cursor:], caught_up, closing[0].outcome, closing[0].at)


def check_loan(
    loan: OverdueLoan, status: CollectionStatus, policy: Policy, rows: dict[str, list[Any]], sent: list[Sent],
    gateway: Gateway, problems: list[str],
) -> None:
    """Every check for one loan; a problem is appended, naming the loan."""
    lid = loan.loan_id

    def expect(ok: bool, what: str) -> None:
        if not ok:
            problems.append(f"{lid}: {what}")

    plan = build_plan(policy, loan)
    course = course_of(status, plan)
    ledger: list[LedgerEntry] = rows["ledger"]
    by_kind: dict[str, list[LedgerEntry]] = defaultdict(list)
    for r in ledger:
        by_kind[r.kind].append(r)

    # --- the course: a prefix of the plan (from where the loan joined it), each action no
    # earlier than due, nothing after the close
    order = [a.key for a in course.ahead]
    expect(course.executed == order[:len(course.executed)],
           f"plan actions out of order or skipped: {course.executed}, plan from the start {order}")
    for a in course.ahead:
        if a.key in course.executed:
            first = next(e.at for e in status.timeline if plan_key(e.key, e.action, lid, plan) == a.key)
            expect(first >= action_time(a, loan, policy, 0), f"{a.key} ran at {first}, before it was due")
            expect(first <= course.closed_at, f"{a.key} ran after the loan closed")

    # --- fees: each key once, exactly the periods the course reached, the policy's amount
    fees = by_kind["fee"]
    fee_keys = Counter(r.key for r in fees)
    expect(all(n == 1 for n in fee_keys.values()), f"fee posted twice: {fee_keys}")
    implied = [a for a in course.ahead if a.kind == "fee" and a.key in course.executed]
    expect(sorted(fee_keys) == sorted(f"{lid}/fee/{a.period}" for a in implied),
           f"fees {sorted(fee_keys)} but the course reached {[a.key for a in implied]}")
    expect(all(r.amount == policy.late_fee.amount for r in fees), f"fee amounts {[r.amount for r in fees]}")
    posted_on_timeline = sorted(e.key for e in status.timeline if e.action == "late_fee" and e.outcome == "posted")
    expect(posted_on_timeline == sorted(fee_keys), "ledger fees differ from the timeline's")
    charged_off = "write_off" in course.executed
    if charged_off:
        expect(len(implied) == len([a for a in course.ahead if a.kind == "fee"]), "written off without every fee period")

    # --- messages: each key once, each business message once, delivered once at the gateway
    outbox: list[OutboxMessage] = rows["outbox"]
    expect(len({m.key for m in outbox}) == len(outbox), "outbox key twice")
    business = Counter((m.template, m.channel) for m in outbox)
    expect(all(n == 1 for n in business.values()), f"a message sent twice under different keys: {business}")
    expect(all(m.status == "sent" for m in outbox), f"undelivered: {[m.key for m in outbox if m.status != 'sent']}")
    expect(all(m.key in gateway.bodies for m in outbox), "outbox message the gateway never received")
    sent_on_timeline = {e.key for e in status.timeline if e.channel in ("sms", "email", "letter") and e.outcome == "sent"}
    expect(sent_on_timeline == {m.key for m in outbox}, f"timeline sent {sorted(sent_on_timeline)}, "
                                                        f"outbox {sorted(m.key for m in outbox)}")
    tasks: list[TaskRow] = rows["tasks"]
    expect(len({t.task_id for t in tasks}) == len(tasks), "task created twice")
    expect(all(t.status == "closed" for t in tasks), "a task left open after the loan closed")

    # --- payments: what the driver was told against the ledger and the timeline
    payments = by_kind["payment"]
    in_ledger = Counter(r.reference for r in payments)
    expect(all(n == 1 for n in in_ledger.values()), f"payment applied twice: {in_ledger}")
    applied = Counter(e.key.rsplit("/", 1)[1] for e in status.timeline if e.action == "payment" and e.outcome == "applied")
    expect(applied == in_ledger, f"ledger payments {dict(in_ledger)} but timeline {dict(applied)}")
    rejected_text = " ".join(e.detail for e in status.timeline if e.action == "payment" and e.outcome == "rejected")
    ids_sent = {s.payment.payment_id: s.payment for s in sent}
    expect(set(in_ledger) <= set(ids_sent), f"payments nobody sent: {set(in_ledger) - set(ids_sent)}")
    for pid, p in ids_sent.items():
        mine = [s for s in sent if s.payment.payment_id == pid]
        if pid in in_ledger:
            row = next(r for r in payments if r.reference == pid)
            expect(row.amount == p.amount, f"{pid}: ledger amount {row.amount}, sent {p.amount}")
        outcomes = {s.outcome for s in mine}
        expect("gave_up" not in outcomes, f"{pid}: the driver gave up sending it: {[s.detail for s in mine]}")
        if "receipt" in outcomes:
            expect(in_ledger[pid] == 1, f"{pid}: a receipt was given but the ledger has it {in_ledger[pid]} times")
        for s in mine:
            if s.outcome == "rejected" and "already applied" in s.detail:
                expect(in_ledger[pid] == 1, f"{pid}: refused as already applied, but not in the ledger")
            if s is mine[0] and s.outcome == "rejected" and "closed" in s.detail and s.failed_attempts == 0:
                expect(in_ledger[pid] == 0, f"{pid}: refused (loan closed) yet in the ledger")
            if s.duplicate_of_receipt and s.via == "update":
                expect(s.outcome in ("rejected", "loan_closed"),
                       f"{pid}: sent again after its receipt and not refused: {s.outcome}")
            if s.outcome == "signalled" and in_ledger[pid] == 0:
                expect(pid in rejected_text, f"{pid}: signalled, neither applied nor rejected (lost)")
    allocations = sum((r.amount for r in by_kind["allocation"]), Decimal(0))
    over = sum((r.amount for r in by_kind["overpayment"]), Decimal(0))
    paid = sum((r.amount for r in payments), Decimal(0))
    expect(paid == allocations + over, f"payments {paid} != allocations {allocations} + overpayment {over}")
    expect(status.paid_total == allocations, f"paid_total {status.paid_total}, allocations {allocations}")
    owed = loan.balance().total + sum((r.amount for r in fees), Decimal(0))
    expect(owed == allocations + status.outstanding.total,
           f"owed {owed} != allocated {allocations} + outstanding {status.outstanding.total}")
    expect(len(by_kind["charge_off"]) == (1 if charged_off else 0), f"{len(by_kind['charge_off'])} charge-offs")

    # --- the stage: the loans table, the workflow's answer and what the money implies agree
    implied_stage = Stage.paid if status.outstanding.total == 0 else Stage.written_off
    expect(course.closed_as == str(implied_stage), f"closed as {course.closed_as}, the money says {implied_stage}")
    expect(status.stage == implied_stage, f"workflow reports {status.stage}, history implies {implied_stage}")
    loan_row: LoanRow = rows["loan"][0]
    expect(loan_row.stage == str(status.stage), f"loans table says {loan_row.stage}, workflow {status.stage}")
    if implied_stage is Stage.written_off:
        expect(any(e.action == "recovery_ended" for e in status.timeline), "written off without the end of recovery")


def read_rows(db_url: str, loan_ids: list[str]) -> dict[str, dict[str, list[Any]]]:
    engine = make_engine(db_url)
    out: dict[str, dict[str, list[Any]]] = {lid: defaultdict(list) for lid in loan_ids}
    with Session(engine) as session:
        for name, table in (("ledger", LedgerEntry), ("outbox", OutboxMessage), ("tasks", TaskRow),
                            ("loan", LoanRow)):
            for row in session.exec(select(table)).all():
                if row.loan_id in out:
                    out[row.loan_id][name].append(row)
    engine.dispose()
    return out


# ------------------------------------------------------------------ the test


async def test_loans_survive_killed_workers_and_a_killed_server(system: System) -> None:
    seed = int(os.environ.get("CRASH_SEED", random.randrange(1_000_000)))
    print(f"\ncrash test seed {seed} (CRASH_SEED={seed} to repeat), {LOANS} loans, logs in {system.tmp}")
    rng = random.Random(seed)
    began = time.monotonic()
    client = await config.connect(system.address)
    driver = Driver(system, client, random.Random(rng.random()))

    async def drive() -> None:
        await driver.start_all()
        system.note(f"{LOANS} loans started")
        await driver.pay_all()
        system.note(f"payments done ({len(driver.sent)} sends)")

    try:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(chaos(system, random.Random(rng.random()), began, span=40))
            tg.create_task(drive())
        stuck = await wait_all_closed(system, client, list(driver.loans), DEADLINE)
        system.note("all loans closed" + (f" but {len(stuck)} stuck on nondeterminism" if stuck else ""))
    finally:
        print("events (monotonic seconds):\n" + "\n".join(f"  {e}" for e in system.events))
    ran = time.monotonic() - began
    closed = [lid for lid in driver.loans if config.workflow_id(lid) not in stuck]
    results, histories = await final_states(client, closed)
    system.note("histories fetched")

    rows = read_rows(system.db_url, list(driver.loans))
    sent_by_loan: dict[str, list[Sent]] = defaultdict(list)
    for s in driver.sent:
        sent_by_loan[s.loan_id].append(s)
    problems: list[str] = []
    for lid, loan in driver.loans.items():
        if lid not in results:
            continue  # stuck (reported below)
        check_loan(loan, results[lid], system.policy, rows[lid], sent_by_loan[lid], system.gateway, problems)
    outbox_keys = {m.key for r in rows.values() for m in r["outbox"]}  # all loans, the stuck ones too
    assert set(system.gateway.bodies) == outbox_keys, "the gateway got messages the outbox does not hold"

    # every history replays on the current code after all the crashes
    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    replayer = Replayer(workflows=[CollectionWorkflow], data_converter=config.data_converter())
    replayed = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    failures = {wf: str(err) for wf, err in replayed.replay_failures.items()}
    system.note("histories replayed")
    for h in histories:  # DEBUG
        if h.run_id in failures:
            (system.tmp / f"nonreplay-{h.workflow_id}.json").write_text(h.to_json())
            print("NONREPLAY", h.workflow_id, failures[h.run_id][:600])

    # the workflow's own answer by query (the worker replays a closed loan for it) for a sample
    broken = {h.workflow_id for h in histories if h.run_id in failures}  # a query would replay them
    replaying = sorted(lid for lid in results if config.workflow_id(lid) not in broken)
    sample = rng.sample(replaying, min(20, len(replaying)))
    queried = await asyncio.gather(*(driver.retry(f"query {lid}", lambda lid=lid: starter.get_status(
        client, lid, fresh=False)) for lid in sample))
    for lid, answer in zip(sample, queried):
        assert answer.stage == results[lid].stage and answer.outstanding == results[lid].outstanding, lid

    system.note("sample queried")

    stages = Counter(str(s.stage) for s in results.values())
    outcomes = Counter(s.outcome for s in driver.sent)
    redelivered = sum(n - 1 for n in system.gateway.posts.values())
    print(f"ran {ran:.0f}s to the last close, {time.monotonic() - began:.0f}s with the checks; after the close:")
    print("\n".join(f"  {e}" for e in system.events[-3:]))
    print(f"final stages {dict(stages)}; payments sent {len(driver.sent)} {dict(outcomes)}; "
          f"calls retried {driver.retried_calls}; messages {len(outbox_keys)}, gateway re-posts (same key) "
          f"{redelivered}; worker starts {system.worker.starts}, server starts {system.server.starts}; "
          f"histories replayed {len(histories)}")
    assert not problems, f"{len(problems)} problem(s), seed {seed}:\n" + "\n".join(problems[:40])
    assert system.worker.starts >= WORKER_KILLS + 1 and system.server.starts == 2
    by_run = {h.run_id: h for h in histories}
    unknown = {run: err for run, err in failures.items() if not after_cold_start(by_run[run])}
    assert not unknown, f"histories that no longer replay: {unknown}"
    ours = {lid: err for lid, err in stuck.items() if err.startswith("NOT the known SDK bug")}
    assert not ours, f"loans stuck on a nondeterminism failure that is not the known SDK bug: {ours}"
    if failures or stuck:  # only the upstream bugs: every check above passed; say so loudly, do not hide it
        pytest.xfail(f"known SDK bugs (tests/test_sdk_bugs.py), seed {seed}: {len(failures)} closed loan(s) whose "
                     f"history does not replay {sorted(failures)}; {len(stuck)} loan(s) stuck on a "
                     f"nondeterminism failure after a cold start {stuck}")
