"""An operator's way out for stuck loans: find the loans whose workflow task keeps failing, and
put them back on track under the current code.

A loan is *stuck* when its collection workflow is running but every workflow task fails, most
often with a nondeterminism error (a history the current code cannot replay). Temporal retries
such a task for ever and nothing is lost, but nothing happens either: nobody contacts the
borrower, no fee is posted, payments wait. `find_stuck` lists them with the error; `reset_loan`
resets one to the last workflow task from which the current code can go on (Temporal's
ResetWorkflowExecution). `starter.py doctor` and `starter.py reset` are the CLI over them.

Nothing here reads payloads, and the failure text reported is only what the SDK writes: a
workflow's own exception message may quote loan data, so it is left to the (masked) worker log.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Literal

from pydantic import BaseModel
from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.enums.v1 import EventType, ResetReapplyType, TimeoutType, WorkflowTaskFailedCause
from temporalio.api.failure.v1 import Failure
from temporalio.api.history.v1 import HistoryEvent
from temporalio.api.workflowservice.v1 import ResetWorkflowExecutionRequest
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowHistory,
)
from temporalio.client import WorkflowExecution as ListedWorkflow
from temporalio.common import SearchAttributeKey, TypedSearchAttributes
from temporalio.runtime import Runtime, TelemetryConfig
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from infra import temporal
from infra.logs import mask_personal_data

COLLECTION_TYPES = temporal.COLLECTION_TYPES
"""The workflow types that collect a loan (workflow id `collection-<loan id>`). The daily scan
(`OverdueScanWorkflow`) is not a loan and is never listed."""

REPORTED_PROBLEMS = "TemporalReportedProblems"
"""System search attribute the server (1.30+) sets on a workflow after
`system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute` failed workflow tasks in a
row (dynamic config; 0, off, on a self-hosted or dev server unless set). A hint, not a need:
the pending task's attempt count finds stuck loans on any server."""
_REPORTED_KEY = SearchAttributeKey.for_keyword_list(REPORTED_PROBLEMS)

TOOL = "ops.doctor"
DESCRIBE_CONCURRENCY = 16  # describe calls in flight while examining running loans
BATCH = 256  # running loans taken from visibility before they are examined
MESSAGE_LIMIT = 300  # characters of an SDK error message kept
REASON_LIMIT = 600  # characters of the reason recorded with a reset

_COMPLETED = EventType.EVENT_TYPE_WORKFLOW_TASK_COMPLETED
_FAILED = EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
_TIMED_OUT = EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT
_RESET_TARGETS = {
    _COMPLETED,
    _FAILED,
    _TIMED_OUT,
    EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED,
}
"""Events ResetWorkflowExecution accepts as `workflow_task_finish_event_id`."""

_NOT_A_PROBLEM = {
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_WORKFLOW,  # the mark a reset leaves
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_COMMAND,  # a signal raced the completion
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_UNHANDLED_UPDATE,  # an update raced it
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_RESET_STICKY_TASK_QUEUE,
    WorkflowTaskFailedCause.WORKFLOW_TASK_FAILED_CAUSE_FAILOVER_CLOSE_COMMAND,
}
"""Failures the server causes and retries at once; they say nothing about the code."""

_SDK_MESSAGE = re.compile(r"^\[TMPRL\d{4}\]")
_NAMED_EVENT = re.compile(r"HistoryEvent\(id: (\d+)|\bevent[ _]id[:= ]+(\d+)", re.IGNORECASE)
_FRAME = re.compile(r'File "(?:[^"]*/)?([^"/]+)", line (\d+), in (\w+)')


class DoctorError(ValueError):
    """A request the doctor refuses; nothing was changed."""


class UnknownLoan(DoctorError, LookupError):
    """No collection workflow exists for this loan id."""


class NotStuck(DoctorError):
    """The loan's workflow task is not failing: a reset would only throw away recent history."""


class ResetRefused(DoctorError):
    """The reset cannot be done as asked (not running, a bad event id, no replayable point)."""


