"""Standalone reproduction: a stale `workflow.now()` after a query on a worker without the workflow
in its cache (temporalio 1.35).

Only temporalio, a tiny workflow and one activity. The dev server (`temporal server start-dev`,
SQLite file) and the workflow worker run as subprocesses; the driver starts a few workflows,
queries them at random (`progress`), and SIGKILLs and restarts the workflow worker.

The workflow sleeps until absolute deadlines computed from `workflow.now()`:

    deadline = now + step
    while (now := workflow.now()) < deadline:
        await workflow.sleep(deadline - now, summary=f"step {i} now {now.isoformat()}")
    await execute_activity(record, Step(i, now.isoformat()))
    deadline += step

Once a timer has fired, `workflow.now()` is past the deadline (the workflow task that carries the
firing starts after it), so a second timer for the same step means the workflow saw a stale time.
Every timer's summary and every activity's input carries the `workflow.now()` the workflow saw
when it issued the command, so the evidence is in the history. At the end the driver replays
every history (`Replayer`), checks every recorded time against the WorkflowTaskStarted event of
the task that issued the command, and saves the shortest history that does not replay.

What triggers it (measured with this script, see --help for the switches): a query that reaches
a worker which does not have the workflow cached (a fresh worker after the kill, or a worker that
evicted it: `--no-kill --cache 2` reproduces it too), while the history has events after the last
completed workflow task (a timer fired or an activity completed; the next task scheduled, not yet
started). The worker replays the history for the query and runs those events in a live activation
(is_replaying False) stamped with the last completed task's time; the commands it issues there go
out with the next real workflow task. No queries (`--queries 0`): never seen; `--cache 0`: never
seen; the single-batch flag (`--single-batch`): no change.

    python tests/sdk_bugs/repro_stale_time.py [--workflows 8] [--cycles 4] [--queries 4] [--out FILE]

About 65-100 s on two shared cores. Exit status: 0 when the defect was seen (a history that does
not replay, or a stale time), 1 when not.
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

TASK_QUEUE = "stale-time"
WORKFLOW_TYPE = "StaleTimeWorkflow"


# --------------------------------------------------------------------------- workflow + activity


@dataclass
class Step:
    index: int
    now: str  # the workflow.now() the workflow saw when it scheduled this activity


@activity.defn
async def record(step: Step) -> None:
    delay = float(os.environ.get("REPRO_ACTIVITY_SECONDS", "0"))
    if delay:
        await asyncio.sleep(delay)


@workflow.defn(name=WORKFLOW_TYPE)
class StaleTimeWorkflow:
    @workflow.run
    async def run(self, steps: int, step_ms: int) -> list[str]:
        step = timedelta(milliseconds=step_ms)
        deadline = workflow.now() + step
        seen: list[str] = []
        self._seen = seen
        for i in range(steps):
            while (now := workflow.now()) < deadline:
                await workflow.sleep(deadline - now, summary=f"step {i} now {now.isoformat()}")
            seen.append(now.isoformat())
            await workflow.execute_activity(
                record,
                Step(i, now.isoformat()),
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=200), backoff_coefficient=1.0),
            )
            deadline += step
        return seen

    @workflow.query
    def progress(self) -> int:
        return len(getattr(self, "_seen", []))


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
    kinds = args.role  # "worker": workflows (+ activities unless --activity-worker), "activities": only activities
    kwargs: dict = dict(
        client=client,
        task_queue=TASK_QUEUE,
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=args.sticky),
        max_cached_workflows=args.cache,
    )
    if kinds == "worker":
        kwargs.update(workflows=[StaleTimeWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
        if not args.activity_worker:
            kwargs["activities"] = [record]
        if args.cache == 0:
            kwargs["max_concurrent_workflow_tasks"] = 2
    else:
        kwargs["activities"] = [record]
    if args.trace:
        trace_activations()
    w = Worker(**kwargs)
    if args.single_batch and kinds == "worker":
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
    ]
    if args.activity_worker:
        argv.append("--activity-worker")
    if args.single_batch:
        argv.append("--single-batch")
    if args.trace:
        argv.append("--trace")
    return argv


def ts(e) -> datetime:
    return e.event_time.ToDatetime(tzinfo=UTC)


def analyse(history: WorkflowHistory) -> list[str]:
    """Every command that carries the workflow.now() it was issued with, checked against the
    WorkflowTaskStarted event of the workflow task that issued it. Returns one line per stale one."""
    events = list(history.events)
    by_id = {e.event_id: e for e in events}
    stale = []
    current_started = None
    for e in events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            current_started = by_id[e.workflow_task_completed_event_attributes.started_event_id]
        seen = None
        if e.event_type == EventType.EVENT_TYPE_TIMER_STARTED and e.user_metadata.summary.data:
            seen = json.loads(e.user_metadata.summary.data).split(" now ")[1]
        elif e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            seen = json.loads(e.activity_task_scheduled_event_attributes.input.payloads[0].data)["now"]
        if seen is None or current_started is None:
            continue
        seen_dt = datetime.fromisoformat(seen)
        task_dt = ts(current_started)
        if abs((seen_dt - task_dt).total_seconds()) > 0.001:
            match = [
                x.event_id
                for x in events
                if x.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED
                and abs((ts(x) - seen_dt).total_seconds()) <= 0.000001
            ]
            stale.append(
                f"event {e.event_id} ({EventType.Name(e.event_type)}) issued by the task started at event "
                f"{current_started.event_id} ({task_dt.isoformat()}) saw now={seen}"
                f" = time of WorkflowTaskStarted event(s) {match}"
            )
    return stale


def cold_starts(history: WorkflowHistory) -> list[str]:
    """The workflow tasks that timed out, "s2s:" schedule-to-start (a dead worker's sticky queue) or
    "s2c:" start-to-close (the worker died holding it), each with what had woken the workflow
    (the events between the previous completed task and the timeout)."""
    events = list(history.events)
    out = []
    for i, e in enumerate(events):
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
            kind = "s2s:" if e.workflow_task_timed_out_event_attributes.timeout_type == 2 else "s2c:"
            j = i - 1
            while j > 0 and events[j].event_type != EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
                j -= 1
            why = sorted(
                {
                    EventType.Name(x.event_type).removeprefix("EVENT_TYPE_")
                    for x in events[j + 1 : i]
                    if x.event_type
                    in (
                        EventType.EVENT_TYPE_TIMER_FIRED,
                        EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED,
                        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
                        EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED,
                    )
                }
            )
            out.append(kind + ("+".join(why) or "nothing"))
    return out


async def drive(args: argparse.Namespace) -> int:
    rng = random.Random(args.seed)
    temporal = args.temporal or shutil.which("temporal") or str(Path(sys.executable).parent / "temporal")
    work = Path(tempfile.mkdtemp(prefix="repro-stale-time-"))
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
            str(work / "temporal.db"),
            "--log-level",
            "error",
            "--sqlite-pragma",
            "journal_mode=WAL",
            "--sqlite-pragma",
            "synchronous=NORMAL",
        ],
        work / "server.log",
    )
    env = dict(os.environ, REPRO_ACTIVITY_SECONDS=str(args.activity_seconds))
    worker = Proc("worker", worker_argv(args, address, "worker"), work / "worker.log", env)
    acts = Proc("activities", worker_argv(args, address, "activities"), work / "activities.log", env)
    procs = [worker, acts, server]
    t0 = time.monotonic()
    print(f"seed {args.seed}; files in {work}", flush=True)
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
        run_id = uuid.uuid4().hex[:6]
        handles = [
            await client.start_workflow(
                WORKFLOW_TYPE, args=[args.steps, args.step_ms], id=f"stale-{run_id}-{n}", task_queue=TASK_QUEUE
            )
            for n in range(args.workflows)
        ]
        stop_queries = asyncio.Event()
        query_tasks: set[asyncio.Task] = set()
        query_count = [0, 0]  # sent, answered

        async def one_query(h) -> None:
            try:
                await asyncio.wait_for(
                    h.query("progress", rpc_timeout=timedelta(seconds=args.query_timeout)), args.query_timeout
                )
                query_count[1] += 1
            except Exception:
                pass

        async def queries() -> None:
            while not stop_queries.is_set():
                await asyncio.sleep(rng.expovariate(args.queries))
                query_count[0] += 1
                t = asyncio.create_task(one_query(rng.choice(handles)))
                query_tasks.add(t)
                t.add_done_callback(query_tasks.discard)

        querier = asyncio.create_task(queries()) if args.queries else None
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
        # Let every workflow finish (or get stuck on the nondeterminism error).
        # a workflow's own run time (args.steps...) plus the time its worker was down, then finish_timeout
        end = max(time.monotonic(), started + args.steps * args.step_ms / 1000 + downtime) + args.finish_timeout
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
        if querier:
            stop_queries.set()
            await querier
            await asyncio.gather(*query_tasks)
            print(f"queries: {query_count[0]} sent, {query_count[1]} answered", flush=True)
        if pending:
            print(
                f"{len(pending)} workflow(s) still running {args.finish_timeout}s after they should have finished",
                flush=True,
            )
        worker.kill()
        acts.kill()
        # Replay every history with the same workflow; check every recorded now.
        replayer = Replayer(workflows=[StaleTimeWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
        failures, stale_total, saved = 0, 0, None
        colds: dict[str, int] = {}
        task_failed = 0  # histories with a WorkflowTaskFailed event: a worker hit the error live (stuck)
        for h in handles:
            hist = await h.fetch_history()
            task_failed += any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED for e in hist.events)
            for why in cold_starts(hist):
                colds[why] = colds.get(why, 0) + 1
            res = await replayer.replay_workflow(hist, raise_on_replay_failure=False)
            stale = analyse(hist)
            stale_total += len(stale)
            if res.replay_failure or stale:
                print(f"{h.id}: replay {'FAILS: ' + str(res.replay_failure)[:220] if res.replay_failure else 'ok'}")
                for line in stale:
                    print("   stale:", line)
            if res.replay_failure:
                failures += 1
                if saved is None or len(hist.events) < len(saved.events):
                    saved = hist  # keep the shortest
        if saved is not None and args.out:
            Path(args.out).write_text(json.dumps(saved.to_json_dict(), indent=2) + "\n")
        print(
            f"RESULT workflows={len(handles)} kills={0 if args.no_kill else args.cycles} "
            f"queries={query_count[0]} replay_failures={failures} stale_commands={stale_total} "
            f"unfinished={len(pending)} task_failures={task_failed} "
            f"timed_out_tasks={colds} "
            f"elapsed={time.monotonic() - t0:.0f}s"
            + (f" saved={saved.workflow_id} -> {args.out}" if saved and args.out else ""),
            flush=True,
        )
        return 0 if failures or stale_total else 1
    finally:
        for p in procs:
            p.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("role", nargs="?", default="drive", choices=["drive", "worker", "activities"])
    ap.add_argument("--address", help="(worker roles) server address")
    ap.add_argument("--workflows", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40, help="deadlines per workflow")
    ap.add_argument("--step-ms", type=int, default=1500, help="time between deadlines")
    ap.add_argument("--cycles", type=int, default=4, help="worker kills")
    ap.add_argument("--up-min", type=float, default=2.0)
    ap.add_argument("--up-max", type=float, default=5.0)
    ap.add_argument("--down-min", type=float, default=None, help="default: sticky + 0.5 s")
    ap.add_argument("--down-max", type=float, default=None, help="default: sticky + 2.5 s")
    ap.add_argument("--sticky", type=float, default=2.0, help="sticky_queue_schedule_to_start_timeout, seconds")
    ap.add_argument("--cache", type=int, default=1000, help="max_cached_workflows (0: no sticky queue)")
    ap.add_argument(
        "--activity-worker", action="store_true", help="run activities in a separate process that is never killed"
    )
    ap.add_argument("--activity-seconds", type=float, default=0.0, help="how long each activity takes")
    ap.add_argument(
        "--single-batch",
        action="store_true",
        help="enable _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH on the worker",
    )
    ap.add_argument("--queries", type=float, default=4.0, help="queries per second to random workflows (0: none)")
    ap.add_argument("--query-timeout", type=float, default=5.0, help="RPC timeout of each query, seconds")
    ap.add_argument("--no-kill", action="store_true", help="never kill the worker (control run)")
    ap.add_argument(
        "--finish-timeout",
        type=float,
        default=20.0,
        help="seconds to wait, after the workflows should have finished, before calling them stuck",
    )
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--temporal", help="path of the temporal CLI (default: next to this python, or on PATH)")
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
