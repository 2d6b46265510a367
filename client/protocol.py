"""How the client talks to one loan: a request (`models.protocol`) sent by signal and answered by
query, stamped with the server's time; a loan of the first workflow version (type
`CollectionWorkflow`) is sent the validated update it takes instead. Used by `client.loans`."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from google.protobuf.empty_pb2 import Empty
from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowHandle,
    WorkflowQueryFailedError,
    WorkflowUpdateFailedError,
)
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError, RPCStatusCode

from client.errors import LoanNotFound, RequestPending, RequestRejected
from infra.options import REPLY_RPC_TIMEOUT, REPLY_WAIT, STARTING_WAIT
from infra.temporal import with_converter, workflow_id
from models import CollectionStatus
from models.arrangements import Decision
from models.protocol import Envelope, Reply
from workflows.collection import CollectionWorkflow

_TEST_SERVERS: dict[int, bool] = {}
"""Whether a client's server is Temporal's time-skipping test server (by service client)."""


async def server_now(client: Client) -> datetime:
    """Now on the server's clock: the time-skipping test server's virtual time where the client
    talks to one (asked once per client whether it is), else this machine's (UTC). Requests are
    stamped with it: the loan takes a request at the time it was sent, never reading its own
    clock to decide (`models.protocol.Envelope`)."""
    key = id(client.service_client)
    if _TEST_SERVERS.get(key, True):
        try:
            reply = await client.test_service.get_current_time(Empty())
        except RPCError as exc:
            if exc.status == RPCStatusCode.UNIMPLEMENTED:  # a real server: this machine's clock
                _TEST_SERVERS[key] = False
        else:
            _TEST_SERVERS[key] = True
            return reply.time.ToDatetime().replace(tzinfo=UTC)
    return datetime.now(UTC)


def loan_handle(client: Client, loan_id: str) -> WorkflowHandle[Any, Any]:
    """The handle of the loan's collection workflow (its latest run), with the project's converter."""
    return with_converter(client).get_workflow_handle(workflow_id(loan_id))


async def ask(
    client: Client, loan_id: str, request: Any, rejected: type[Exception], *, request_id: str | None = None
) -> Reply | None:
    """One request to a loan (`models.protocol`): send it by signal, read its answer by query.
    Raises `rejected` with the reason (nothing changed), LoanNotFound, or RequestPending if no
    answer came in time. None: the loan runs the first workflow version, which takes updates
    (the caller falls back to them). `request_id`: the caller's own (the HTTP API derives it from
    an Idempotency-Key, so a request sent again after a lost answer reads the first answer: the
    loan keeps the latest REPLIES_KEPT); else a new one."""
    handle = loan_handle(client, loan_id)
    if await is_legacy(handle, loan_id):
        return None
    env = Envelope(request_id=request_id or str(uuid.uuid4()), request=request, sent_at=await server_now(client))
    try:
        await handle.signal(CollectionWorkflow.request, env)
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await not_running(handle, loan_id, rejected) from exc
    reply = await read_answer(handle, env.request_id)
    if reply.refused:
        raise rejected(reply.reason)
    return reply


_TYPES: dict[str, str] = {}
"""Workflow type by loan id, as found (a loan's type never changes: it continues as new into
its own type, and a closed loan is never started again)."""


async def is_legacy(handle: WorkflowHandle[Any, Any], loan_id: str) -> bool:
    """Whether the loan runs the first workflow version (type `CollectionWorkflow`)."""
    if loan_id not in _TYPES:
        try:
            _TYPES[loan_id] = (await handle.describe()).workflow_type
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LoanNotFound(f"no collection for loan {loan_id}") from exc
            raise
        if len(_TYPES) > 100_000:  # a long-running API process: forget the oldest half
            for old in list(_TYPES)[:50_000]:
                del _TYPES[old]
    return _TYPES[loan_id] == "CollectionWorkflow"


QUERY_TIMEOUTS = (RPCStatusCode.CANCELLED, RPCStatusCode.DEADLINE_EXCEEDED)
"""How a query that ran into its deadline fails (the client's `rpc_timeout`, the server's)."""


async def read_answer(handle: WorkflowHandle[Any, Any], request_id: str) -> Reply:
    """Read the answer with the `reply` query. A query is consistent: sent while the loan is
    taking the request (its workflow task in flight), the server holds it until that task is
    done, so the first one usually has the answer. The next tries back off (a busy loan buffers
    one query at a time and refuses more)."""
    give_up, pause = time.monotonic() + REPLY_WAIT, 0.02
    while True:
        try:
            reply: Reply | None = await handle.query(
                CollectionWorkflow.reply, request_id, rpc_timeout=REPLY_RPC_TIMEOUT
            )
        except (WorkflowQueryFailedError, RPCError):
            if time.monotonic() > give_up:
                raise
            reply = None
        if reply is not None and not reply.pending:
            return reply
        if time.monotonic() > give_up:
            raise RequestPending(f"request {request_id} taken by the loan, no answer within {REPLY_WAIT:.0f} s")
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.5)


async def report(client: Client, loan_id: str, request: Any, legacy: str, arg: BaseModel) -> CollectionStatus:
    """A report (task outcome, agency, court): answered with the status as of it."""
    reply = await ask(client, loan_id, request, RequestRejected)
    if reply is None:
        return await legacy_update(client, loan_id, legacy, arg, RequestRejected, CollectionStatus)
    assert reply.status is not None
    return reply.status


async def decide(client: Client, loan_id: str, request: Any, legacy: str, arg: BaseModel) -> Decision:
    """A negotiation request: accepted, or rejected with the reason (nothing changed)."""
    try:
        reply = await ask(client, loan_id, request, RequestRejected)
        if reply is None:
            return await legacy_update(client, loan_id, legacy, arg, RequestRejected, Decision)
    except RequestRejected as exc:
        return Decision(accepted=False, reason=str(exc))
    assert reply.decision is not None
    return reply.decision


async def legacy_update(
    client: Client, loan_id: str, name: str, arg: BaseModel, rejected: type[Exception], result_type: type
) -> Any:
    """A validated update to a loan of the first workflow version; SDK failures become the
    caller's exceptions."""
    handle = loan_handle(client, loan_id)
    try:
        return await execute_update(handle, name, arg, result_type=result_type)
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        raise rejected(cause.message if isinstance(cause, ApplicationError) else str(cause)) from exc
    except RPCError as exc:
        if exc.status != RPCStatusCode.NOT_FOUND:
            raise
        raise await not_running(handle, loan_id, rejected) from exc


