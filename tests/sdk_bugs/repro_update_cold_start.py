"""Standalone reproduction: an update accepted after commands that the live worker issued for events
a query had made it run early, so that a replay, which applies the update first, fails with
"[TMPRL1100] Nondeterminism error: Update machine does not handle this event" (temporalio 1.35).

Only temporalio, a tiny workflow and two activities. The dev server (`temporal server start-dev`,
SQLite file), the workflow worker and a separate activity worker run as subprocesses. The
workflow's main loop runs activities one after another; the driver sends `pay` updates and
`progress` queries to random workflows, and SIGKILLs and restarts the workflow worker. Two
handler shapes (`--handler`):

    activity: async def pay(self, p): await execute_activity(record_payment, p); self.paid += p.amount
    sync:     def pay(self, p): self.paid += p.amount      (no commands at all)

At the end every history is replayed (`Replayer`) and checked for the live signature: an
UpdateAccepted event written after the main loop's next `work` activity in the same workflow task
(an activation applies updates before activity results, so that order means the result was
applied in an earlier activation). The shortest history that does not replay is saved with --out.

What triggers it (measured with this script): a query that reaches a worker which does not have
the workflow cached, while an activity result is in the history after the last completed task;
the worker runs that result in a live activation for the query (the loop issues its next
activity), and the update arrives with the next real workflow task, in a second activation. A
replay delivers the result and the update in one activation, update first. Both handler shapes
fail, with or without the single-batch flag; without queries it was never seen; with
`--cache 0` never seen.

    python tests/sdk_bugs/repro_update_cold_start.py [--handler activity|sync] [--queries 8] [--out FILE]

About 100 s on two shared cores. Exit status: 0 when a history does not replay, 1 when none.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.common import RetryPolicy
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

TASK_QUEUE = "update-cold-start"
RETRY = RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0)


# --------------------------------------------------------------------------- workflows + activities


@dataclass
class Pay:
    payment_id: str
    amount: int


def activity_seconds() -> float:
    return float(os.environ.get("REPRO_ACTIVITY_SECONDS", "0.3"))


@activity.defn
async def work(step: int) -> int:
    await asyncio.sleep(activity_seconds())
    return step


@activity.defn
async def record_payment(p: Pay) -> None:
    await asyncio.sleep(activity_seconds())


async def run_step(i: int, local: bool) -> None:
    """One step of the main loop: an activity, or (`--loop local`) a local activity."""
    if local:
        await workflow.execute_local_activity(work, i, start_to_close_timeout=timedelta(seconds=10), retry_policy=RETRY)
    else:
        await workflow.execute_activity(work, i, start_to_close_timeout=timedelta(seconds=10), retry_policy=RETRY)


@workflow.defn(name="ActivityHandler")
class ActivityHandlerWorkflow:
    """The update handler runs an activity (like the project's `pay`)."""

    def __init__(self) -> None:
        self.paid = 0
        self.done = 0

    @workflow.run
    async def run(self, steps: int, local: bool = False) -> int:
        for i in range(steps):
            await run_step(i, local)
            self.done = i + 1
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.paid

    @workflow.update
    async def pay(self, p: Pay) -> int:
        await workflow.execute_activity(
            record_payment, p, start_to_close_timeout=timedelta(seconds=10), retry_policy=RETRY
        )
        self.paid += p.amount
        return self.paid

    @workflow.query
    def progress(self) -> int:
        return self.done


@workflow.defn(name="SyncHandler")
class SyncHandlerWorkflow:
    """The update handler is a plain method that only changes state: no activity, no timer."""

    def __init__(self) -> None:
        self.paid = 0
        self.done = 0

    @workflow.run
    async def run(self, steps: int, local: bool = False) -> int:
        for i in range(steps):
            await run_step(i, local)
            self.done = i + 1
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.paid

    @workflow.update
    def pay(self, p: Pay) -> int:
        self.paid += p.amount
        return self.paid

    @workflow.query
    def progress(self) -> int:
        return self.done


WORKFLOWS: dict[str, type[ActivityHandlerWorkflow] | type[SyncHandlerWorkflow]] = {
    "activity": ActivityHandlerWorkflow,
    "sync": SyncHandlerWorkflow,
}


# --------------------------------------------------------------------------- worker process


def trace_activations() -> None:
    """Print every activation (workflow id, timestamp, replaying, jobs -> commands): private API,
    for diagnosis only."""
    from temporalio.worker import _workflow_instance as wi

    original = wi._WorkflowInstanceImpl.activate

    def activate(self, act):
        completion = original(self, act)
        stamp = (
            datetime.fromtimestamp(act.timestamp.ToNanoseconds() / 1e9, UTC).isoformat()
            if act.HasField("timestamp")
            else "-"
        )
        commands = (
            [c.WhichOneof("variant") for c in completion.successful.commands]
            if completion.HasField("successful")
            else ["FAILED"]
        )
        print(
            f"ACT {self._info.workflow_id} now={stamp} replaying={act.is_replaying} "
            f"history_length={act.history_length} "
            f"jobs={[j.WhichOneof('variant') for j in act.jobs]} -> {commands}",
            flush=True,
        )
        return completion

    wi._WorkflowInstanceImpl.activate = activate  # type: ignore[method-assign]  # tracing every activation is the point


async def worker_main(args: argparse.Namespace) -> None:
    client = await Client.connect(args.address)
    kwargs: dict = dict(
        client=client,
        task_queue=TASK_QUEUE,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=args.sticky),
        max_cached_workflows=args.cache,
    )
    if args.role == "worker":
        kwargs.update(workflows=[WORKFLOWS[args.handler]], workflow_runner=UnsandboxedWorkflowRunner())
        if not args.activity_worker or args.loop == "local":  # local activities run where the workflow runs
            kwargs["activities"] = [work, record_payment]
    else:
        kwargs["activities"] = [work, record_payment]
    if args.trace:
        trace_activations()
    w = Worker(**kwargs)
    if args.single_batch and args.role == "worker":
        from temporalio.worker._workflow_instance import _WorkflowLogicFlag

        w._set_default_workflow_logic_flag(
            _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH, enabled=True
        )
    print("ready", flush=True)
    await w.run()


