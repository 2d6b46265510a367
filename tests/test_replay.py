"""Recorded histories of earlier workflow versions must replay on the current code, so a change
that would break loans in flight fails here (wrap such changes in `workflow.patched`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

import config
from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


def test_histories_are_kept() -> None:
    names = {p.stem.rsplit("-", 1)[0] for p in HISTORIES}
    assert {"ladder", "paid", "reports", "plan", "dispute", "settlement", "hardship", "stop",
            "continued-run1", "continued-run2", "continued-run3"} <= names


@pytest.mark.parametrize("path", HISTORIES, ids=lambda p: p.stem)
async def test_recorded_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(f"collection-{path.stem}", path.read_text())
    replayer = Replayer(workflows=WORKFLOWS, data_converter=config.DATA_CONVERTER)
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