async def execute_update(handle: WorkflowHandle[Any, Any], name: str, *args: Any, result_type: type) -> Any:
    """`execute_update` (first workflow version), tried again while the loan says it is starting."""
    give_up = time.monotonic() + STARTING_WAIT
    while True:
        try:
            return await handle.execute_update(name, *args, result_type=result_type)
        except WorkflowUpdateFailedError as exc:
            if not _starting(exc.cause) or time.monotonic() > give_up:
                raise
        await asyncio.sleep(0.1)


def _starting(cause: BaseException | None) -> bool:
    return isinstance(cause, ApplicationError) and cause.message.startswith("collection is starting")


async def not_running(handle: WorkflowHandle[Any, Any], loan_id: str, rejected: type[Exception]) -> Exception:
    """The exception for a request that found no running collection: LoanNotFound, or `rejected`
    saying the loan is closed (and how) or otherwise not running."""
    try:
        desc = await handle.describe()
    except RPCError:
        return LoanNotFound(f"no collection for loan {loan_id}")
    if desc.status == WorkflowExecutionStatus.COMPLETED:
        final = await handle.query(CollectionWorkflow.status)
        return rejected(f"the loan is closed ({final.stage}); nothing was applied")
    return rejected(f"collection of loan {loan_id} is not running ({desc.status.name.lower() if desc.status else '?'})")


async def query_status(handle: WorkflowHandle[Any, Any], loan_id: str, at: datetime | None = None) -> CollectionStatus:
    """The status by query (no history): as of `at` (`status_at`), or as of the loan's last step.
    Tried again while the loan is starting, and when the query meets the loan continuing as new
    (the server can hold it to its deadline; a short one and another try reach the new run)."""
    give_up = time.monotonic() + STARTING_WAIT
    while True:
        try:
            if at is not None:
                return await handle.query(CollectionWorkflow.status_at, at, rpc_timeout=REPLY_RPC_TIMEOUT)
            return await handle.query(CollectionWorkflow.status, rpc_timeout=REPLY_RPC_TIMEOUT)
        except WorkflowQueryFailedError as exc:
            if "starting" not in str(exc) or time.monotonic() > give_up:
                raise
        except RPCError as exc:
            if exc.status == RPCStatusCode.NOT_FOUND:
                raise LoanNotFound(f"no collection for loan {loan_id}") from exc
            if exc.status not in QUERY_TIMEOUTS or time.monotonic() > give_up:
                raise
        await asyncio.sleep(0.1)