# --------------------------------------------------------------------------- driver


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    def __init__(self, name: str, argv: list[str], log: Path, env: dict | None = None) -> None:
        self.name, self.argv, self.log, self.env = name, argv, log, env
        self.p: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "ab") as out:
            out.write(f"\n==== start {self.starts} at {datetime.now(UTC).isoformat()}\n".encode())
            out.flush()
            self.p = subprocess.Popen(
                ["nice", "-n", "10", *self.argv],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )

    def kill(self) -> None:
        if self.p and self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGKILL)  # our own session: nice and the python child
            self.p.wait()

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None


def wait_ready(proc: Proc, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc.log.read_text(errors="replace").count("ready\n") >= proc.starts:
            return
        if not proc.alive():
            raise RuntimeError(f"{proc.name} exited:\n{proc.log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise RuntimeError(f"{proc.name} not ready")


def worker_argv(args: argparse.Namespace, address: str, role: str) -> list[str]:
    argv = [
        sys.executable,
        os.path.abspath(__file__),
        role,
        "--address",
        address,
        "--sticky",
        str(args.sticky),
        "--cache",
        str(args.cache),
        "--handler",
        args.handler,
        "--loop",
        args.loop,
    ]
    if not args.activity_worker:
        argv.append("--same-worker")
    if args.single_batch:
        argv.append("--single-batch")
    if args.trace:
        argv.append("--trace")
    return argv


COMMAND_EVENTS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_MARKER_RECORDED,
}


def late_accepts(history: WorkflowHistory) -> list[str]:
    """UpdateAccepted events written after the main loop's next `work` activity in the same workflow
    task. Activations apply updates before activity results, so the loop's command comes first only
    if the result that woke the loop was handled in an earlier activation than the update: the
    order a replay, which delivers both in one activation, does not reproduce."""
    events = list(history.events)
    out = []
    block: list = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            block = [e]
            continue
        if not block:
            continue
        if e.event_type not in COMMAND_EVENTS:
            block = []
            continue
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED and any(
            x.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
            and x.activity_task_scheduled_event_attributes.activity_type.name == "work"
            for x in block[1:]
        ):
            out.append(
                f"UpdateAccepted event {e.event_id} after command event(s) "
                f"{[x.event_id for x in block[1:]]} of the task completed at event {block[0].event_id}"
            )
        block.append(e)
    return out


def timed_out_tasks(history: WorkflowHistory) -> list[str]:
    """Workflow tasks that timed out: "s2s:" schedule-to-start (a dead worker's sticky queue, or a
    speculative task for an update), "s2c:" start-to-close (the worker died holding it)."""
    events = list(history.events)
    out = []
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            out.append("s2s" if e.workflow_task_timed_out_event_attributes.timeout_type == 2 else "s2c")
    return out


async def drive(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    temporal = args.temporal or shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    work_dir = Path(tempfile.mkdtemp(prefix="repro-update-"))
    port = free_port()
    address = f"127.0.0.1:{port}"
    server = Proc(
        "server",
        [
            temporal,
            "server",
            "start-dev",
            "--headless",
            "--port",
            str(port),
            "--ip",
            "127.0.0.1",
            "--db-filename",
            str(work_dir / "temporal.db"),
            "--log-level",
            "error",
            "--sqlite-pragma",
            "journal_mode=WAL",
            "--sqlite-pragma",
            "synchronous=NORMAL",
        ],
        work_dir / "server.log",
    )
    env = dict(os.environ, REPRO_ACTIVITY_SECONDS=str(args.activity_seconds))
    worker = Proc("worker", worker_argv(args, address, "worker"), work_dir / "worker.log", env)
    acts = Proc("activities", worker_argv(args, address, "activities"), work_dir / "activities.log", env)
    procs = [worker, acts, server]
    t0 = time.monotonic()
    print(f"seed {args.seed}; files in {work_dir}", flush=True)
    try:
        server.start()
        from temporalio.api.workflowservice.v1 import GetSystemInfoRequest

        client = None
        for _ in range(150):
            try:
                client = await Client.connect(address)
                await client.workflow_service.get_system_info(GetSystemInfoRequest())
                break
            except Exception:
                client = None
                await asyncio.sleep(0.2)
        assert client is not None, "dev server did not start"
        worker.start()
        if args.activity_worker:
            acts.start()
            wait_ready(acts)
        wait_ready(worker)
        wf = WORKFLOWS[args.handler]
        run_id = uuid.uuid4().hex[:6]
        handles = [
            await client.start_workflow(
                wf.run, args=[args.steps, args.loop == "local"], id=f"upd-{run_id}-{n}", task_queue=TASK_QUEUE
            )
            for n in range(args.workflows)
        ]
        stop = asyncio.Event()
        calls: set[asyncio.Task] = set()
        counts = {"updates": 0, "updates_ok": 0, "queries": 0, "queries_ok": 0}

        async def one(kind: str, h) -> None:
            try:
                if kind == "updates":  # (execute_update polls for the result until it has one: bound it)
                    call = h.execute_update(
                        wf.pay,
                        Pay(uuid.uuid4().hex[:8], rng.randrange(1, 100)),
                        rpc_timeout=timedelta(seconds=args.call_timeout),
                    )
                else:
                    call = h.query(wf.progress, rpc_timeout=timedelta(seconds=args.call_timeout))
                await asyncio.wait_for(call, args.call_timeout)
                counts[kind + "_ok"] += 1
            except Exception:
                pass

        async def caller(kind: str, rate: float) -> None:
            while not stop.is_set():
                await asyncio.sleep(rng.expovariate(rate))
                counts[kind] += 1
                t = asyncio.create_task(one(kind, rng.choice(handles)))
                calls.add(t)
                t.add_done_callback(calls.discard)

        callers = [
            asyncio.create_task(caller(kind, rate))
            for kind, rate in (("updates", args.updates), ("queries", args.queries))
            if rate > 0
        ]
        started, downtime = time.monotonic(), 0.0
        for cycle in range(args.cycles):
            await asyncio.sleep(rng.uniform(args.up_min, args.up_max))
            if args.no_kill:
                continue
            worker.kill()
            down = rng.uniform(args.down_min, args.down_max)
            print(
                f"[{time.monotonic() - t0:6.1f}s] cycle {cycle + 1}: worker killed, restarting in {down:.1f}s",
                flush=True,
            )
            await asyncio.sleep(down)
            downtime += down
            worker.start()
            wait_ready(worker)
        stop.set()  # no new calls: the workflows finish their loops
        for c in callers:
            await c
        # a workflow's own run time (args.steps...) plus the time its worker was down, then finish_timeout
        expected = started + args.steps * (args.activity_seconds + 0.05) + downtime
        end = max(time.monotonic(), expected) + args.finish_timeout
        pending = list(handles)
        while pending and time.monotonic() < end:
            still = []
            for h in pending:
                d = await h.describe()
                if d.status is None or d.status.name == "RUNNING":
                    still.append(h)
            pending = still
            if pending:
                await asyncio.sleep(1)
        for c in list(calls):
            c.cancel()
        await asyncio.gather(*calls, return_exceptions=True)
        if pending:
            print(
                f"{len(pending)} workflow(s) still running {args.finish_timeout}s after they should have finished",
                flush=True,
            )
        worker.kill()
        acts.kill()
        replayer = Replayer(workflows=[wf], workflow_runner=UnsandboxedWorkflowRunner())
        failures, late_total, saved = 0, 0, None
        timeouts: dict[str, int] = {}
        accepted = 0
        task_failed = 0  # histories with a WorkflowTaskFailed event: a worker hit the error live (stuck)
        for h in handles:
            hist = await h.fetch_history()
            task_failed += any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in hist.events)
            accepted += sum(
                e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED for e in hist.events
            )
            for k in timed_out_tasks(hist):
                timeouts[k] = timeouts.get(k, 0) + 1
            res = await replayer.replay_workflow(hist, raise_on_replay_failure=False)
            late = late_accepts(hist)
            late_total += len(late)
            if res.replay_failure or late:
                print(f"{h.id}: replay {'FAILS: ' + str(res.replay_failure)[:200] if res.replay_failure else 'ok'}")
                for line in late:
                    print("   late:", line)
            if res.replay_failure:
                failures += 1
                if saved is None or len(hist.events) < len(saved.events):
                    saved = hist  # keep the shortest
        if saved is not None and args.out:
            Path(args.out).write_text(json.dumps(saved.to_json_dict(), indent=2) + "\n")
        print(
            f"RESULT handler={args.handler} loop={args.loop} workflows={len(handles)} "
            f"kills={0 if args.no_kill else args.cycles} "
            f"updates={counts['updates']} accepted={accepted} queries={counts['queries']} "
            f"replay_failures={failures} late_accepts={late_total} unfinished={len(pending)} "
            f"task_failures={task_failed} timed_out_tasks={timeouts} "
            f"elapsed={time.monotonic() - t0:.0f}s"
            + (f" saved={saved.workflow_id} -> {args.out}" if saved and args.out else ""),
            flush=True,
        )
        return 0 if failures else 1
    finally:
        for p in procs:
            p.kill()
        if not args.keep:
            shutil.rmtree(work_dir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", nargs="?", default="drive", choices=["drive", "worker", "activities"])
    ap.add_argument("--address", help="(worker roles) server address")
    ap.add_argument("--handler", choices=sorted(WORKFLOWS), default="activity")
    ap.add_argument(
        "--loop",
        choices=["activity", "local"],
        default="activity",
        help="what the main loop runs: activities, or local activities",
    )
    ap.add_argument("--workflows", type=int, default=10)
    ap.add_argument("--steps", type=int, default=150, help="activities the main loop runs")
    ap.add_argument("--activity-seconds", type=float, default=0.3, help="how long each activity takes")
    ap.add_argument("--updates", type=float, default=4.0, help="updates per second to random workflows")
    ap.add_argument("--queries", type=float, default=8.0, help="queries per second to random workflows (0: none)")
    ap.add_argument("--call-timeout", type=float, default=10.0, help="RPC timeout of each update/query, seconds")
    ap.add_argument("--cycles", type=int, default=6, help="worker kills")
    ap.add_argument("--up-min", type=float, default=2.0)
    ap.add_argument("--up-max", type=float, default=5.0)
    ap.add_argument("--down-min", type=float, default=None, help="default: sticky + 0.5 s")
    ap.add_argument("--down-max", type=float, default=None, help="default: sticky + 2.5 s")
    ap.add_argument("--sticky", type=float, default=2.0, help="sticky_queue_schedule_to_start_timeout, seconds")
    ap.add_argument("--cache", type=int, default=1000, help="max_cached_workflows (0: no sticky queue)")
    ap.add_argument(
        "--same-worker",
        dest="activity_worker",
        action="store_false",
        help="run activities in the workflow worker (killed with it) instead of a separate process",
    )
    ap.add_argument(
        "--single-batch",
        action="store_true",
        help="enable _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH on the worker",
    )
    ap.add_argument("--no-kill", action="store_true", help="never kill the worker (control run)")
    ap.add_argument(
        "--finish-timeout",
        type=float,
        default=20.0,
        help="seconds to wait, after the workflows should have finished, before calling them stuck",
    )
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--temporal", help="path of the temporal CLI (default: on PATH, or next to this python)")
    ap.add_argument("--out", help="save the shortest history that does not replay here (JSON)")
    ap.add_argument("--trace", action="store_true", help="workers print every activation to their log (private API)")
    ap.add_argument("--keep", action="store_true", help="keep the server file and logs")
    args = ap.parse_args()
    if args.role != "drive":
        asyncio.run(worker_main(args))
        return
    if args.seed is None:
        args.seed = random.randrange(1_000_000)
    args.down_min = args.sticky + 0.5 if args.down_min is None else args.down_min
    args.down_max = args.sticky + 2.5 if args.down_max is None else args.down_max
    sys.exit(asyncio.run(drive(args)))


if __name__ == "__main__":
    main()
