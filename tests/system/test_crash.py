"""Crash safety with real processes.

The embedded Temporal dev server (state in a SQLite file) and the worker run as subprocesses.
A few hundred loans go through an accelerated ladder (`tests/policies/fast.toml`: 14 virtual
days on a clock 28,800 times faster than real time) while payments arrive through the client API
(checked by query, sent by signal, answered by query) and by bank-feed signal, partial and in
full, some sent twice on purpose and every failed call retried with the same payment id.
Meanwhile the worker is killed with SIGKILL at random moments and restarted, and the dev server
is killed and restarted on the same file and port.

When every loan has closed (paid, or written off at the end of recovery) the database is
checked against what the driver did and what each workflow reports: every fee key once and
exactly the fees of the loan's course, every message once (outbox key, business message and
gateway delivery), every payment answered with a receipt or sent by signal in the ledger
exactly once with the balances adding up, the loans table's stage equal to the workflow's,
and every closed history replaying on the current code.

Strict: a loan stuck (its workflow task failing again and again, whatever the error), a closed
history that does not replay, a duplicate or a lost effect, a stage that disagrees, all fail
the test, whatever the cause (an SDK defect too: it is reduced to a reproduction under
tests/sdk_bugs, and this test stays red until the workflow avoids it). The failure names the
loans, the seed and where the logs are.

No wall-clock deadline decides a verdict. The run is declared stalled only when nothing has
moved (no loan closed, no history grew, no driver call succeeded) for CRASH_STALL seconds, so a
busy machine just takes longer; a loan whose workflow task keeps failing is reported as stuck as
soon as it is seen and not waited for; CRASH_CAP (30 minutes) is a safety cap so CI never hangs.

Environment (defaults are `make test`'s run; `make soak` runs bigger ones, bench/soak.py):
CRASH_LOANS (200), CRASH_SEED (random, printed), CRASH_WORKER_KILLS (4), CRASH_SERVER_KILLS (1),
CRASH_DB (sqlite | postgresql: a fresh database on tests/pg.py's throwaway cluster or
POSTGRES_TEST_URL), CRASH_STALL (120 s), CRASH_CAP (1800 s), CRASH_SUMMARY (a path: the run's
figures as JSON, written also when the test fails). The kill moments and the interleaving with
real processes still vary between runs of one seed. Run alone with `pytest -m crash`, or leave
it out with `-m "not crash"`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from sqlmodel import Session, select
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

import starter
import worker as worker_module
from db.store import make_engine
from db.tables import LedgerEntry, LoanRow, OutboxMessage, TaskRow
from infra import codec
from infra.loaders import load_policy
from infra.process import venv_binary
from infra.settings import ROOT
from infra.temporal import WORKFLOW_ID_PREFIX, codec_keys, connect, data_converter, workflow_id
from models import Borrower, CollectionStatus, OverdueLoan, Payment, PaymentRejected, Stage
from models.arrangements import PromiseRequest
from models.clock import real_time, virtual_now
from models.policy import Policy
from models.schedule import PlannedAction, action_time, build_plan, catch_up_at, local_date
from tests import pg
from tests.helpers import TEST_POLICIES, free_port

pytestmark = pytest.mark.crash

FAST = TEST_POLICIES / "fast.toml"
ZONES = ("Asia/Shanghai", "Europe/London", "America/New_York", "Asia/Kolkata")
ATTEMPT_TIMEOUT = 30.0  # seconds before one attempt of a hanging client call is abandoned (and retried)
SWEEP_EVERY = 10.0  # seconds between two looks at every open loan (history length, workflow task attempt)
STUCK_ATTEMPTS = 3  # a workflow task failed, retried, failed again: the loan is stuck
# A workflow task that times out (or trips the deadlock detector) again and again while the worker
# is up is stuck too, but a killed or starved worker also makes tasks time out: it takes this many
# attempts and half the stall window without a new event in the loan's history.
TIMEOUT_ATTEMPTS = 6
DEADLOCK = "[TMPRL1101]"  # the SDK's deadlock detector: a starved CPU can trip it; left to the stall window
# Workflow task failures the server records when the task raced with something (a new event, a
# reset, a sticky queue reset): the next attempt goes on. Every other cause is the workflow's own
# (nondeterminism, an exception, a bad command) and repeats on every attempt.
TRANSIENT_CAUSES = {
    getattr(WorkflowTaskFailedCause, f"WORKFLOW_TASK_FAILED_CAUSE_{name}")
    for name in (
        "UNHANDLED_COMMAND",
        "UNHANDLED_UPDATE",
        "RESET_STICKY_TASK_QUEUE",
        "RESET_WORKFLOW",
        "FORCE_CLOSE_COMMAND",
        "FAILOVER_CLOSE_COMMAND",
        "WORKFLOW_PAUSE_REQUESTED_BEFORE_TASK_STARTED",
    )
}


def workflow_classes() -> list[type]:
    """What the Replayer gets: every workflow class the worker registers (one list, kept by the
    worker)."""
    return list(worker_module.WORKFLOWS)


# ------------------------------------------------------------------ parameters and figures


@dataclass(frozen=True)
class Params:
    """The run's size and chaos, from the environment (see the module docstring)."""

    loans: int
    seed: int
    worker_kills: int
    server_kills: int
    db: str
    stall: float
    cap: float
    summary: Path | None

    @classmethod
    def from_env(cls) -> Params:
        env = os.environ
        db = env.get("CRASH_DB", "sqlite").strip().lower() or "sqlite"
        assert db in ("sqlite", "postgresql"), f"CRASH_DB={db!r}: sqlite or postgresql"
        return cls(
            loans=int(env.get("CRASH_LOANS", "200")),
            seed=int(env.get("CRASH_SEED") or random.randrange(1_000_000)),
            worker_kills=int(env.get("CRASH_WORKER_KILLS", "4")),
            server_kills=int(env.get("CRASH_SERVER_KILLS", "1")),
            db=db,
            stall=float(env.get("CRASH_STALL", "120")),
            cap=float(env.get("CRASH_CAP", "1800")),
            summary=Path(env["CRASH_SUMMARY"]) if env.get("CRASH_SUMMARY") else None,
        )

    def rerun(self) -> str:
        """The environment that repeats this run's choices."""
        return (
            f"CRASH_SEED={self.seed} CRASH_DB={self.db} CRASH_LOANS={self.loans} "
            f"CRASH_WORKER_KILLS={self.worker_kills} CRASH_SERVER_KILLS={self.server_kills}"
        )


# Problem categories; the summary counts each (the soak's columns), the failure lists them.
STUCK = "stuck loans"
REPLAY = "non-replaying histories"
DUP_FEE = "duplicate fees"
DUP_MESSAGE = "duplicate messages"
DUP_LEDGER = "duplicate ledger rows"
DUP_TASK = "duplicate tasks"
LOST_PAYMENT = "lost payments"
FAILED = "failed workflows"
COURSE = "course"
FEES = "fees"
MESSAGES = "messages"
TASKS = "tasks"
PAYMENTS = "payments"
BALANCES = "balances"
STAGE = "stage"
HARNESS = "harness"


@dataclass
class Problems:
    """Every finding of a run, by category; `n` counts the effects (two extra fees: 2)."""

    found: list[tuple[str, str, str]] = field(default_factory=list)  # (category, loan or run, text)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, category: str, who: str, text: str, n: int = 1) -> None:
        self.found.append((category, who, text))
        self.counts[category] += n

    def loans(self, category: str | None = None) -> list[str]:
        return sorted({who for cat, who, _ in self.found if category in (None, cat)})

    def report(self, limit: int = 60) -> str:
        lines: list[str] = []
        for category in dict.fromkeys(cat for cat, _, _ in self.found):
            mine = [(who, text) for cat, who, text in self.found if cat == category]
            lines.append(f"{category} ({self.counts[category]}; {', '.join(self.loans(category)[:12])}):")
            lines += [f"  {who}: {text}" for who, text in mine[:limit]]
        return "\n".join(lines)


