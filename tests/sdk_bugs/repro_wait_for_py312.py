"""Standalone reproduction: a history recorded on Python 3.11 with `workflow.wait_condition(fn,
timeout=...)` and an update does not replay on Python 3.12 or 3.13, "[TMPRL1100] Nondeterminism
error: Timer machine does not handle this event: HistoryEvent(id: N,
WorkflowExecutionUpdateCompleted)" (temporalio 1.35; not a defect of its Rust core).

Only temporalio and a tiny workflow, no activity. The main coroutine waits with a timeout; an
update handler sets the flag it waits for and then awaits something that is already true:

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.flag, timeout=timedelta(hours=1))  # a timer
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.calls

    @workflow.update
    async def set_and_wait(self) -> int:
        self.flag = True
        await workflow.wait_condition(lambda: True)
        return self.calls

Both conditions come true in the same pass of the SDK's condition check, in the order they were
registered (the main coroutine's first), and each resolves its future. What runs next is
Python's: 3.11's `asyncio.wait_for(fut, timeout)` waits on an inner `waiter` that a done callback
of `fut` releases, one more turn of the event loop than the 3.12 rewrite (`async with
asyncio.timeout(timeout): return await fut`), which wakes the coroutine straight from `fut`. So
3.11 runs the update handler to its end first (UpdateCompleted) and then the main coroutine
(its `finally` cancels the timer: TimerCanceled); 3.12 and 3.13 run the main coroutine first.
The commands of that workflow task come out in the other order, live as in a replay, so a
history recorded on 3.11 does not replay on 3.12+, and one recorded on 3.12+ does not replay on
3.11 ("Update machine does not handle this event: ... TimerCanceled"). With a handler that awaits
nothing (`--update set_sync`, `set_async`) the update completes before the conditions are checked
and both Pythons agree. Measured with this script: the same on the dev server and the time-skipping
test server, with or without the single-batch flag (`--single-batch`); on 3.12 with `--wait-for-311`
the live order is 3.11's.

    python tests/sdk_bugs/repro_wait_for_py312.py record [--update set_and_wait] [--out FILE]
    python tests/sdk_bugs/repro_wait_for_py312.py replay [FILE] [--wait-for-311]

`record` starts the dev server (`temporal server start-dev`, the binary next to this Python or
on PATH; `--server time-skipping` for the test server), runs one workflow per update (or the
one named), prints each history's command order in the task that completed the update, replays
it here, and saves the `set_and_wait` history with `--out`. `replay` replays a saved history
(default: wait-for-py312-minimal.json beside this script) and prints the outcome; with
`--wait-for-311` it first puts Python 3.11's `asyncio.wait_for` back (copied below), which makes
the 3.11 history replay on 3.12 and 3.13. A few seconds. Exit status of `replay`: 0 when the history
replays, 1 when not; of `record`: 0 when every history replayed.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import shutil
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner, Worker

TASK_QUEUE = "wait-for-py312"
WORKFLOW_TYPE = "WaitForWorkflow"
MINIMAL = Path(__file__).parent / "wait-for-py312-minimal.json"
UPDATES = ["set_and_wait", "set_async", "set_sync"]


# --------------------------------------------------------------------------- workflow


@workflow.defn(name=WORKFLOW_TYPE)
class WaitForWorkflow:
    def __init__(self) -> None:
        self.flag = False
        self.calls = 0

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.flag, timeout=timedelta(hours=1))
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self.calls

    @workflow.update
    async def set_and_wait(self) -> int:
        """Sets the flag, then waits on a condition that is already true: resolved in the same
        pass as the main coroutine's."""
        self.flag = True
        self.calls += 1
        await workflow.wait_condition(lambda: True)
        return self.calls

    @workflow.update
    async def set_async(self) -> int:
        """Sets the flag and returns without awaiting: completes before any condition is checked."""
        self.flag = True
        self.calls += 1
        return self.calls

    @workflow.update
    def set_sync(self) -> int:
        """The same as a plain method."""
        self.flag = True
        self.calls += 1
        return self.calls


# --------------------------------------------------------------------------- Python 3.11's wait_for