class StuckLoan(BaseModel):
    """A running loan whose workflow task keeps failing, and why (no payload, no personal data)."""

    loan_id: str
    workflow_id: str
    run_id: str
    workflow_type: str
    attempts: int
    """Attempt number of the pending workflow task: the failures in a row, plus one."""
    cause: str
    """The WorkflowTaskFailedCause without its prefix (NON_DETERMINISTIC_ERROR,
    WORKFLOW_WORKER_UNHANDLED_FAILURE, ...), or TIMED_OUT when the task only timed out."""
    message: str
    """The SDK's error text ("[TMPRL1100] Nondeterminism error: ..."); for an exception of
    the workflow's own code, its type and where it was raised."""
    named_event_id: int | None = None
    """The history event the failure names ("HistoryEvent(id: 5, ...)"), if it names one."""
    first_failing_event_id: int | None = None
    """The first WORKFLOW_TASK_FAILED event of the current streak (failures after the last
    completed workflow task; the server records only the first of them). With no failure,
    the first START_TO_CLOSE WORKFLOW_TASK_TIMED_OUT event."""
    last_completed_event_id: int | None = None
    """The last WORKFLOW_TASK_COMPLETED event before the streak."""
    failing_since: datetime | None = None
    reported_problems: list[str] = []
    """The server's TemporalReportedProblems values, when it sets them."""


class DoctorReport(BaseModel):
    """What `find_stuck` found among the running loans it examined."""

    examined: int
    stuck: list[StuckLoan]
    types: list[str]


class ResetOutcome(BaseModel):
    """A reset done (`new_run_id` set) or, for a dry run, the one that would be done."""

    loan_id: str
    workflow_id: str
    run_id: str
    reset_event_id: int
    chosen_by: Literal["replay", "operator"]
    """"replay": the latest WORKFLOW_TASK_COMPLETED up to which the current code replays the
    history; "operator": given with `to_event`."""
    events_discarded: int
    """Events after the reset point: the new run redoes their work; signals and updates
    among them are reapplied."""
    reapplied: list[str] = ["signals", "updates"]
    reason: str
    stuck: StuckLoan | None
    dry_run: bool
    new_run_id: str | None = None


# ------------------------------------------------------------------------- doctor


async def find_stuck(
    client: Client, *, types: Sequence[str] = COLLECTION_TYPES, limit: int | None = None
) -> DoctorReport:
    """The running loans (workflows of `types`) whose workflow task is failing, newest first,
    at most `limit` of them. Candidates are the loans whose pending workflow task is on its
    second attempt or later (DescribeWorkflowExecution) or that carry the server's
    TemporalReportedProblems attribute; each candidate's history then gives the failure:
    cause, the SDK's message, the event it names and the first failing event of the streak.
    Costs one describe per running loan (DESCRIBE_CONCURRENCY at a time) and one history
    read per stuck loan."""
    if limit is not None and limit < 1:
        raise DoctorError("limit must be at least 1")
    examined, stuck = 0, []
    async for batch in _batches(client.list_workflows(running_query(types)), BATCH):
        examined += len(batch)
        stuck += [found for found in await _examine_all(client, batch) if found is not None]
        if limit is not None and len(stuck) >= limit:
            break
    return DoctorReport(examined=examined, stuck=stuck[:limit] if limit else stuck, types=list(types))


def running_query(types: Sequence[str]) -> str:
    """Visibility query for the running workflows of `types`."""
    if not types or any('"' in t or "'" in t for t in types):
        raise DoctorError(f"invalid workflow types {list(types)!r}")
    listed = ", ".join(f"'{t}'" for t in types)
    return f"WorkflowType IN ({listed}) AND ExecutionStatus = 'Running'"


async def _batches(listing: AsyncIterator[ListedWorkflow], size: int) -> AsyncIterator[list[ListedWorkflow]]:
    batch: list[ListedWorkflow] = []
    async for wf in listing:
        batch.append(wf)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


async def _examine_all(client: Client, listed: list[ListedWorkflow]) -> list[StuckLoan | None]:
    gate = asyncio.Semaphore(DESCRIBE_CONCURRENCY)

    async def one(wf: ListedWorkflow) -> StuckLoan | None:
        async with gate:
            return await examine(client, wf.id, wf.run_id, reported=_reported(wf.typed_search_attributes))

    return list(await asyncio.gather(*(one(wf) for wf in listed)))


def _reported(attributes: TypedSearchAttributes) -> list[str]:
    """The TemporalReportedProblems values of a listing or description ([] if unset)."""
    return list(attributes.get(_REPORTED_KEY) or [])


async def examine(
    client: Client, workflow_id: str, run_id: str | None = None, *, reported: Sequence[str] = ()
) -> StuckLoan | None:
    """One workflow: a StuckLoan if its workflow task is failing, else None (also when it
    has closed or disappeared meanwhile)."""
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    try:
        desc = await handle.describe()
        if desc.status != WorkflowExecutionStatus.RUNNING:
            return None
        reported = list(reported) or _reported(desc.typed_search_attributes)
        if pending_attempt(desc) <= 1 and not reported:
            return None
        history = await client.get_workflow_handle(workflow_id, run_id=desc.run_id).fetch_history()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            return None
        raise
    return diagnose(desc, history.events, reported)