@dataclass
class Summary:
    """The run's figures, written as JSON to CRASH_SUMMARY (also when the test fails): what
    `make soak` tabulates."""

    seed: int
    backend: str
    loans: int
    worker_kills_asked: int
    server_kills_asked: int
    logs: str
    seconds: float = 0.0
    passed: bool = False
    stuck_loans: int = 0
    non_replaying_histories: int = 0
    duplicate_fees: int = 0
    duplicate_messages: int = 0
    duplicate_ledger_rows: int = 0
    duplicate_tasks: int = 0
    lost_payments: int = 0
    other_problems: int = 0
    closed_loans: int = 0
    payments_sent: int = 0  # distinct payment ids
    sends: int = 0  # calls, deliberate resends included
    calls_retried: int = 0
    histories_replayed: int = 0
    recovered_task_failures: int = 0  # workflow task failures in closed histories (informative)
    worker_starts: int = 0
    server_starts: int = 0
    worker_kills: int = 0
    server_kills: int = 0
    open_loans: int = 0  # neither closed nor stuck when the run ended (a stall)
    problem_loans: list[str] = field(default_factory=list)
    failure: str = ""

    NAMED: ClassVar[dict[str, str]] = {
        STUCK: "stuck_loans",
        REPLAY: "non_replaying_histories",
        DUP_FEE: "duplicate_fees",
        DUP_MESSAGE: "duplicate_messages",
        DUP_LEDGER: "duplicate_ledger_rows",
        DUP_TASK: "duplicate_tasks",
        LOST_PAYMENT: "lost_payments",
    }

    def count(self, problems: Problems) -> None:
        """The named figures from the problems' categories; the rest summed as other_problems."""
        for category, name in self.NAMED.items():
            setattr(self, name, problems.counts[category])
        self.other_problems = sum(n for cat, n in problems.counts.items() if cat not in self.NAMED)
        self.problem_loans = problems.loans()

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n", encoding="utf-8")


class Progress:
    """When anything last moved: a loan closed, a history grew, a driver call succeeded. The
    run is stalled only when nothing has for `stall` seconds (a slow machine is not a stuck
    system); `cap` bounds the whole run so that CI can never hang."""

    def __init__(self, stall: float, cap: float) -> None:
        self.began = self.last = time.monotonic()
        self.stall, self.cap = stall, cap
        self.what = "the start"

    def mark(self, what: str) -> None:
        self.last, self.what = time.monotonic(), what

    def idle(self) -> float:
        return time.monotonic() - self.last

    def check(self, context: Callable[[], str]) -> None:
        """Raise Stalled when nothing moved for the stall window or the cap is reached."""
        now = time.monotonic()
        if now - self.began > self.cap:
            raise CapReached(f"safety cap of {self.cap:.0f}s reached; {context()}")
        if now - self.last > self.stall:
            raise Stalled(
                f"nothing moved for {now - self.last:.0f}s (stall window {self.stall:.0f}s; "
                f"last progress: {self.what}); {context()}"
            )


class Stalled(AssertionError):
    """No loan made progress for the stall window (or the safety cap was reached)."""


class CapReached(Stalled):
    """The run's safety cap (CRASH_CAP) was reached, progress or not."""


class LoanStuck(Exception):
    """The loan's workflow task keeps failing: no call can succeed."""


# ------------------------------------------------------------------ processes


class Process:
    """A subprocess in its own process group, killed with SIGKILL (the whole group)."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0  # SIGKILLs delivered to a live process

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts + 1} at {datetime.now(UTC).isoformat()} =====\n".encode())
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown, no flush, in-flight work lost."""
        if self.proc is None:
            return
        if self.alive:
            self.kills += 1
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
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
            def do_POST(self) -> None:  # the http.server API
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
    stall: float  # how long a process may take to come up (a busy machine is slow, not broken)
    logs: Path  # where the logs are after a failure (see `kept_logs`)
    events: list[str] = field(default_factory=list)

    def note(self, what: str) -> None:
        self.events.append(f"{time.monotonic():.1f} {what}")

    async def wait_worker_ready(self) -> None:
        """Until the worker's latest start logs that it serves the queue."""
        deadline = time.monotonic() + self.stall
        while time.monotonic() < deadline:
            text = self.worker.log.read_text(errors="replace")
            if text.count("worker on ") >= self.worker.starts:
                return
            if not self.worker.alive:
                raise AssertionError(f"worker exited (logs in {self.logs}):\n{self.worker.tail()}")
            await asyncio.sleep(0.1)
        raise Stalled(f"worker not ready in {self.stall:.0f}s (logs in {self.logs}):\n{self.worker.tail()}")

    async def wait_server_ready(self) -> None:
        deadline = time.monotonic() + self.stall
        while time.monotonic() < deadline:
            try:
                client = await Client.connect(self.address)
                await client.count_workflows()
                return
            except Exception:  # not up yet
                if not self.server.alive:
                    raise AssertionError(f"dev server exited (logs in {self.logs}):\n{self.server.tail()}") from None
                await asyncio.sleep(0.2)
        raise Stalled(f"dev server not up in {self.stall:.0f}s (logs in {self.logs}):\n{self.server.tail()}")

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
    keys = codec_keys()
    if keys:
        return {"COLLECTIONS_CODEC_KEYS": ",".join(codec.encode_key(k) for k in keys)}
    return {"COLLECTIONS_CODEC_KEYS": "", "CODEC_KEY_FILE": "/nonexistent/codec.key"}


@pytest.fixture
def params() -> Params:
    return Params.from_env()


def kept_logs(params: Params, tmp_path: Path) -> Path:
    """Where a failed run's logs and databases will be: its tmp_path if that is under var/ (the
    soak's --basetemp), else a copy under var/crash/, since other pytest sessions on the machine
    delete old tmp_path folders (pytest keeps the last three, whoever ran them)."""
    var = ROOT / "var"
    if tmp_path.resolve().is_relative_to(var.resolve()):
        return tmp_path
    return var / "crash" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{params.db}-seed{params.seed}"


@pytest.fixture
def summary(params: Params, tmp_path: Path) -> Iterator[Summary]:
    """The run's figures; written to CRASH_SUMMARY at teardown whatever happened (set up before
    the system, so a system that never came up is reported too, and torn down after it, so a
    failed run's logs are copied once its processes are gone)."""
    logs = kept_logs(params, tmp_path)
    figures = Summary(params.seed, params.db, params.loans, params.worker_kills, params.server_kills, str(logs))
    began = time.monotonic()
    try:
        yield figures
    finally:
        figures.seconds = figures.seconds or round(time.monotonic() - began, 1)
        if not figures.passed and logs != tmp_path:
            shutil.copytree(tmp_path, logs, dirs_exist_ok=True, ignore_dangling_symlinks=True)
        if params.summary is not None:
            figures.write(params.summary)