def _release_waiter(waiter: asyncio.Future, *args: Any) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _cancel_and_wait(fut: asyncio.Future, loop: asyncio.AbstractEventLoop) -> None:
    waiter = loop.create_future()
    cb = functools.partial(_release_waiter, waiter)
    fut.add_done_callback(cb)
    try:
        fut.cancel()
        await waiter
    finally:
        fut.remove_done_callback(cb)


async def wait_for_311(fut: Any, timeout: float | None) -> Any:
    """`asyncio.wait_for` as in CPython 3.11.7 (Lib/asyncio/tasks.py, PSF licence), unchanged
    but for names: the done callback releases an inner waiter, one more loop turn than 3.12's."""
    loop = asyncio.get_running_loop()
    if timeout is None:
        return await fut
    if timeout <= 0:
        fut = asyncio.ensure_future(fut, loop=loop)
        if fut.done():
            return fut.result()
        await _cancel_and_wait(fut, loop=loop)
        try:
            return fut.result()
        except asyncio.CancelledError as exc:
            raise TimeoutError() from exc
    waiter = loop.create_future()
    timeout_handle = loop.call_later(timeout, _release_waiter, waiter)
    cb = functools.partial(_release_waiter, waiter)
    fut = asyncio.ensure_future(fut, loop=loop)
    fut.add_done_callback(cb)
    try:
        try:
            await waiter
        except asyncio.CancelledError:
            if fut.done():
                return fut.result()
            fut.remove_done_callback(cb)
            await _cancel_and_wait(fut, loop=loop)
            raise
        if fut.done():
            return fut.result()
        fut.remove_done_callback(cb)
        await _cancel_and_wait(fut, loop=loop)
        try:
            return fut.result()
        except asyncio.CancelledError as exc:
            raise TimeoutError() from exc
    finally:
        timeout_handle.cancel()


def use_wait_for_311() -> None:
    """Put 3.11's `asyncio.wait_for` back (temporalio looks `asyncio.wait_for` up at each call)."""
    asyncio.wait_for = wait_for_311
    asyncio.tasks.wait_for = wait_for_311


# --------------------------------------------------------------------------- reading a history

COMMAND_EVENTS = {
    EventType.EVENT_TYPE_TIMER_STARTED,
    EventType.EVENT_TYPE_TIMER_CANCELED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED,
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
    EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED,
    EventType.EVENT_TYPE_UPSERT_WORKFLOW_SEARCH_ATTRIBUTES,
}


def update_task_order(history: WorkflowHistory) -> list[str]:
    """The events written by the workflow task that completed an update, in order (the commands
    of that task, with the protocol's UpdateAccepted/UpdateCompleted), e.g.
    ["WORKFLOW_EXECUTION_UPDATE_ACCEPTED", "WORKFLOW_EXECUTION_UPDATE_COMPLETED", "TIMER_CANCELED"]."""
    block: list[str] | None = None
    for e in history.events:
        if e.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED:
            block = []
        elif block is not None and e.event_type in COMMAND_EVENTS:
            block.append(EventType.Name(e.event_type).removeprefix("EVENT_TYPE_"))
        elif block is not None:
            if "WORKFLOW_EXECUTION_UPDATE_COMPLETED" in block:
                return block
            block = None
    return block if block and "WORKFLOW_EXECUTION_UPDATE_COMPLETED" in block else []


def python_order(order: list[str]) -> str:
    """Which Python's order a task's events show: "3.11" (update completed, then the timer
    cancelled), "3.12+" (the timer cancelled first) or "-" (no cancelled timer)."""
    if "TIMER_CANCELED" not in order:
        return "-"
    completed = order.index("WORKFLOW_EXECUTION_UPDATE_COMPLETED")
    return "3.11" if completed < order.index("TIMER_CANCELED") else "3.12+"


async def replay(history: WorkflowHistory) -> str | None:
    """Replay; None when it replays, else the failure's message."""
    replayer = Replayer(workflows=[WaitForWorkflow], workflow_runner=UnsandboxedWorkflowRunner())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    return None if result.replay_failure is None else str(result.replay_failure)


