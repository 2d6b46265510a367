"""The operator's way out (ops/doctor.py, `starter.py doctor` and `reset`): a loan stuck on a
nondeterminism error is found with its error and event ids, and a reset to its last good
workflow task puts it back on track under the current code without doing anything twice.

The stuck loan is made deterministically on the dev server (reset and visibility are not in the
time-skipping server): a worker runs the "released" version of a small loan workflow, then a
worker with the "current" version, which sleeps before its first activity, takes over; its replay
disagrees at the first activity and every workflow task fails. The workflow posts late fees
through the project's real ledger activity, so the test can count rows after the reset."""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select
from temporalio import workflow
from temporalio.api.enums.v1 import EventType, WorkflowTaskFailedCause
from temporalio.api.failure.v1 import ApplicationFailureInfo, Failure
from temporalio.api.history.v1 import HistoryEvent, WorkflowTaskFailedEventAttributes
from temporalio.client import Client, WorkflowHistory
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import starter
from activities.ledger import LedgerActivities
from db.store import make_engine
from db.tables import AuditRow, LedgerEntry
from infra.temporal import workflow_id
from models.requests import FeeRequest, Recorded
from ops import doctor
from tests.helpers import HISTORIES, start_dev_server
from workflows.collection import CollectionWorkflow

FAILED = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
NDE = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_NON_DETERMINISTIC_ERROR


# ------------------------------------------------------------------------- the pure part


def event(
    event_id: int, kind: EventType.ValueType, cause: WorkflowTaskFailedCause.ValueType = NDE, message: str = ""
) -> HistoryEvent:
    e = HistoryEvent(event_id=event_id, event_type=kind)
    if kind == FAILED:
        e.workflow_task_failed_event_attributes.CopyFrom(
            WorkflowTaskFailedEventAttributes(cause=cause, failure=Failure(message=message))
        )
    return e


def task_events(*kinds: EventType.ValueType) -> list[HistoryEvent]:
    return [event(n, kind) for n, kind in enumerate(kinds, start=1)]


async def test_reset_point_is_the_latest_completed_task_that_replays_found_by_bisection() -> None:
    other = EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    events = task_events(*([other, COMPLETED, other, other] * 40))
    candidates = doctor.reset_candidates(events)
    assert candidates == [e.event_id for e in events if e.event_type == COMPLETED] and len(candidates) == 40
    for clean_up_to in range(-1, 40):  # every boundary, from "nothing replays" to "everything does"
        asked: list[int] = []
        chosen = await doctor.latest_passing(candidates, replaying_up_to(candidates, clean_up_to, asked))
        assert chosen == (candidates[clean_up_to] if clean_up_to >= 0 else None)
        assert len(asked) <= 6  # ceil(log2(40)) + 1 replays, not 40
    assert await doctor.latest_passing([], replaying_up_to(candidates, 39, [])) is None


def replaying_up_to(candidates: list[int], clean_up_to: int, asked: list[int]) -> Callable[[int], Awaitable[bool]]:
    """A replay check under which the candidates up to index `clean_up_to` replay; each event id
    it is asked about goes into `asked`."""

    async def replays(event_id: int) -> bool:
        asked.append(event_id)
        return candidates.index(event_id) <= clean_up_to

    return replays


def test_failure_streak_starts_after_the_last_completed_task_and_skips_server_causes() -> None:
    reset_mark = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW
    unhandled = WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND
    events = [
        event(1, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED),
        event(4, FAILED, reset_mark, "reset"),
        event(8, COMPLETED),
        event(11, FAILED, NDE, "[TMPRL1100] old"),
        event(14, COMPLETED),
        event(17, FAILED, unhandled, "signal raced"),
        event(20, FAILED, NDE, "[TMPRL1100] first"),
        event(23, FAILED, NDE, "[TMPRL1100] Nondeterminism error: HistoryEvent(id: 9, TimerStarted)"),
    ]
    streak = doctor.failure_streak(events)
    assert streak.last_completed == 14 and streak.first is not None and streak.first.event_id == 20
    assert streak.failure is not None and streak.failure.event_id == 23
    assert doctor.describe_failure(streak.failure) == (
        "NON_DETERMINISTIC_ERROR",
        "[TMPRL1100] Nondeterminism error: HistoryEvent(id: 9, TimerStarted)",
    )
    assert doctor.named_event_id(doctor.describe_failure(streak.failure)[1]) == 9
    healthy = doctor.failure_streak(events[:5])
    assert healthy.first is None and healthy.last_completed == 14