@pytest.fixture
def database(params: Params, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the migrations' head: a SQLite file (the worker migrates it at
    start), or a copy of a migrated template on a throwaway PostgreSQL cluster (tests/pg.py)."""
    if params.db == "sqlite":
        yield f"sqlite:///{tmp_path / 'collections.db'}"
        return
    try:
        databases, cluster = pg.connect()
    except pg.PostgresUnavailable as exc:
        pytest.fail(f"CRASH_DB=postgresql needs PostgreSQL: {exc}.\nTo fix: {pg.HOW_TO_GET_IT}.", pytrace=False)
    try:
        yield databases.create()
    finally:
        databases.close()
        if cluster is not None:
            cluster.stop()


@pytest.fixture
async def system(params: Params, summary: Summary, database: str, tmp_path: Path) -> AsyncIterator[System]:
    port = free_port()
    address = f"127.0.0.1:{port}"
    policy = fast_policy(tmp_path / "policies", datetime.now(UTC).replace(microsecond=0))
    gateway = Gateway()
    server = Process(
        "dev server",
        [
            venv_binary("temporal"),
            "server",
            "start-dev",
            "--headless",
            "--ip",
            "127.0.0.1",
            "--port",
            str(port),
            "--db-filename",
            str(tmp_path / "temporal.db"),
            "--sqlite-pragma",
            "journal_mode=WAL",
            "--sqlite-pragma",
            "synchronous=NORMAL",
            "--log-level",
            "error",
        ],
        dict(os.environ),
        tmp_path / "server.log",
    )
    worker_env = {
        **os.environ,
        **codec_env(),
        "PYTHONUNBUFFERED": "1",
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": "crash-test",
        "DATABASE_URL": database,
        "POLICIES_DIR": str(tmp_path / "policies"),
        "CHANNEL_ADAPTER": "webhook",
        "WEBHOOK_URL": gateway.url,
    }
    worker = Process("worker", [sys.executable, "worker.py"], worker_env, tmp_path / "worker.log")
    sys_ = System(tmp_path, address, server, worker, gateway, policy, database, params.stall, Path(summary.logs))
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
        summary.worker_starts, summary.server_starts = worker.starts, server.starts


# ------------------------------------------------------------------ watching the loans


@dataclass
class Probe:
    """One look at a loan's run (describe): where it is and whether its workflow task retries."""

    status: WorkflowExecutionStatus | None
    history_length: int
    attempt: int  # the pending workflow task's attempt; 0 when none is pending


class Watch:
    """What the test knows about every loan's run: the longest history seen and when it last
    grew (progress), the loans found stuck (reported at once, never waited for again), the
    runs found closed."""

    def __init__(self, client: Client, progress: Progress, system: System) -> None:
        self.client, self.progress, self.sys = client, progress, system
        self.began = time.monotonic()
        self.length: dict[str, int] = {}
        self.grew_at: dict[str, float] = {}
        self.last: dict[str, Probe] = {}
        self.stuck: dict[str, str] = {}  # workflow id -> the failure its workflow task repeats
        self.stalled: dict[str, str] = {}  # workflow id -> its last probe, for loans open when the run stalled
        self.closed: dict[str, WorkflowExecutionStatus] = {}  # workflow id -> its terminal status

    async def look(self, loan_id: str) -> Probe | None:
        """Describe the loan's run (None while the server is down or the loan not started yet),
        record growth and notice a workflow task that keeps failing."""
        wf_id = workflow_id(loan_id)
        try:
            desc = await asyncio.wait_for(self.client.get_workflow_handle(wf_id).describe(), ATTEMPT_TIMEOUT)
        except Exception:  # server down, or not started yet
            return None
        raw = desc.raw_description
        attempt = raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0
        probe = Probe(desc.status, desc.history_length, attempt)
        self.last[wf_id] = probe
        if probe.history_length > self.length.get(wf_id, 0):
            self.length[wf_id] = probe.history_length
            self.grew_at[wf_id] = time.monotonic()
            self.progress.mark(f"{loan_id}'s history grew to {probe.history_length}")
        if attempt >= STUCK_ATTEMPTS and wf_id not in self.stuck:
            await self._check_stuck(loan_id, attempt)
        return probe

    async def _check_stuck(self, loan_id: str, attempt: int) -> None:
        """Whether a retried workflow task is stuck (see STUCK_ATTEMPTS, TIMEOUT_ATTEMPTS): the
        history says how its last recorded attempt ended (later attempts are not recorded)."""
        wf_id = workflow_id(loan_id)
        try:
            history = await self.client.get_workflow_handle(wf_id).fetch_history()
        except Exception:  # server down: look again later
            return
        failure = failing_task(history)
        if failure is not None and DEADLOCK not in failure:
            why = f"workflow task attempt {attempt} after {failure}"
            if taken_over(history):
                why += " (a workflow task of this run had timed out first: a fresh worker took it over)"
        elif attempt >= TIMEOUT_ATTEMPTS and (quiet := self.quiet_since(loan_id, self.began)) > self.progress.stall / 2:
            end = history.events[-1]
            last = failure or f"{EventType.Name(end.event_type)} (event {end.event_id})"
            why = (
                f"workflow task attempt {attempt}, timing out again and again, no new event for {quiet:.0f}s; "
                f"last: {last}"
            )
        else:
            return
        self.stuck[wf_id] = why
        self.sys.note(f"STUCK {loan_id}: {why[:300]}")
        print(f"crash test: {loan_id} is stuck: {why[:300]}", flush=True)

    def is_stuck(self, loan_id: str) -> bool:
        return workflow_id(loan_id) in self.stuck

    def quiet_since(self, loan_id: str, since: float) -> float:
        """Seconds since the loan's history last grew, counting from `since` at the earliest."""
        return time.monotonic() - max(since, self.grew_at.get(workflow_id(loan_id), since))

    def open_loans(self, wanted: set[str]) -> list[str]:
        return sorted(wanted - set(self.closed) - set(self.stuck) - set(self.stalled))

    def last_seen(self, wf_id: str) -> str:
        probe = self.last.get(wf_id)
        if probe is None:
            return "never described"
        return f"{probe.history_length} events, workflow task attempt {probe.attempt}"

    def describe_open(self, wanted: set[str], limit: int = 8) -> str:
        """The open loans, for a stall message: their last probe."""
        left = self.open_loans(wanted)
        shown = [f"{wf} ({self.last_seen(wf)})" for wf in left[:limit]]
        return f"{len(left)} loan(s) still open: {', '.join(shown)}" + (" ..." if len(left) > limit else "")


def failing_task(history: WorkflowHistory) -> str | None:
    """The failure of the run's last workflow task outcome if that outcome was a failure of the
    workflow's own (not a transient cause), with its cause; None when the last workflow task
    completed or timed out. (Later attempts of a failing task are not written to the history.)"""
    failure = None
    for event in history.events:
        if event.event_type in (
            EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED,
            EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT,
        ):
            failure = None
        elif event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            attrs = event.workflow_task_failed_event_attributes
            failure = (
                None
                if attrs.cause in TRANSIENT_CAUSES
                else (f"{WorkflowTaskFailedCause.Name(attrs.cause)} (event {event.event_id}): {attrs.failure.message}")
            )
    return failure


def task_failures(history: WorkflowHistory) -> list[str]:
    """Workflow task failures of the workflow's own (not a transient cause) in a history,
    whether or not a later task completed: an informative figure for closed loans."""
    return [
        e.workflow_task_failed_event_attributes.failure.message[:200]
        for e in history.events
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
        and e.workflow_task_failed_event_attributes.cause not in TRANSIENT_CAUSES
    ]


def short_error(text: str) -> str:
    """The message inside the SDK core's debug rendering of a failure, else the start of it."""
    found = re.search(r'message: "(.*?)(?<!\\)"', text)
    return (found.group(1) if found else text)[:400]


def taken_over(history: WorkflowHistory) -> bool:
    """Whether a workflow task of this run timed out (its worker died) before the first task
    failure: a diagnostic for the failure message only, never an allowance."""
    for event in history.events:
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            return True
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED:
            return False
    return False