def pending_attempt(desc: WorkflowExecutionDescription) -> int:
    """Attempt of the pending workflow task (0: none pending)."""
    raw = desc.raw_description
    return raw.pending_workflow_task.attempt if raw.HasField("pending_workflow_task") else 0


def diagnose(
    desc: WorkflowExecutionDescription, events: Sequence[HistoryEvent], reported: Sequence[str] = ()
) -> StuckLoan | None:
    """A StuckLoan from a running workflow's description and history, or None when the
    history shows no failing streak or the task is no longer retrying."""
    attempts = pending_attempt(desc)
    streak = failure_streak(events)
    if streak.first is None or (attempts <= 1 and not reported):
        return None
    cause, message = describe_failure(streak.failure)
    return StuckLoan(
        loan_id=desc.id.removeprefix(temporal.WORKFLOW_ID_PREFIX),
        workflow_id=desc.id,
        run_id=desc.run_id,
        workflow_type=desc.workflow_type,
        attempts=attempts,
        cause=cause,
        message=message,
        named_event_id=named_event_id(message),
        first_failing_event_id=streak.first.event_id,
        last_completed_event_id=streak.last_completed,
        failing_since=streak.first.event_time.ToDatetime(tzinfo=UTC) if streak.first.HasField("event_time") else None,
        reported_problems=list(reported),
    )


@dataclass(frozen=True)
class Streak:
    """The workflow-task problems after the last completed workflow task."""

    last_completed: int | None = None
    first: HistoryEvent | None = None  # first WORKFLOW_TASK_FAILED (else first START_TO_CLOSE timeout)
    failure: HistoryEvent | None = None  # last WORKFLOW_TASK_FAILED: the cause and message reported


def failure_streak(events: Sequence[HistoryEvent]) -> Streak:
    """The current streak of failing workflow tasks. Failures the server causes (a reset's
    mark, a signal racing a completion) and schedule-to-start timeouts (no worker polling)
    are not problems of the code and are left out."""
    last_completed, first_failed, first_timeout, failure = None, None, None, None
    for event in events:
        if event.event_type == _COMPLETED:
            last_completed, first_failed, first_timeout, failure = event.event_id, None, None, None
        elif event.event_type == _FAILED and event.workflow_task_failed_event_attributes.cause not in _NOT_A_PROBLEM:
            first_failed, failure = first_failed or event, event
        elif (
            event.event_type == _TIMED_OUT
            and first_timeout is None
            and event.workflow_task_timed_out_event_attributes.timeout_type == TimeoutType.TIMEOUT_TYPE_START_TO_CLOSE
        ):
            first_timeout = event
    return Streak(last_completed=last_completed, first=first_failed or first_timeout, failure=failure)


def describe_failure(event: HistoryEvent | None) -> tuple[str, str]:
    """(cause, message) of a WORKFLOW_TASK_FAILED event; ("TIMED_OUT", ...) without one."""
    if event is None:
        return "TIMED_OUT", "the workflow task timed out (a worker took it and did not finish it in time)"
    attrs = event.workflow_task_failed_event_attributes
    cause = WorkflowTaskFailedCause.Name(attrs.cause).removeprefix("WORKFLOW_TASK_FAILED_CAUSE_")
    return cause, sdk_message(attrs.failure)


def sdk_message(failure: Failure) -> str:
    """The failure's text as far as the SDK wrote it: an SDK error ("[TMPRL1100] ...") keeps
    its first line (clipped, phone numbers and e-mail addresses masked all the same); an
    exception of the workflow's own code is shown by type and place only, since its message
    may quote loan data."""
    first_line = failure.message.strip().splitlines()[0] if failure.message.strip() else ""
    if _SDK_MESSAGE.match(first_line):
        return _clip(mask_personal_data(first_line), MESSAGE_LIMIT)
    kind = failure.application_failure_info.type or "error"
    frames = _FRAME.findall(failure.stack_trace)
    where = f" at {frames[-1][0]}:{frames[-1][1]} in {frames[-1][2]}" if frames else ""
    return f"{kind} raised by the workflow code{where} (message not shown: it may quote loan data; see the worker log)"