def test_only_the_sdk_text_of_a_failure_is_kept() -> None:
    sdk = Failure(
        message="[TMPRL1100] Nondeterminism error: Activity type of scheduled event 'post_fee' does not "
        "match activity type of activity command 'send_message'\nmore detail"
    )
    assert doctor.sdk_message(sdk) == (
        "[TMPRL1100] Nondeterminism error: Activity type of scheduled event "
        "'post_fee' does not match activity type of activity command 'send_message'"
    )
    own = Failure(
        message="cannot reach borrower at +8613812345678, li.ming@example.cn",
        stack_trace='Traceback:\n  File "/srv/app/workflows/collection.py", line 412, in _contact\n',
        application_failure_info=ApplicationFailureInfo(type="ValueError"),
    )
    text = doctor.sdk_message(own)
    assert text.startswith("ValueError raised by the workflow code at collection.py:412 in _contact")
    assert "13812345678" not in text and "example.cn" not in text and "borrower" not in text
    masked = doctor.sdk_message(Failure(message="[TMPRL1100] Nondeterminism error: value 13812345678"))
    assert "13812345678" not in masked and masked.endswith("***5678")
    assert "13812345678" not in doctor.reset_reason(None, "borrower 13812345678 called")


def _latest(name: str) -> Path:
    """The newest recorded history of a scenario (tests/histories/<name>-v<N>.json)."""
    paths = HISTORIES.glob(f"{name}-v*.json")
    return max(paths, key=lambda p: int(p.stem.rsplit("-v", 1)[1]))


async def test_last_good_task_replays_a_recorded_collection_history_with_the_workers_classes() -> None:
    """No server: the real collection workflow, sandboxed, on a recorded history. Intact, every
    task replays; with one activity renamed (what an incompatible deploy looks like), the reset
    point is the last completed task before that activity was scheduled."""
    path = _latest("paid")
    history = WorkflowHistory.from_json("collection-paid", path.read_text())
    classes = doctor.current_workflows()
    assert CollectionWorkflow in classes
    completed = doctor.reset_candidates(history.events)
    assert await doctor.last_good_task(history, classes) == completed[-1]

    scheduled = [e for e in history.events if e.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED][-1]
    scheduled.activity_task_scheduled_event_attributes.activity_type.name = "renamed_activity"
    failures: dict[int, str] = {}
    chosen = await doctor.last_good_task(history, classes, failures=failures)
    assert chosen == max(i for i in completed if i < scheduled.event_id)
    assert failures and all(i > chosen for i in failures)
    assert any("Nondeterminism" in text for text in failures.values())


# ------------------------------------------------------------------------- on the dev server

FEE = Decimal("25.00")


def fee(loan_id: str, period: int) -> FeeRequest:
    return FeeRequest(
        key=f"{loan_id}/doctor-fee/{period}",
        loan_id=loan_id,
        at=workflow.now(),
        period=period,
        amount=FEE,
        currency="CNY",
    )


@workflow.defn(name="LoanCollection", sandboxed=False)
class ReleasedLoan:
    """The released code: a fee, then wait for the go-ahead, then the next fee."""

    def __init__(self) -> None:
        self.go = False
        self.notes: list[str] = []

    @workflow.run
    async def run(self, loan_id: str) -> dict[str, Any]:
        first = await self.post(loan_id, 1)
        await workflow.wait_condition(lambda: self.go)
        second = await self.post(loan_id, 2)
        return {"first_duplicate": first.duplicate, "second_duplicate": second.duplicate, "notes": len(self.notes)}

    async def post(self, loan_id: str, period: int) -> Recorded:
        return await workflow.execute_activity(
            "post_fee", fee(loan_id, period), result_type=Recorded, start_to_close_timeout=timedelta(seconds=10)
        )

    @workflow.signal
    def go_on(self) -> None:
        self.go = True

    @workflow.update
    def note(self, text: str) -> int:
        self.notes.append(text)
        return len(self.notes)


@workflow.defn(name="LoanCollection", sandboxed=False)
class CurrentLoan(ReleasedLoan):
    """The current code: a pause before the first fee (a timer where the history has an
    activity): histories of the released code do not replay past their first task."""

    @workflow.run
    async def run(self, loan_id: str) -> dict[str, Any]:
        await workflow.sleep(timedelta(milliseconds=100))
        return await super().run(loan_id)