def short(failure: str) -> str:
    """The nondeterminism message out of a replay failure."""
    start = failure.find("[TMPRL")
    return failure[start : failure.find('"', start)] if start >= 0 else failure[:200]


# --------------------------------------------------------------------------- record


async def start_server(kind: str) -> WorkflowEnvironment:
    if kind == "time-skipping":
        binary = Path(sys.executable).parent / "temporal-test-server"
        path = str(binary) if binary.exists() else shutil.which("temporal-test-server")
        return await WorkflowEnvironment.start_time_skipping(test_server_existing_path=path)
    binary = Path(sys.executable).parent / "temporal"
    path = str(binary) if binary.exists() else shutil.which("temporal")
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=path, ui=False, dev_server_extra_args=["--log-level", "error"]
    )


async def run_one(client: Client, update: str) -> WorkflowHistory:
    """Start the workflow, wait until its first task is done (the timer started), send the
    update, wait for the result; the history."""
    handle = await client.start_workflow(
        WORKFLOW_TYPE, id=f"wait-for-{update}-{uuid.uuid4().hex[:6]}", task_queue=TASK_QUEUE
    )
    for _ in range(200):
        history = await handle.fetch_history()
        if any(e.event_type == EventType.EVENT_TYPE_TIMER_STARTED for e in history.events):
            break
        await asyncio.sleep(0.05)
    await handle.execute_update(update)
    await handle.result()
    return await handle.fetch_history()


async def record(args: argparse.Namespace) -> int:
    env = await start_server(args.server)
    failures = 0
    try:
        worker = Worker(
            env.client, task_queue=TASK_QUEUE, workflows=[WaitForWorkflow], workflow_runner=UnsandboxedWorkflowRunner()
        )
        if args.single_batch:
            from temporalio.worker._workflow_instance import _WorkflowLogicFlag

            worker._set_default_workflow_logic_flag(
                _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH, enabled=True
            )
        async with worker:
            for update in [args.update] if args.update else UPDATES:
                history = await run_one(env.client, update)
                order = update_task_order(history)
                failure = await replay(history)
                failures += failure is not None
                print(
                    f"{update}: {len(history.events)} events; the update's task wrote {order} "
                    f"({python_order(order)} order); replay here: {'FAILS ' + short(failure) if failure else 'ok'}",
                    flush=True,
                )
                if args.out and update == "set_and_wait":
                    Path(args.out).write_text(json.dumps(history.to_json_dict(), indent=2) + "\n")
                    print(f"saved -> {args.out}")
    finally:
        await env.shutdown()
    return 1 if failures else 0


async def replay_file(args: argparse.Namespace) -> int:
    if args.wait_for_311:
        use_wait_for_311()
    history = WorkflowHistory.from_json("wait-for-py312", Path(args.file).read_text())
    order = update_task_order(history)
    failure = await replay(history)
    print(
        f"Python {sys.version.split()[0]}, asyncio.wait_for "
        f"{'of 3.11 (patched)' if args.wait_for_311 else 'as shipped'}: {Path(args.file).name} "
        f"({python_order(order)} order: {order}) replay {'FAILS: ' + short(failure) if failure else 'ok'}"
    )
    return 1 if failure else 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["record", "replay"])
    ap.add_argument("file", nargs="?", default=str(MINIMAL), help="(replay) the history to replay")
    ap.add_argument("--update", choices=UPDATES, help="(record) only this update (default: each in turn)")
    ap.add_argument("--server", choices=["dev", "time-skipping"], default="dev", help="(record) which server")
    ap.add_argument(
        "--single-batch",
        action="store_true",
        help="(record) enable _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH on the worker",
    )
    ap.add_argument("--out", help="(record) save the set_and_wait history here (JSON)")
    ap.add_argument("--wait-for-311", action="store_true", help="use Python 3.11's asyncio.wait_for (both modes)")
    args = ap.parse_args()
    if args.mode == "record":
        if args.wait_for_311:
            use_wait_for_311()
        sys.exit(asyncio.run(record(args)))
    sys.exit(asyncio.run(replay_file(args)))


if __name__ == "__main__":
    main()
