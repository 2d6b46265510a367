"""Defects of temporalio 1.35 (its Rust core) that no workflow of this project meets any more,
kept as strict xfails: each fails (XPASS) once an SDK upgrade fixes it, so we notice.

One behaviour of the SDK is behind them all: a query reaches a worker that does not have the
workflow in its cache (a fresh worker after a SIGKILL, or a worker that evicted it) while the
history holds new events after the last completed workflow task (a timer fired, an activity
completed, a signal; the next task scheduled, not yet started). The worker replays the history
to answer the query and runs those new events in a *live* activation (is_replaying False),
outside any workflow task, stamped with the start time of the last completed task; the commands
the workflow issues there are kept and sent with the next real workflow task. A later replay
delivers those events in that task, at its own time and together with whatever else it carries
(an update), and can decide differently:

- stale-time-minimal.json (tests/sdk_bugs/repro_stale_time.py): after its timer fired (event 75)
  and the dead worker's sticky task timed out (77), the fresh worker started the same timer again
  (event 81, 1.032124 s, summary `now` = 04:22:23.120707 = WorkflowTaskStarted 72, while the task
  that carried it started at 04:22:27.824533, event 79); a replay sees the deadline passed and
  schedules the activity: "Activity machine does not handle this event: TimerStarted".
- update-activity-handler-minimal.json, update-sync-handler-minimal.json
  (tests/sdk_bugs/repro_update_cold_start.py): the main loop's next activity (event 60, resp. 85)
  was issued in that early activation and the update that came with the real task was accepted
  after it (61, resp. 86 and 88); a replay applies the update first: "Update machine does not
  handle this event: ActivityTaskScheduled". The second history's update handler is a plain
  method that only changes state (no commands). Upstream: sdk-python#1591, sdk-rust#943.
- update-on-cold-start.json and timer-after-cold-start.json: the same two defects as the project's
  first workflow version met them in tests/system/test_crash.py (its crash test queried every loan).

Without queries neither appeared in any run of the scripts, nor with max_cached_workflows=0.
The decider's shell is shaped so that it cannot meet them: no updates (requests are signals), no
decision on `workflow.now()` (its time comes from the history and from the requests' own
stamps), and requests taken only at quiet moments (docs/workflow.md: The decider and the shell). The
scripts reproduce the minimal histories from scratch in about 100 s each; they are not run here.

One more, of the SDK on Python 3.12+ rather than of its core, with no query and no restart:
temporalio's `workflow.wait_condition(fn, timeout=...)` runs on `asyncio.wait_for`, which Python
3.12 rewrote on `asyncio.timeout`; the main coroutine then resumes one event-loop turn earlier
when its condition comes true. When an update handler that awaits something already true (here
`wait_condition(lambda: True)`) is resolved in that same pass, 3.11 completes the update first
and then cancels the main coroutine's timer, 3.12 and 3.13 cancel the timer first. That is the
order live as in replay, so a history recorded on one side does not replay on the other:
wait-for-py312-minimal.json (tests/sdk_bugs/repro_wait_for_py312.py, recorded on 3.11) fails on
3.12+ with "Timer machine does not handle this event: ... WorkflowExecutionUpdateCompleted", as the
legacy workflow's continued-run2-v4/-v6 histories do (tests/replay/test_replay.py), and replays with
3.11's `wait_for` put back. A handler that awaits nothing completes before any condition is checked
and is not affected. The decider's shell waits with `wait_condition(timeout=...)` too
(workflows/collection.py, `_next`) but is the only coroutine that awaits: no updates, signal
handlers that are plain methods issuing no command; its -v7 histories replay on 3.11 to 3.13.
Upstream: no issue found (searched sdk-python for wait_condition/wait_for and Python 3.12; related
only: sdk-python#422, which made 3.12's `wait_for` run on the workflow loop).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from types import ModuleType

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer, UnsandboxedWorkflowRunner
from temporalio.workflow import NondeterminismError

from infra.temporal import data_converter
from tests.helpers import SDK_BUGS
from workflows.legacy.collection_v1 import LegacyCollectionWorkflow

HERE = SDK_BUGS


def _script(name: str) -> ModuleType:
    """Import a standalone reproduction script for its workflow definitions."""
    module_name = f"sdk_bugs_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, HERE / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


def _history(file: str) -> WorkflowHistory:
    data = json.loads((HERE / file).read_text())
    return WorkflowHistory.from_json("sdk-bug-minimal", data)


async def _replay(workflow: type, file: str) -> None:
    replayer = Replayer(workflows=[workflow], workflow_runner=UnsandboxedWorkflowRunner())
    await replayer.replay_workflow(_history(file))


# ------------------------------------------------------------------------------ the evidence


def test_stale_time_history_shows_the_stale_now() -> None:
    """The timer started again carries, in its summary, a `workflow.now()` equal to an earlier
    workflow task's start, not to the start of the task that issued it."""
    stale = _script("repro_stale_time").analyse(_history("stale-time-minimal.json"))
    assert stale, "no command with a stale workflow.now() in the recorded history"