async def watch_until_closed(watch: Watch, loans: Callable[[], set[str]], driven: asyncio.Event) -> None:
    """Until the driver is done and every loan has closed or is stuck: one visibility listing a
    second for the closes, a describe of every open loan every SWEEP_EVERY seconds (history
    growth, stuck workflow tasks). When nothing moved for the stall window: with the driver done,
    the loans still open are recorded as stalled (reported with every other check); while it
    still drives, or at the safety cap, raises Stalled."""
    client, progress = watch.client, watch.progress
    swept = 0.0
    while True:
        wanted = {workflow_id(lid) for lid in loans()}
        try:
            async for wf in client.list_workflows("ExecutionStatus != 'Running'"):
                if (
                    wf.id in wanted
                    and wf.id not in watch.closed
                    and wf.status is not None
                    and wf.status != WorkflowExecutionStatus.CONTINUED_AS_NEW
                ):
                    watch.closed[wf.id] = wf.status
                    progress.mark(f"{wf.id} closed")
        except RPCError:
            pass  # the server is coming back
        open_ = watch.open_loans(wanted)
        if driven.is_set() and not open_:
            return
        if time.monotonic() - swept > SWEEP_EVERY or progress.idle() > SWEEP_EVERY:
            swept = time.monotonic()
            await sweep(watch, open_)
        try:
            progress.check(functools.partial(watch.describe_open, wanted))
        except Stalled as stall:
            if not driven.is_set() or isinstance(stall, CapReached):
                raise
            watch.stalled.update(
                {
                    wf: f"no progress for {progress.idle():.0f}s, still open ({watch.last_seen(wf)})"
                    for wf in watch.open_loans(wanted)
                }
            )
            watch.sys.note(f"stalled: {watch.describe_open(wanted)}")
            return
        watch.sys.note(f"{len(set(watch.closed) & wanted)} closed, {len(watch.stuck)} stuck")
        await asyncio.sleep(1)