@dataclass
class Stage:
    env: WorkflowEnvironment
    engine: Engine
    queue: str

    @property
    def client(self) -> Client:
        return self.env.client

    def worker(self, workflow_class: type, **options: Any) -> Worker:
        return Worker(
            self.client,
            task_queue=self.queue,
            workflows=[workflow_class],
            activities=[LedgerActivities(self.engine).post_fee],
            activity_executor=ThreadPoolExecutor(max_workers=2),
            **options,
        )

    def rows(self, loan_id: str) -> dict[str, int]:
        """Ledger and audit rows of the loan, by key."""
        with Session(self.engine) as session:
            counted: dict[str, int] = {}
            for table in (LedgerEntry, AuditRow):
                query = select(table.key, func.count()).where(table.loan_id == loan_id).group_by(table.key)
                counted |= dict(session.exec(query).all())
        return counted


@pytest.fixture
async def stage(sqlite_template: Path, tmp_path: Path) -> AsyncIterator[Stage]:
    """The dev server, told to set TemporalReportedProblems from the first failed workflow task,
    and a database at head for the ledger activity."""
    env = await start_dev_server("system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute=1")
    path = tmp_path / "collections.db"
    shutil.copyfile(sqlite_template, path)
    engine = make_engine(f"sqlite:///{path}")
    yield Stage(env=env, engine=engine, queue=f"doctor-{uuid.uuid4()}")
    engine.dispose()
    await env.shutdown()