def named_event_id(message: str) -> int | None:
    """The history event id an SDK error names ("HistoryEvent(id: 5, ActivityTaskScheduled)")."""
    found = _NAMED_EVENT.search(message)
    return int(found.group(1) or found.group(2)) if found else None


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------- reset


async def reset_loan(
    client: Client,
    loan_id: str,
    *,
    to_event: int | None = None,
    reason: str = "",
    dry_run: bool = False,
    force: bool = False,
    workflows: Sequence[type] | None = None,
) -> ResetOutcome:
    """Reset a stuck loan's current run to its last good workflow task, so that it goes on
    under the current code (Temporal's ResetWorkflowExecution: a new run takes the history up
    to that task and the current workers decide from there; the old run is terminated).

    "Last good" is the latest WORKFLOW_TASK_COMPLETED up to which the current code replays the
    history (temporalio's Replayer with `workflows`, default `current_workflows()`), found by
    replaying prefixes of the history: after a nondeterminism error the code may disagree with
    the history well before the task that failed. `to_event` overrides it (any workflow task
    event of the run). A loan that is not stuck is refused unless `force`; `dry_run` returns
    what would be done and changes nothing. The reason recorded names this tool and the
    failure (and `reason`, the operator's words).

    What happens to the work after the reset point: signals and updates received after it
    are reapplied to the new run, in order, so no payment or report is lost (an update's
    caller already had its answer from the old run; the new run applies it again). Activities
    and timers after it are redone by the new run: every side effect of this project is
    written under a business idempotency key enforced by a unique constraint (ledger, outbox,
    tasks, placements, cases, contacts, audit: `db.store.insert_once`), so a repeated fee,
    message or payment finds its row and nothing is done twice; a message already delivered
    is not delivered again. A step the new run takes that the old one never reached (time has
    moved on) is new work, done once.
    """
    client = temporal.with_converter(client)
    workflow_id = temporal.workflow_id(loan_id)
    desc = await _describe(client, workflow_id, loan_id)
    history = await client.get_workflow_handle(workflow_id, run_id=desc.run_id).fetch_history()
    running = desc.status == WorkflowExecutionStatus.RUNNING
    stuck = diagnose(desc, history.events, _reported(desc.typed_search_attributes)) if running else None
    _refuse_unless_forced(loan_id, desc, stuck, force)
    if to_event is not None:
        event_id, chosen_by = check_reset_event(history.events, to_event, desc.run_id), "operator"
    else:
        event_id, chosen_by = await _last_good(history, workflows, desc.run_id), "replay"
    outcome = ResetOutcome(
        loan_id=loan_id,
        workflow_id=workflow_id,
        run_id=desc.run_id,
        reset_event_id=event_id,
        chosen_by=chosen_by,
        events_discarded=sum(1 for e in history.events if e.event_id > event_id),
        reason=reset_reason(stuck, reason),
        stuck=stuck,
        dry_run=dry_run,
    )
    if dry_run:
        return outcome
    return outcome.model_copy(update={"new_run_id": await _reset(client, outcome)})


async def _describe(client: Client, workflow_id: str, loan_id: str) -> WorkflowExecutionDescription:
    try:
        return await client.get_workflow_handle(workflow_id).describe()
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise UnknownLoan(f"no collection for loan {loan_id}") from exc
        raise


def _refuse_unless_forced(
    loan_id: str, desc: WorkflowExecutionDescription, stuck: StuckLoan | None, force: bool
) -> None:
    if force or stuck is not None:
        return
    if desc.status != WorkflowExecutionStatus.RUNNING:
        state = desc.status.name.lower() if desc.status else "unknown"
        raise NotStuck(
            f"collection of loan {loan_id} is not running ({state}); nothing to reset "
            "(--force resets it all the same, which reopens it)"
        )
    raise NotStuck(
        f"loan {loan_id} is not stuck (its workflow task is not failing); "
        "a reset would only redo its recent work (--force resets it all the same)"
    )


def check_reset_event(events: Sequence[HistoryEvent], event_id: int, run_id: str) -> int:
    """`event_id` if it is a workflow task event of the history (what a reset accepts)."""
    found = next((e for e in events if e.event_id == event_id), None)
    if found is None or found.event_type not in _RESET_TARGETS:
        kind = EventType.Name(found.event_type).removeprefix("EVENT_TYPE_") if found else "not in the history"
        raise ResetRefused(
            f"event {event_id} of run {run_id} is not a workflow task event ({kind}); "
            "give the id of a WORKFLOW_TASK_COMPLETED event"
        )
    return event_id