@pytest.mark.parametrize("file", ["update-activity-handler-minimal.json", "update-sync-handler-minimal.json"])
def test_update_history_shows_the_late_acceptance(file: str) -> None:
    """The update was accepted after the main loop's next activity in the same workflow task."""
    assert _script("repro_update_cold_start").late_accepts(_history(file))


def test_update_sync_handler_issues_no_commands() -> None:
    """The sync-handler history's handler issued nothing: the only activities are the loop's."""
    events = _history("update-sync-handler-minimal.json").events
    types = {
        e.activity_task_scheduled_event_attributes.activity_type.name
        for e in events
        if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    }
    assert types == {"work"}
    assert any(e.event_type == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED for e in events)


# ------------------------------------------------------------------------------ the replays


@pytest.mark.xfail(
    strict=True,
    raises=NondeterminismError,
    reason="temporalio 1.35: a query on an uncached worker runs new events live at the previous "
    "task's time (timer started again; the replay schedules the activity)",
)
async def test_stale_time_minimal_replays() -> None:
    await _replay(_script("repro_stale_time").StaleTimeWorkflow, "stale-time-minimal.json")


@pytest.mark.xfail(
    strict=True,
    raises=NondeterminismError,
    reason="temporalio 1.35: an update accepted after commands from events a query applied early (sdk-python#1591)",
)
async def test_update_activity_handler_minimal_replays() -> None:
    await _replay(_script("repro_update_cold_start").ActivityHandlerWorkflow, "update-activity-handler-minimal.json")


@pytest.mark.xfail(
    strict=True,
    raises=NondeterminismError,
    reason="temporalio 1.35: same, with an update handler that issues no commands",
)
async def test_update_sync_handler_minimal_replays() -> None:
    await _replay(_script("repro_update_cold_start").SyncHandlerWorkflow, "update-sync-handler-minimal.json")


def test_wait_for_history_shows_the_311_order() -> None:
    """The update's workflow task wrote UpdateCompleted before TimerCanceled: Python 3.11's order."""
    repro = _script("repro_wait_for_py312")
    order = repro.update_task_order(_history("wait-for-py312-minimal.json"))
    assert repro.python_order(order) == "3.11", order


@pytest.mark.xfail(
    sys.version_info >= (3, 12),
    strict=True,
    raises=NondeterminismError,
    reason="Python 3.12 rewrote asyncio.wait_for (on asyncio.timeout), under temporalio's "
    "wait_condition(timeout=...): the timer is cancelled before the update completes",
)
async def test_wait_for_minimal_replays() -> None:
    await _replay(_script("repro_wait_for_py312").WaitForWorkflow, "wait-for-py312-minimal.json")


async def test_wait_for_minimal_replays_with_the_311_wait_for(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cause: with Python 3.11's asyncio.wait_for put back, the history replays on every Python."""
    repro = _script("repro_wait_for_py312")
    monkeypatch.setattr(asyncio, "wait_for", repro.wait_for_311)
    monkeypatch.setattr(asyncio.tasks, "wait_for", repro.wait_for_311)
    await _replay(repro.WaitForWorkflow, "wait-for-py312-minimal.json")


# ------------------------------------------------------------------------------ the first version's histories


@pytest.mark.xfail(
    strict=True,
    raises=NondeterminismError,
    reason="temporalio 1.35: update accepted on a cold-start task does not replay (sdk-python#1591, sdk-rust#943)",
)
async def test_update_on_cold_start_replays() -> None:
    history = WorkflowHistory.from_json("collection-CRASH-0003", (HERE / "update-on-cold-start.json").read_text())
    replayer = Replayer(workflows=[LegacyCollectionWorkflow], data_converter=data_converter())
    await replayer.replay_workflow(history)


@pytest.mark.xfail(
    strict=True,
    raises=NondeterminismError,
    reason="temporalio 1.35: a timer started again on a cold-start task after a sticky timeout",
)
async def test_timer_after_cold_start_replays() -> None:
    history = WorkflowHistory.from_json("collection-CRASH-0034", (HERE / "timer-after-cold-start.json").read_text())
    replayer = Replayer(workflows=[LegacyCollectionWorkflow], data_converter=data_converter())
    await replayer.replay_workflow(history)
