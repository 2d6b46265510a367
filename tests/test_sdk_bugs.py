"""Histories the SDK writes but cannot replay: known upstream bugs, kept so that we notice when
an SDK upgrade fixes them (the strict xfail then fails: remove the mark and the known-bug
allowance in tests/test_crash.py).

`update-on-cold-start.json` was written by tests/test_crash.py: a worker was SIGKILLed, the
next workflow task ran on a fresh worker (whole history replayed, no cache) and carried a new
`pay` update together with three activity completions. The live worker emitted the update's
acceptance after the loop's commands; on replay the SDK runs the update first and reports
"[TMPRL1100] Nondeterminism error: Update machine does not handle this event". A loan with
such a history would be stuck on its next replay (another worker restart or a cache eviction).
Upstream: temporalio/sdk-python#1591 (update handled on cold start writes a history that does
not replay), temporalio/sdk-rust#943 (same ordering of update acceptance after worker restarts).

`timer-after-cold-start.json` (also from tests/test_crash.py) is a loan left stuck: its timer
fired (event 45), the sticky task timed out (the worker was killed), and the fresh worker's live
task started the same timer again, to the microsecond (event 51: 0.302856 s, as at event 44),
as if `workflow.now()` were still the previous task's time; the next replay computes the real
time, finds the item due, schedules an activity and fails with "[TMPRL1100] Activity machine does
not handle this event: TimerStarted". Not yet reported upstream; the stale time on the live
cold-start task is our reading of the history, not a confirmed diagnosis.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer
from temporalio.workflow import NondeterminismError

import config
from workflows.legacy.collection_v1 import LegacyCollectionWorkflow

HERE = Path(__file__).parent / "sdk_bugs"


@pytest.mark.xfail(strict=True, raises=NondeterminismError, reason="temporalio 1.35: update accepted on a cold-start task does not replay "
                                       "(sdk-python#1591, sdk-rust#943)")
async def test_update_on_cold_start_replays() -> None:
    history = WorkflowHistory.from_json("collection-CRASH-0003", (HERE / "update-on-cold-start.json").read_text())
    replayer = Replayer(workflows=[LegacyCollectionWorkflow], data_converter=config.data_converter())
    await replayer.replay_workflow(history)


@pytest.mark.xfail(strict=True, raises=NondeterminismError, reason="temporalio 1.35: a timer started again on a "
                                                                  "cold-start task after a sticky timeout")
async def test_timer_after_cold_start_replays() -> None:
    history = WorkflowHistory.from_json("collection-CRASH-0034", (HERE / "timer-after-cold-start.json").read_text())
    replayer = Replayer(workflows=[LegacyCollectionWorkflow], data_converter=config.data_converter())
    await replayer.replay_workflow(history)