async def sweep(watch: Watch, wf_ids: list[str]) -> None:
    """Look at each of these runs, a few at a time (the server shares the machine)."""
    sem = asyncio.Semaphore(4)

    async def one(wf_id: str) -> None:
        async with sem:
            await watch.look(wf_id.removeprefix(WORKFLOW_ID_PREFIX))

    await asyncio.gather(*(one(w) for w in wf_ids))


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
    call that fails (worker or server down) with the same payment id, as long as the loan makes
    progress; a stuck loan is left alone."""

    def __init__(self, system: System, client: Client, rng: random.Random, watch: Watch, loans: int) -> None:
        self.sys, self.client, self.rng, self.watch, self.n_loans = system, client, rng, watch, loans
        self.clock = system.policy.clock
        self.loans: dict[str, OverdueLoan] = {}
        self.sent: list[Sent] = []
        self.promises: Counter[str] = Counter()  # accepted | refused | gave up
        self.retried_calls = 0

    def virtual_now(self) -> datetime:
        return virtual_now(datetime.now(UTC), self.clock)

    async def retry(self, what: str, call: Callable[[], Awaitable[Any]], loan_id: str) -> Any:
        """Run `call` until it succeeds (or raises what the caller handles). Each attempt is
        abandoned after ATTEMPT_TIMEOUT and tried again; the driver gives up only when the loan
        is stuck (LoanStuck) or its history has not grown for the stall window while it fails."""
        began = time.monotonic()
        while True:
            try:
                result = await asyncio.wait_for(call(), ATTEMPT_TIMEOUT)
            except (PaymentRejected, starter.LoanNotFound):
                raise
            except Exception as exc:  # server or worker down: try again
                await self.watch.look(loan_id)
                if self.watch.is_stuck(loan_id):
                    raise LoanStuck(loan_id) from exc
                self.retried_calls += 1
                if self.watch.quiet_since(loan_id, began) > self.sys.stall:
                    raise AssertionError(
                        f"{what}: still failing and {loan_id} made no progress for "
                        f"{self.sys.stall:.0f}s: {exc!r} (logs in {self.sys.logs})"
                    ) from exc
                await asyncio.sleep(0.5 + self.rng.random())
            else:
                self.watch.progress.mark(what)
                return result

    async def completed(self, loan_id: str) -> bool:
        probe = await self.watch.look(loan_id)
        return probe is not None and probe.status == WorkflowExecutionStatus.COMPLETED

    def make_loans(self) -> list[OverdueLoan]:
        rng = self.rng
        loans: list[OverdueLoan] = []
        borrowers: list[Borrower] = []
        for n in range(self.n_loans):
            if borrowers and rng.random() < 0.1:  # a second loan of the same person: one contact budget
                borrower = rng.choice(borrowers)
            else:
                zone = rng.choice(ZONES)
                lang = "zh" if zone == "Asia/Shanghai" else "en"
                borrower = Borrower(
                    borrower_id=f"CB-{n:04d}",
                    name="李明" if lang == "zh" else "Jane Doe",
                    phone=f"+86138{n:08d}",
                    email=f"b{n}@example.cn",
                    address=f"{n} Example Road",
                    timezone=zone,
                    language=lang,
                )
                borrowers.append(borrower)
            loans.append(
                OverdueLoan(
                    loan_id=f"CRASH-{n:04d}",
                    borrower=borrower,
                    currency="CNY",
                    principal=Decimal(rng.randrange(1000, 5000)),
                    interest=Decimal(rng.randrange(0, 20000)) / 100,
                    fees=Decimal(rng.randrange(0, 5000)) / 100,
                    due_date=local_date(self.virtual_now(), borrower.timezone),
                )
            )
        return loans

    async def start_all(self) -> None:
        """Start every loan at DPD 0 of its own calendar (due today, virtual time)."""
        sem = asyncio.Semaphore(16)
        loans = self.make_loans()

        async def one(loan: OverdueLoan) -> None:
            async with sem:
                loan = loan.model_copy(update={"due_date": local_date(self.virtual_now(), loan.borrower.timezone)})
                self.loans[loan.loan_id] = loan
                await self.retry(
                    f"start {loan.loan_id}",
                    lambda: starter.start_collection(self.client, loan, "fast", task_queue="crash-test"),
                    loan.loan_id,
                )

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
                if self.rng.random() < 0.25:  # a promise to pay: a request whose answer depends on today's date
                    at = real_time(start + timedelta(days=self.rng.uniform(0.3, 8.0)), self.clock)
                    ahead = self.rng.randint(3, 6)  # days: a loaded machine takes a request seconds late (8 h each)
                    tg.create_task(self.promise_at(loan, at, ahead))

    async def promise_at(self, loan: OverdueLoan, at: datetime, ahead: int) -> None:
        """A promise to pay a few days ahead (the borrower's calendar): accepted or refused by the
        loan on its dates; either way escalation goes on to the close (it waits while it runs)."""
        await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
        if self.watch.is_stuck(loan.loan_id) or await self.completed(loan.loan_id):
            return
        today = local_date(self.virtual_now(), loan.borrower.timezone)
        request = PromiseRequest(amount=Decimal("50.00"), date=today + timedelta(days=ahead), made_by="crash-driver")
        began = time.monotonic()
        while True:
            try:
                decision = await asyncio.wait_for(
                    starter.promise_to_pay(self.client, loan.loan_id, request), ATTEMPT_TIMEOUT
                )
            except Exception:  # server or worker down: as a payment, try again while it progresses
                if (
                    await self.completed(loan.loan_id)
                    or self.watch.is_stuck(loan.loan_id)
                    or self.watch.quiet_since(loan.loan_id, began) > self.sys.stall
                ):
                    self.promises["gave up"] += 1
                    return
                self.retried_calls += 1
                await asyncio.sleep(0.5 + self.rng.random())
                continue
            outcome = "accepted" if decision.accepted else "refused: " + re.sub(r"[\d.-]+", "#", decision.reason)
            self.promises[outcome] += 1
            self.watch.progress.mark(f"promise {loan.loan_id} {decision.accepted}")
            return

    async def pay_at(self, loan: OverdueLoan, pid: str, at: datetime, kind: str, via: str) -> None:
        await asyncio.sleep(max(0.0, (at - datetime.now(UTC)).total_seconds()))
        if self.watch.is_stuck(loan.loan_id):
            return
        if kind == "full":
            if await self.completed(loan.loan_id):
                return
            try:
                status = await self.retry(
                    f"status {loan.loan_id}",
                    lambda: starter.get_status(self.client, loan.loan_id, fresh=False),
                    loan.loan_id,
                )
            except LoanStuck:
                return
            if status.closed:
                return
            amount = status.outstanding.total
        else:
            amount = Decimal(self.rng.randrange(1000, 30000)) / 100
        payment = Payment(
            payment_id=pid,
            amount=amount,
            currency="CNY",
            paid_at=self.virtual_now(),
            source="platform" if via == "update" else "bank",
        )
        sent = await self.send(loan.loan_id, payment, via)
        if self.rng.random() < 0.12:  # the platform sends it again (same id): must change nothing
            await asyncio.sleep(self.rng.uniform(0.2, 2.0))
            again = "signal" if self.rng.random() < 0.5 else "update"
            dup = await self.send(loan.loan_id, payment, again)
            dup.duplicate_of_receipt = sent.outcome in ("receipt", "signalled")

    async def send(self, loan_id: str, payment: Payment, via: str) -> Sent:
        """One payment by update or signal, retried with the same id while the loan progresses."""
        record = Sent(loan_id, payment, via)
        self.sent.append(record)
        began = time.monotonic()
        while True:
            try:
                await self._send_once(record)
                self.watch.progress.mark(f"payment {payment.payment_id} {record.outcome}")
                return record
            except PaymentRejected as exc:
                record.outcome, record.detail = "rejected", str(exc)
                return record
            except Exception as exc:
                if via == "signal" and isinstance(exc, RPCError) and exc.status == RPCStatusCode.NOT_FOUND:
                    record.outcome, record.detail = "loan_closed", str(exc)  # workflow completed: nothing sent
                    return record
                if await self.completed(loan_id):  # e.g. a closed loan that cannot answer the refusal's query
                    record.outcome, record.detail = "loan_closed", repr(exc)
                    return record
                if self.watch.is_stuck(loan_id):
                    record.outcome, record.detail = "stuck", self.watch.stuck[workflow_id(loan_id)]
                    return record
                record.failed_attempts += 1
                self.retried_calls += 1
                if self.watch.quiet_since(loan_id, began) > self.sys.stall:
                    record.outcome, record.detail = "gave_up", f"no progress for {self.sys.stall:.0f}s: {exc!r}"
                    return record
                await asyncio.sleep(0.5 + self.rng.random())

    async def _send_once(self, record: Sent) -> None:
        loan_id, payment = record.loan_id, record.payment
        if record.via == "update":
            receipt = await asyncio.wait_for(starter.register_payment(self.client, loan_id, payment), ATTEMPT_TIMEOUT)
            assert receipt.payment_id == payment.payment_id and receipt.amount == payment.amount
            record.outcome = "receipt"
        else:
            await asyncio.wait_for(starter.send_bank_payment(self.client, loan_id, payment), ATTEMPT_TIMEOUT)
            record.outcome = "signalled"


# ------------------------------------------------------------------ chaos


def kill_turns(rng: random.Random, worker_kills: int, server_kills: int) -> list[str]:
    """The order of the kills: exactly `worker_kills` "worker" and `server_kills` "server";
    the first is the worker's when there is one (loans are in flight by the first server kill)."""
    total = worker_kills + server_kills
    firsts = range(1, total) if worker_kills else range(total)
    servers = set(rng.sample(firsts, server_kills))
    return ["server" if n in servers else "worker" for n in range(total)]


async def chaos(system: System, rng: random.Random, turns: list[str]) -> None:
    """SIGKILL the worker and the dev server in the order of `turns`, at random moments of the
    first `span` seconds, restarting each after a short outage. Each kill comes a few seconds
    of worker uptime after the previous restart, so the worker really runs (and is caught
    mid-work) in between; more kills stretch the span (6 s each at least)."""
    began = time.monotonic()
    span = max(40.0, 6.0 * len(turns))
    await asyncio.sleep(rng.uniform(3, 8))
    for n, target in enumerate(turns):
        await (kill_server(system, rng) if target == "server" else kill_worker(system, rng))
        if n + 1 < len(turns):
            left = began + span - time.monotonic()
            await asyncio.sleep(rng.uniform(3, max(4.0, left / (len(turns) - n - 1))))


async def kill_worker(system: System, rng: random.Random) -> None:
    if not system.worker.alive:  # it exited on its own (say, while the server was down): a kill must hit a live one
        system.note("worker had exited: restarting it before the kill")
        await system.restart_worker()
        await asyncio.sleep(3)
    system.note("SIGKILL worker")
    system.worker.kill()
    await asyncio.sleep(rng.uniform(0.5, 3))
    await system.restart_worker()
    system.note("worker restarted")


async def kill_server(system: System, rng: random.Random) -> None:
    system.note("SIGKILL dev server")
    system.server.kill()
    await asyncio.sleep(rng.uniform(1, 3))
    system.server.start()
    await system.wait_server_ready()
    system.note("dev server restarted")
    if not system.worker.alive:
        system.note("worker had exited while the server was down: restarting it")
        await system.restart_worker()


async def together(*coros: Coroutine[Any, Any, Any]) -> None:
    """Run the coroutines concurrently; the first failure cancels the others and is raised as
    itself (not inside an exception group), so the test's message is the failure's."""
    try:
        async with asyncio.TaskGroup() as tg:
            for c in coros:
                tg.create_task(c)
    except BaseExceptionGroup as group:
        first = group.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from group


# ------------------------------------------------------------------ collecting the results


async def final_states(
    client: Client,
    loan_ids: list[str],
) -> tuple[dict[str, CollectionStatus], list[WorkflowHistory]]:
    """Each completed loan's status (its result) and every run's history (earlier runs of a
    loan that continued as new too), each fetched once."""
    sem = asyncio.Semaphore(16)

    async def one(lid: str) -> tuple[CollectionStatus, list[WorkflowHistory]]:
        async with sem:
            runs = await history_chain(client, workflow_id(lid))
        last = runs[-1].events[-1]
        payloads = last.workflow_execution_completed_event_attributes.result.payloads
        [status] = await client.data_converter.decode(list(payloads), [CollectionStatus])
        return status, runs

    got = await asyncio.gather(*(one(lid) for lid in loan_ids))
    return {lid: status for lid, (status, _) in zip(loan_ids, got, strict=True)}, [h for _, runs in got for h in runs]


async def history_chain(client: Client, wf_id: str) -> list[WorkflowHistory]:
    """The histories of every run of a workflow id, first run first (continue-as-new links)."""
    runs = [await client.get_workflow_handle(wf_id).fetch_history()]
    while previous := runs[0].events[0].workflow_execution_started_event_attributes.continued_execution_run_id:
        runs.insert(0, await client.get_workflow_handle(wf_id, run_id=previous).fetch_history())
    return runs


async def replay_all(histories: list[WorkflowHistory]) -> dict[str, str]:
    """Replay every history on the current code: run id -> the failure, for those that fail."""

    async def each() -> AsyncIterator[WorkflowHistory]:
        for history in histories:
            yield history

    replayer = Replayer(workflows=workflow_classes(), data_converter=data_converter())
    replayed = await replayer.replay_workflows(each(), raise_on_replay_failure=False)
    return {run: str(err) for run, err in replayed.replay_failures.items()}


def read_rows(db_url: str, loan_ids: list[str]) -> dict[str, dict[str, list[Any]]]:
    engine = make_engine(db_url)
    out: dict[str, dict[str, list[Any]]] = {lid: defaultdict(list) for lid in loan_ids}
    with Session(engine) as session:

        def collect(name: str, rows: Sequence[LedgerEntry | OutboxMessage | TaskRow | LoanRow]) -> None:
            for row in rows:
                if row.loan_id in out:
                    out[row.loan_id][name].append(row)

        collect("ledger", session.exec(select(LedgerEntry)).all())
        collect("outbox", session.exec(select(OutboxMessage)).all())
        collect("tasks", session.exec(select(TaskRow)).all())
        collect("loan", session.exec(select(LoanRow)).all())
    engine.dispose()
    return out


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


def check_course(
    loan: OverdueLoan, status: CollectionStatus, policy: Policy, plan: list[PlannedAction], problems: Problems
) -> Course:
    """The loan's course, and every check of it: where it joined its plan (a loan whose workflow
    began a few virtual days after the driver asked, on a busy or restarting system, joins where
    it is due at its start, `catch_up_at`, as any late hand-over), the plan actions it ran in the
    plan's order with none skipped, none earlier than due, none after the close, and one close."""
    lid = loan.loan_id
    started = next(e for e in status.timeline if e.action == "collection_started")
    cursor, behind = catch_up_at(plan, loan, policy, started.at)
    caught_up = behind.key if behind is not None else None
    executed: list[str] = []
    for e in status.timeline:
        key = plan_key(e.key, e.action, lid, plan)
        if key is not None and key not in executed and key != caught_up:
            executed.append(key)
    closing = [e for e in status.timeline if e.action == "collection_closed"]
    if len(closing) != 1:
        problems.add(COURSE, lid, f"{len(closing)} closing entries")
    closed_as = closing[-1].outcome if closing else "(never closed)"
    closed_at = closing[-1].at if closing else datetime.max.replace(tzinfo=UTC)
    course = Course(executed, plan[cursor:], caught_up, closed_as, closed_at)

    order = [a.key for a in course.ahead]
    if course.executed != order[: len(course.executed)]:
        problems.add(
            COURSE, lid, f"plan actions out of order or skipped: {course.executed}, plan from the start {order}"
        )
    for a in course.ahead:
        if a.key in course.executed:
            first = next(e.at for e in status.timeline if plan_key(e.key, e.action, lid, plan) == a.key)
            if first < action_time(a, loan, policy, 0):
                problems.add(COURSE, lid, f"{a.key} ran at {first}, before it was due")
            if first > course.closed_at:
                problems.add(COURSE, lid, f"{a.key} ran after the loan closed")
    return course


def check_duplicates(lid: str, rows: dict[str, list[Any]], problems: Problems) -> None:
    """Effects written twice, judged from the database alone (so for stuck loans too): a ledger
    row for the same thing twice (kind, component, reference: a fee period, a payment and its
    allocation, the charge-off), a message key or business message (template, channel) twice,
    a task (key, or kind/template/attempt) twice."""
    ledger: list[LedgerEntry] = rows["ledger"]
    for (kind, component, ref), keys in repeated(ledger, lambda r: (r.kind, r.component, r.reference)):
        problems.add(
            DUP_FEE if kind == "fee" else DUP_LEDGER,
            lid,
            f"{len(keys)} ledger rows {kind} {component} {ref!r}: {keys}",
            len(keys) - 1,
        )
    outbox: list[OutboxMessage] = rows["outbox"]
    for key, keys in repeated(outbox, lambda m: m.key):
        problems.add(DUP_MESSAGE, lid, f"outbox key {key} {len(keys)} times", len(keys) - 1)
    for (template, channel), keys in repeated(outbox, lambda m: (m.template, m.channel)):
        problems.add(
            DUP_MESSAGE,
            lid,
            f"{template} by {channel} sent {len(keys)} times under different keys: {keys}",
            len(keys) - 1,
        )
    tasks: list[TaskRow] = rows["tasks"]
    for what, by in (("task id", lambda t: t.task_id), ("task", lambda t: (t.kind, t.template, t.attempt))):
        for key, keys in repeated(tasks, by):
            problems.add(DUP_TASK, lid, f"{what} {key} {len(keys)} times", len(keys) - 1)


def repeated(rows: list[Any], by: Callable[[Any], Any]) -> list[tuple[Any, list[str]]]:
    """The values of `by` that more than one row has, each with those rows' keys (task ids)."""
    groups: dict[Any, list[str]] = defaultdict(list)
    for row in rows:
        groups[by(row)].append(str(getattr(row, "key", None) or getattr(row, "task_id", "")))
    return [(value, sorted(keys)) for value, keys in groups.items() if len(keys) > 1]


def check_loan(
    loan: OverdueLoan,
    status: CollectionStatus,
    policy: Policy,
    rows: dict[str, list[Any]],
    sent: list[Sent],
    gateway: Gateway,
    problems: Problems,
) -> None:
    """Every check for one closed loan beyond `check_duplicates`; problems name the loan."""
    plan = build_plan(policy, loan)
    course = check_course(loan, status, policy, plan, problems)
    by_kind: dict[str, list[LedgerEntry]] = defaultdict(list)
    for r in rows["ledger"]:
        by_kind[r.kind].append(r)
    check_fees(loan, status, policy, course, by_kind, problems)
    check_messages(loan, status, rows, gateway, problems)
    check_payments(loan, status, by_kind, sent, problems)
    check_balances(loan, status, course, by_kind, problems)
    check_stage(loan, status, course, rows, problems)


def check_fees(
    loan: OverdueLoan,
    status: CollectionStatus,
    policy: Policy,
    course: Course,
    by_kind: dict[str, list[LedgerEntry]],
    problems: Problems,
) -> None:
    """Exactly the fee periods the course reached (an extra one is a duplicate effect), each for
    the policy's amount, the same on the timeline as in the ledger."""
    lid, fees = loan.loan_id, by_kind["fee"]
    fee_keys = {r.key for r in fees}
    implied = [a for a in course.ahead if a.kind == "fee" and a.key in course.executed]
    expected = {f"{lid}/fee/{a.period}" for a in implied}
    if fee_keys - expected:
        problems.add(
            DUP_FEE,
            lid,
            f"fees {sorted(fee_keys - expected)} beyond the course's {[a.key for a in implied]}",
            len(fee_keys - expected),
        )
    if expected - fee_keys:
        problems.add(FEES, lid, f"fees {sorted(expected - fee_keys)} of the course missing from the ledger")
    if any(r.amount != policy.late_fee.amount for r in fees):
        problems.add(FEES, lid, f"fee amounts {[r.amount for r in fees]}")
    posted_on_timeline = sorted(e.key for e in status.timeline if e.action == "late_fee" and e.outcome == "posted")
    if posted_on_timeline != sorted(r.key for r in fees):
        problems.add(
            FEES, lid, f"ledger fees {sorted(r.key for r in fees)} differ from the timeline's {posted_on_timeline}"
        )
    if "write_off" in course.executed and len(implied) != len([a for a in course.ahead if a.kind == "fee"]):
        problems.add(FEES, lid, "written off without every fee period")


def check_messages(
    loan: OverdueLoan, status: CollectionStatus, rows: dict[str, list[Any]], gateway: Gateway, problems: Problems
) -> None:
    """Every message delivered to the gateway under its key, the same set as the timeline's;
    every task closed."""
    lid = loan.loan_id
    outbox: list[OutboxMessage] = rows["outbox"]
    undelivered = [m.key for m in outbox if m.status != "sent"]
    if undelivered:
        problems.add(MESSAGES, lid, f"undelivered: {undelivered}")
    missing = [m.key for m in outbox if m.key not in gateway.bodies]
    if missing:
        problems.add(MESSAGES, lid, f"outbox messages the gateway never received: {missing}")
    sent_on_timeline = {
        e.key for e in status.timeline if e.channel in ("sms", "email", "letter") and e.outcome == "sent"
    }
    if sent_on_timeline != {m.key for m in outbox}:
        problems.add(MESSAGES, lid, f"timeline sent {sorted(sent_on_timeline)}, outbox {sorted(m.key for m in outbox)}")
    tasks: list[TaskRow] = rows["tasks"]
    if any(t.status != "closed" for t in tasks):
        left_open = [t.task_id for t in tasks if t.status != "closed"]
        problems.add(TASKS, lid, f"tasks left open after the loan closed: {left_open}")


def check_payments(
    loan: OverdueLoan,
    status: CollectionStatus,
    by_kind: dict[str, list[LedgerEntry]],
    sent: list[Sent],
    problems: Problems,
) -> None:
    """What the driver was told against the ledger and the timeline: a payment answered with a
    receipt, refused as already applied, or sent by signal and not rejected is in the ledger
    exactly once with its amount (else lost); nothing else is."""
    lid, payments = loan.loan_id, by_kind["payment"]
    in_ledger = Counter(r.reference for r in payments)
    applied = Counter(
        e.key.rsplit("/", 1)[1] for e in status.timeline if e.action == "payment" and e.outcome == "applied"
    )
    if applied != in_ledger:
        problems.add(PAYMENTS, lid, f"ledger payments {dict(in_ledger)} but timeline {dict(applied)}")
    rejected_text = " ".join(e.detail for e in status.timeline if e.action == "payment" and e.outcome == "rejected")
    ids_sent = {s.payment.payment_id: s.payment for s in sent}
    if set(in_ledger) - set(ids_sent):
        problems.add(PAYMENTS, lid, f"payments nobody sent: {set(in_ledger) - set(ids_sent)}")
    for pid, p in ids_sent.items():
        mine = [s for s in sent if s.payment.payment_id == pid]
        if pid in in_ledger:
            row = next(r for r in payments if r.reference == pid)
            if row.amount != p.amount:
                problems.add(PAYMENTS, lid, f"{pid}: ledger amount {row.amount}, sent {p.amount}")
        outcomes = {s.outcome for s in mine}
        if "gave_up" in outcomes:
            problems.add(LOST_PAYMENT, lid, f"{pid}: the driver gave up sending it: {[s.detail for s in mine]}")
        if "receipt" in outcomes and in_ledger[pid] == 0:
            problems.add(LOST_PAYMENT, lid, f"{pid}: a receipt was given but the ledger does not have it")
        for s in mine:
            check_send(lid, pid, s, s is mine[0], in_ledger[pid], rejected_text, problems)


def check_send(
    lid: str, pid: str, s: Sent, first: bool, in_ledger: int, rejected_text: str, problems: Problems
) -> None:
    """One send of a payment against the ledger (see check_payments)."""
    if s.outcome == "rejected" and "already applied" in s.detail and in_ledger == 0:
        problems.add(LOST_PAYMENT, lid, f"{pid}: refused as already applied, but not in the ledger")
    if first and s.outcome == "rejected" and "closed" in s.detail and s.failed_attempts == 0 and in_ledger:
        problems.add(PAYMENTS, lid, f"{pid}: refused (loan closed) yet in the ledger")
    if s.duplicate_of_receipt and s.via == "update" and s.outcome not in ("rejected", "loan_closed"):
        problems.add(PAYMENTS, lid, f"{pid}: sent again after its receipt and not refused: {s.outcome}")
    if s.outcome == "signalled" and in_ledger == 0 and pid not in rejected_text:
        problems.add(LOST_PAYMENT, lid, f"{pid}: signalled, neither applied nor rejected (lost)")


def check_balances(
    loan: OverdueLoan,
    status: CollectionStatus,
    course: Course,
    by_kind: dict[str, list[LedgerEntry]],
    problems: Problems,
) -> None:
    """The money adds up in Decimal: payments = allocations + overpayment, owed = allocated +
    outstanding, one charge-off exactly when written off."""
    lid = loan.loan_id
    allocations = sum((r.amount for r in by_kind["allocation"]), Decimal(0))
    over = sum((r.amount for r in by_kind["overpayment"]), Decimal(0))
    paid = sum((r.amount for r in by_kind["payment"]), Decimal(0))
    if paid != allocations + over:
        problems.add(BALANCES, lid, f"payments {paid} != allocations {allocations} + overpayment {over}")
    if status.paid_total != allocations:
        problems.add(BALANCES, lid, f"paid_total {status.paid_total}, allocations {allocations}")
    owed = loan.balance().total + sum((r.amount for r in by_kind["fee"]), Decimal(0))
    if owed != allocations + status.outstanding.total:
        problems.add(BALANCES, lid, f"owed {owed} != allocated {allocations} + outstanding {status.outstanding.total}")
    charge_offs = len(by_kind["charge_off"])
    if charge_offs != (1 if "write_off" in course.executed else 0):
        problems.add(DUP_LEDGER if charge_offs > 1 else BALANCES, lid, f"{charge_offs} charge-offs")


def check_stage(
    loan: OverdueLoan, status: CollectionStatus, course: Course, rows: dict[str, list[Any]], problems: Problems
) -> None:
    """The loans table, the workflow's answer and what the money and timeline imply agree."""
    lid = loan.loan_id
    implied = Stage.paid if status.outstanding.total == 0 else Stage.written_off
    if course.closed_as != str(implied):
        problems.add(STAGE, lid, f"closed as {course.closed_as}, the money says {implied}")
    if status.stage != implied:
        problems.add(STAGE, lid, f"workflow reports {status.stage}, history implies {implied}")
    loan_rows: list[LoanRow] = rows["loan"]
    if [r.stage for r in loan_rows] != [str(status.stage)]:
        problems.add(STAGE, lid, f"loans table says {[r.stage for r in loan_rows]}, workflow {status.stage}")
    if implied is Stage.written_off and not any(e.action == "recovery_ended" for e in status.timeline):
        problems.add(STAGE, lid, "written off without the end of recovery")


# ------------------------------------------------------------------ the test


async def test_loans_survive_killed_workers_and_a_killed_server(
    system: System,
    params: Params,
    summary: Summary,
) -> None:
    print(
        f"\ncrash test seed {params.seed} (CRASH_SEED={params.seed} to repeat), {params.loans} loans on "
        f"{params.db}, {params.worker_kills} worker and {params.server_kills} server kills, logs in {system.tmp} "
        f"(copied to {system.logs} if it fails)"
    )
    try:
        await crash_run(system, params, summary)
    except AssertionError as exc:  # a stall, a process that died, a call given up: name the run
        summary.failure = f"{type(exc).__name__}: {exc}"[:4000]
    except BaseException as exc:
        summary.failure = summary.failure or f"{type(exc).__name__}: {exc}"[:4000]
        raise
    if summary.failure:  # outside the handler: the message alone, no chained traceback
        pytest.fail(f"seed {params.seed} ({params.rerun()}), logs in {system.logs}: {summary.failure}", pytrace=False)
    summary.passed = True


async def crash_run(system: System, params: Params, summary: Summary) -> None:
    """Drive the loans through the chaos, then check everything; one assertion at the end
    lists every problem found."""
    rng = random.Random(params.seed)
    began = time.monotonic()
    progress = Progress(params.stall, params.cap)
    client = await connect(system.address)
    watch = Watch(client, progress, system)
    driver = Driver(system, client, random.Random(rng.random()), watch, params.loans)
    chaos_rng = random.Random(rng.random())
    turns = kill_turns(chaos_rng, params.worker_kills, params.server_kills)
    driven = asyncio.Event()

    async def drive() -> None:
        await driver.start_all()
        system.note(f"{params.loans} loans started")
        await driver.pay_all()
        system.note(f"payments done ({len(driver.sent)} sends)")
        driven.set()

    try:
        await together(
            chaos(system, chaos_rng, turns), drive(), watch_until_closed(watch, lambda: set(driver.loans), driven)
        )
        system.note(f"all loans closed or stuck ({len(watch.stuck)} stuck)")
    finally:
        summary.sends, summary.calls_retried = len(driver.sent), driver.retried_calls
        summary.payments_sent = len({s.payment.payment_id for s in driver.sent})
        summary.worker_kills, summary.server_kills = system.worker.kills, system.server.kills
        summary.stuck_loans = len(watch.stuck) + len(watch.stalled)
        summary.open_loans = len(watch.open_loans({workflow_id(lid) for lid in driver.loans}))
        print("events (monotonic seconds):\n" + "\n".join(f"  {e}" for e in system.events))
    ran = time.monotonic() - began
    problems = await check_run(system, params, client, driver, watch, rng, summary)
    summary.seconds = round(time.monotonic() - began, 1)
    summary.count(problems)
    print_figures(system, driver, summary, ran)
    if problems.found:  # every problem fails the run, whatever its cause (the module docstring)
        pytest.fail(
            f"{len(problems.found)} problem(s) in {len(problems.loans())} loan(s)/run(s), seed {params.seed} "
            f"({params.rerun()}), logs in {system.logs}:\n{problems.report()}",
            pytrace=False,
        )


async def check_run(
    system: System, params: Params, client: Client, driver: Driver, watch: Watch, rng: random.Random, summary: Summary
) -> Problems:
    """Every check of the finished run: stuck and failed loans, the closed loans' effects and
    courses, every closed history replayed, a sample queried, the kills delivered."""
    problems = Problems()
    for wf_id, why in sorted({**watch.stuck, **watch.stalled}.items()):
        problems.add(STUCK, wf_id, why)
    for wf_id, status in sorted(watch.closed.items()):
        if status != WorkflowExecutionStatus.COMPLETED:
            problems.add(FAILED, wf_id, f"closed as {status.name}")
    done = WorkflowExecutionStatus.COMPLETED
    completed = [lid for lid in driver.loans if watch.closed.get(workflow_id(lid)) == done]
    results, histories = await final_states(client, completed)
    for wf_id in sorted(w for w, s in watch.closed.items() if s != WorkflowExecutionStatus.COMPLETED):
        histories += await history_chain(client, wf_id)  # a failed run's history must replay too
    system.note("histories fetched")

    rows = read_rows(system.db_url, list(driver.loans))
    sent_by_loan: dict[str, list[Sent]] = defaultdict(list)
    for s in driver.sent:
        sent_by_loan[s.loan_id].append(s)
    for lid, loan in driver.loans.items():
        check_duplicates(lid, rows[lid], problems)
        if lid in results:
            check_loan(loan, results[lid], system.policy, rows[lid], sent_by_loan[lid], system.gateway, problems)
    outbox_keys = {m.key for r in rows.values() for m in r["outbox"]}  # all loans, the stuck ones too
    for key in sorted(set(system.gateway.bodies) - outbox_keys):
        problems.add(
            MESSAGES, system.gateway.bodies[key].get("loan_id", "?"), f"the gateway got {key}, not in the outbox"
        )

    failures = await replay_all(histories)
    by_run = {h.run_id: h for h in histories}
    for run, err in sorted(failures.items()):
        note = " (a workflow task had timed out first: a fresh worker took it over)" if taken_over(by_run[run]) else ""
        problems.add(REPLAY, f"{by_run[run].workflow_id} run {run}", f"{short_error(err)}{note}")
    system.note("histories replayed")
    summary.histories_replayed, summary.closed_loans = len(histories), len(results)
    summary.recovered_task_failures = sum(len(task_failures(h)) for h in histories)

    await check_sample(client, driver, results, {by_run[r].workflow_id for r in failures}, rng, problems)
    system.note("sample queried")
    if (system.worker.kills, system.server.kills) != (params.worker_kills, params.server_kills):
        problems.add(
            HARNESS,
            "chaos",
            f"{system.worker.kills} worker and {system.server.kills} server kills "
            f"delivered, {params.worker_kills} and {params.server_kills} asked",
        )
    return problems


async def check_sample(
    client: Client,
    driver: Driver,
    results: dict[str, CollectionStatus],
    broken: set[str],
    rng: random.Random,
    problems: Problems,
) -> None:
    """The workflow's own answer by query (the worker replays a closed loan for it) for a sample
    of the loans whose history replays, against the result it completed with."""
    replaying = sorted(lid for lid in results if workflow_id(lid) not in broken)
    sample = rng.sample(replaying, min(20, len(replaying)))
    queried = await asyncio.gather(
        *(
            driver.retry(f"query {lid}", functools.partial(starter.get_status, client, lid, fresh=False), lid)
            for lid in sample
        )
    )
    for lid, answer in zip(sample, queried, strict=True):
        if answer.stage != results[lid].stage or answer.outstanding != results[lid].outstanding:
            problems.add(
                STAGE,
                lid,
                f"query says {answer.stage} {answer.outstanding}, result {results[lid].stage} "
                f"{results[lid].outstanding}",
            )


def print_figures(system: System, driver: Driver, summary: Summary, ran: float) -> None:
    """The run's figures (the assertion then says whether they are clean)."""
    outcomes = Counter(s.outcome for s in driver.sent)
    redelivered = sum(n - 1 for n in system.gateway.posts.values())
    print(f"ran {ran:.0f}s to the last close, {summary.seconds:.0f}s with the checks; after the close:")
    print("\n".join(f"  {e}" for e in system.events[-3:]))
    print(
        f"payments sent {summary.payments_sent} ids in {summary.sends} sends {dict(outcomes)}; calls retried "
        f"{driver.retried_calls}; promises {dict(driver.promises)}; messages {len(system.gateway.bodies)}, "
        f"gateway re-posts (same key) {redelivered}; "
        f"worker starts {system.worker.starts} ({system.worker.kills} kills), server starts {system.server.starts} "
        f"({system.server.kills} kills); histories replayed {summary.histories_replayed}; workflow task failures "
        f"in closed histories {summary.recovered_task_failures}"
    )
    print(
        f"stuck {summary.stuck_loans}, non-replaying {summary.non_replaying_histories}, duplicate fees "
        f"{summary.duplicate_fees}, messages {summary.duplicate_messages}, ledger rows "
        f"{summary.duplicate_ledger_rows}, tasks {summary.duplicate_tasks}, lost payments {summary.lost_payments}, "
        f"other problems {summary.other_problems}"
    )