async def _last_good(history: WorkflowHistory, workflows: Sequence[type] | None, run_id: str) -> int:
    failures: dict[int, str] = {}
    found = await last_good_task(history, workflows or current_workflows(), failures=failures)
    if found is None:
        first = failures[min(failures)] if failures else "the run has no completed workflow task"
        raise ResetRefused(
            f"no workflow task of run {run_id} replays under the current code ({_clip(first, 300)}); "
            "fix or patch the code first, or give --to-event"
        )
    return found


def current_workflows() -> list[type]:
    """The workflow classes the worker registers, so the replay runs exactly what workers run."""
    from workflows.registry import WORKFLOWS  # imported when needed: only a reset replays

    return list(WORKFLOWS)


async def last_good_task(
    history: WorkflowHistory, workflows: Sequence[type], *, failures: dict[int, str] | None = None
) -> int | None:
    """The latest WORKFLOW_TASK_COMPLETED event id up to which `workflows` replay the history
    cleanly (None if none does). A prefix cut after a completed task checks every command of
    the tasks before it, which is exactly what the new run of a reset to that task replays;
    the task itself is redone under the current code. `failures` collects the replay
    failure of each prefix that failed."""
    replayer = Replayer(workflows=list(workflows), data_converter=temporal.data_converter(), runtime=_quiet_runtime())

    async def replays(event_id: int) -> bool:
        result = await replayer.replay_workflow(truncated(history, event_id), raise_on_replay_failure=False)
        if result.replay_failure is not None and failures is not None:
            failures[event_id] = str(result.replay_failure)
        return result.replay_failure is None

    return await latest_passing(reset_candidates(history.events), replays)


def reset_candidates(events: Sequence[HistoryEvent]) -> list[int]:
    """The ids of the WORKFLOW_TASK_COMPLETED events, in order: where a reset may go."""
    return [e.event_id for e in events if e.event_type == _COMPLETED]


async def latest_passing(candidates: Sequence[int], passes: Callable[[int], Awaitable[bool]]) -> int | None:
    """The latest candidate that passes, by bisection: a prefix that replays cleanly has only
    clean prefixes (a disagreement stays in every longer prefix), so log2(n) replays do
    instead of n."""
    low, high, best = 0, len(candidates) - 1, None
    while low <= high:
        middle = (low + high) // 2
        if await passes(candidates[middle]):
            best, low = candidates[middle], middle + 1
        else:
            high = middle - 1
    return best


def truncated(history: WorkflowHistory, event_id: int) -> WorkflowHistory:
    """The history up to and including `event_id`."""
    return WorkflowHistory(history.workflow_id, [e for e in history.events if e.event_id <= event_id])


@lru_cache(maxsize=1)
def _quiet_runtime() -> Runtime:
    """A runtime without core logging for the replays: a failing prefix is an expected
    outcome here, not a warning worth a screenful on the operator's terminal."""
    return Runtime(telemetry=TelemetryConfig(logging=None))


def reset_reason(stuck: StuckLoan | None, operator_reason: str = "") -> str:
    """The reason recorded in the history with the reset: this tool, the failure, and the
    operator's words (masked like a log line)."""
    failure = f"{stuck.cause}: {stuck.message}" if stuck else "not stuck (forced by the operator)"
    text = f"{TOOL} (starter.py reset), workflow task failing: {failure}"
    if operator_reason.strip():
        text += f"; operator: {mask_personal_data(operator_reason.strip())}"
    return _clip(text, REASON_LIMIT)


async def _reset(client: Client, outcome: ResetOutcome) -> str:
    """ResetWorkflowExecution of the outcome's run; the new run's id. ALL_ELIGIBLE and no
    exclusions: signals and updates after the reset point are reapplied (the deprecated
    field's default, SIGNAL, would leave updates out)."""
    request = ResetWorkflowExecutionRequest(
        namespace=client.namespace,
        workflow_execution=WorkflowExecution(workflow_id=outcome.workflow_id, run_id=outcome.run_id),
        reason=outcome.reason,
        workflow_task_finish_event_id=outcome.reset_event_id,
        request_id=str(uuid.uuid4()),
        reset_reapply_type=ResetReapplyType.RESET_REAPPLY_TYPE_ALL_ELIGIBLE,
        identity=f"{TOOL}@{client.identity}",
    )
    try:
        response = await client.workflow_service.reset_workflow_execution(request)
    except RPCError as exc:
        raise ResetRefused(f"the server refused the reset of loan {outcome.loan_id}: {exc.message}") from exc
    return response.run_id