async def until(check: Callable[[], Any], timeout: float = 20.0) -> Any:
    """Poll until `check()` returns something truthy."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not (found := await check()):
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.2)
    return found


async def events_of(client: Client, workflow_id: str, run_id: str | None = None) -> list[HistoryEvent]:
    return list((await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()).events)


def ids(events: list[HistoryEvent], kind: EventType.ValueType) -> list[int]:
    return [e.event_id for e in events if e.event_type == kind]


async def make_stuck(s: Stage, loan_id: str) -> None:
    """Run the loan's first fee and an update on the released code, then hand it to the current
    code with a signal: every workflow task from then on fails."""
    handle = await s.client.start_workflow(ReleasedLoan.run, loan_id, id=workflow_id(loan_id), task_queue=s.queue)
    async with s.worker(ReleasedLoan, max_cached_workflows=0):  # no sticky queue left behind
        await until(lambda: waiting(s.client, handle.id))
        assert await handle.execute_update(ReleasedLoan.note, "promised to pay") == 1
    await handle.signal(ReleasedLoan.go_on)


async def waiting(client: Client, workflow_id: str) -> bool:
    """The first fee is posted and the workflow task after it completed: it waits for the signal."""
    events = await events_of(client, workflow_id)
    done = ids(events, EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED)
    return bool(done) and ids(events, COMPLETED)[-1] > done[0]


def run_cli(s: Stage, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """The CLI in this process (its own event loop, in a worker thread); exit code, stdout, stderr."""
    capsys.readouterr()
    code = starter.main(["--address", s.client.service_client.config.target_host, *args])
    out, err = capsys.readouterr()
    return code, out, err


async def test_doctor_finds_a_stuck_loan_and_reset_puts_it_back_on_track(
    stage: Stage, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = stage
    stuck_id, healthy_id = f"DOC-{uuid.uuid4().hex[:8]}", f"DOC-{uuid.uuid4().hex[:8]}"
    await make_stuck(s, stuck_id)
    async with s.worker(CurrentLoan):
        healthy = await s.client.start_workflow(
            CurrentLoan.run, healthy_id, id=workflow_id(healthy_id), task_queue=s.queue
        )
        stuck = s.client.get_workflow_handle(workflow_id(stuck_id))

        # doctor: the stuck loan with its error and events; the healthy one is not listed
        async def listed() -> doctor.DoctorReport | None:
            report = await doctor.find_stuck(s.client)
            ready = report.examined == 2 and report.stuck and report.stuck[0].reported_problems
            return report if ready else None

        report = await until(listed)
        [found] = report.stuck
        events = await events_of(s.client, stuck.id)
        first_failed = ids(events, FAILED)[0]
        assert found.loan_id == stuck_id and found.workflow_id == stuck.id and found.workflow_type == "LoanCollection"
        assert found.run_id == (await stuck.describe()).run_id and found.attempts >= 2
        assert found.cause == "NON_DETERMINISTIC_ERROR"
        assert found.message.startswith("[TMPRL1100] Nondeterminism error: ")
        assert found.named_event_id == ids(events, EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED)[0]
        assert found.first_failing_event_id == first_failed
        assert found.last_completed_event_id == max(i for i in ids(events, COMPLETED) if i < first_failed)
        assert "cause=WorkflowTaskFailedCauseNonDeterministicError" in found.reported_problems

        # the CLI: JSON, exit code 3 while a loan is stuck; a healthy loan is refused; a dry run
        monkeypatch.setattr(doctor, "current_workflows", lambda: [CurrentLoan])
        code, out, _ = await asyncio.to_thread(run_cli, s, capsys, "doctor", "--json")
        assert code == 3 and [row["loan_id"] for row in json.loads(out)["stuck"]] == [stuck_id]
        assert json.loads(out)["stuck"][0]["first_failing_event_id"] == first_failed
        code, out, _ = await asyncio.to_thread(run_cli, s, capsys, "doctor")
        assert code == 3 and out.startswith(f"{stuck_id}  LoanCollection  run {found.run_id}  attempt ")
        assert found.message in out and f"first failing event {first_failed}" in out and healthy_id not in out
        assert out.rstrip().splitlines()[-1].startswith("1 stuck loan(s) among 2 running")
        code, out, err = await asyncio.to_thread(run_cli, s, capsys, "reset", healthy_id)
        assert code == 2 and out == "" and f"loan {healthy_id} is not stuck" in err and "--force" in err
        code, out, _ = await asyncio.to_thread(run_cli, s, capsys, "--json", "reset", stuck_id, "--dry-run")
        dry = json.loads(out)
        first_task = ids(events, COMPLETED)[0]
        assert code == 0 and dry["dry_run"] and dry["new_run_id"] is None
        assert dry["reset_event_id"] == first_task and dry["chosen_by"] == "replay"
        code, out, _ = await asyncio.to_thread(run_cli, s, capsys, "reset", stuck_id, "--dry-run")
        assert code == 0
        assert out.startswith(f"dry run: would reset loan {stuck_id} (run {found.run_id}) to event {first_task}")
        code, out, err = await asyncio.to_thread(run_cli, s, capsys, "reset", "NO-SUCH-LOAN")
        assert code == 2 and "no collection for loan NO-SUCH-LOAN" in err
        code, out, err = await asyncio.to_thread(run_cli, s, capsys, "reset", stuck_id, "--to-event", "5")
        assert code == 2 and "event 5" in err and "not a workflow task event" in err
        assert (await stuck.describe()).run_id == found.run_id  # nothing of that changed anything

        # the API: a healthy loan only with force (dry run: its last task); then the real reset
        with pytest.raises(doctor.NotStuck):
            await doctor.reset_loan(s.client, healthy_id, workflows=[CurrentLoan])
        await until(lambda: waiting(s.client, healthy.id))
        forced = await doctor.reset_loan(s.client, healthy_id, force=True, dry_run=True, workflows=[CurrentLoan])
        assert forced.reset_event_id == ids(await events_of(s.client, healthy.id), COMPLETED)[-1]
        outcome = await doctor.reset_loan(
            s.client, stuck_id, reason="deploy 42 moved the first fee", workflows=[CurrentLoan]
        )
        assert outcome.reset_event_id == first_task and outcome.new_run_id and outcome.new_run_id != found.run_id
        assert "ops.doctor" in outcome.reason and "NON_DETERMINISTIC_ERROR" in outcome.reason

        # the new run goes on under the current code: the update and the signal reapplied,
        # the first fee redone without a second row, the second fee posted, completed
        assert await stuck.result() == {"first_duplicate": True, "second_duplicate": False, "notes": 1}
        assert s.rows(stuck_id) == {
            f"{stuck_id}/doctor-fee/{n}{suffix}": 1 for n in (1, 2) for suffix in ("", "#audit")
        }
        new_events = await events_of(s.client, stuck.id, outcome.new_run_id)
        mark = next(e for e in new_events if e.event_type == FAILED)
        assert mark.workflow_task_failed_event_attributes.failure.message == outcome.reason
        assert ids(new_events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ADMITTED)
        assert ids(new_events, EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED)

        await healthy.signal(CurrentLoan.go_on)
        assert (await healthy.result())["first_duplicate"] is False
        assert (await doctor.find_stuck(s.client)).stuck == []
