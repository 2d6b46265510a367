"""A scan in flight when a new version is deployed must go on: its recorded runs (pages,
continue-as-new, the last page; tests/histories/scan) replay on the current code."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.worker import Replayer

from infra.temporal import data_converter
from tests.helpers import HISTORIES
from workflows.scan import OverdueScanWorkflow

SCAN_HISTORIES = sorted((HISTORIES / "scan").glob("*.json"))


def test_scan_histories_are_kept() -> None:
    assert {p.stem.rsplit("-", 1)[0] for p in SCAN_HISTORIES} >= {"scan-first", "scan-last"}


@pytest.mark.parametrize("path", SCAN_HISTORIES, ids=lambda p: p.stem)
async def test_recorded_scan_history_replays(path: Path) -> None:
    """A scan in flight when a new version is deployed must go on: its recorded runs (pages,
    continue-as-new, the last page) replay on the current code."""
    history = WorkflowHistory.from_json("recorded-scan", path.read_text())
    replayer = Replayer(workflows=[OverdueScanWorkflow], data_converter=data_converter())
    result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
    assert result.replay_failure is None, f"{path.name}: {result.replay_failure}"
