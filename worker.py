"""The worker process: runs collection workflows and their activities. Wiring only: settings
and adapters in, `create_worker` out; what the loan does is `models`', how it is shelled
`workflows`', the I/O `activities`'.

`python worker.py` serves the configured Temporal server. `python worker.py --embedded`
(what `make run` does) also starts the embedded Temporal dev server with its Web UI, keeps
its state in var/temporal.db, loads the sample portfolio and runs until Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import inspect
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import temporalio.activity
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    PollerBehaviorAutoscaling,
    Worker,
    WorkflowInstance,
    WorkflowInstanceDetails,
    WorkflowRunner,
)
from temporalio.worker._workflow_instance import _WorkflowLogicFlag  # private: see SingleBatchRunner
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from activities.admin import AdminActivities, ensure_search_attributes
from activities.channels import make_adapter
from activities.effects import EffectActivities
from activities.guard import GuardActivities
from activities.handover import HandoverActivities
from activities.ledger import LedgerActivities
from activities.messaging import MessagingActivities
from activities.records import RecordActivities
from activities.rendering import Renderer
from activities.scan import ScanActivities
from activities.screening import Screener
from activities.start import StartActivities
from activities.tasks import TaskActivities
from api import create_app
from api.serve import dev_token, start_server
from db import migrate
from db.store import make_engine
from desk.demo import demo_users
from infra import temporal
from infra.logs import install_log_masking
from infra.process import exit_process, venv_binary
from infra.schedules import ensure_scan_schedule
from infra.settings import Settings, settings
from infra.settings import task_queue as default_queue
from ops.sample import load_sample_portfolio, sample_arms
from workflows.registry import WORKFLOWS

log = logging.getLogger("collections.worker")

__all__ = ["WORKFLOWS", "Uninterrupted", "create_worker", "main", "uninterrupted", "until_stopped"]


def create_worker(
    client: Client,
    *,
    task_queue: str | None = None,
    database_url: str | None = None,
    max_cached_workflows: int | None = None,
    policies_dir: Path | None = None,
    strategies_dir: Path | None = None,
    **options: Any,
) -> Worker:
    """A worker with every workflow (`workflows.registry.WORKFLOWS`) and activity registered,
    polling `task_queue` (default: the TEMPORAL_TASK_QUEUE setting) and writing to
    `database_url` (default: the DATABASE_URL setting, a SQLite file under var/). `options` go to
    `temporalio.worker.Worker` as they are (tests and benchmarks tune the worker with them).
    Client calls in the same process do not learn the queue from it: give them the same
    `task_queue` (or set TEMPORAL_TASK_QUEUE)."""
    cfg = settings()
    queue = default_queue(task_queue)
    url = database_url or cfg.database_url
    migrate.upgrade(url)  # the schema to head (Alembic) before anything writes; idempotent, locked
    engine = make_engine(url, cfg.database_pool_size, cfg.database_max_overflow, sqlite_connections=1)
    renderer = Renderer(cfg.templates_dir)
    adapter = make_adapter(cfg.channel_adapter, cfg.webhook_url, cfg.webhook_timeout_seconds)
    messaging = MessagingActivities(engine, renderer, adapter)
    ledger = LedgerActivities(engine)
    tasks = TaskActivities(engine, renderer)
    handover = HandoverActivities(engine, renderer)
    records = RecordActivities(engine, policies_dir or cfg.policies_dir, cfg.rulesets_dir, cfg.templates_dir)
    guard = GuardActivities(engine)
    admin = AdminActivities(client)
    scan = ScanActivities(client, engine, queue)
    effects = EffectActivities(engine, messaging, tasks, handover)
    start = StartActivities(records, admin, Screener(engine, strategies_dir or cfg.strategies_dir))
    interceptors = [Uninterrupted(), *options.pop("interceptors", [])]  # Uninterrupted: see `uninterrupted`
    worker = Worker(
        temporal.with_converter(client),
        task_queue=queue,
        workflows=WORKFLOWS,
        activities=[
            start.prepare,
            effects.perform,
            messaging.send_message,
            ledger.post_fee,
            ledger.record_payment,
            ledger.charge_off,
            ledger.waive,
            tasks.create_task,
            tasks.close_task,
            handover.place_with_agency,
            handover.recall_from_agency,
            handover.file_case,
            records.load_policy,
            records.register_loan,
            records.record_event,
            records.load_conduct_rules,
            guard.request_contact,
            guard.record_conversation,
            admin.ensure_search_attributes,
            scan.scan_page,
        ],  # the ones after `perform` are the first workflow version's (and `request_contact` both's)
        interceptors=interceptors,
        activity_executor=ThreadPoolExecutor(max_workers=cfg.activity_threads),
        max_cached_workflows=cfg.max_cached_workflows if max_cached_workflows is None else max_cached_workflows,
        workflow_task_poller_behavior=PollerBehaviorAutoscaling(),
        activity_task_poller_behavior=PollerBehaviorAutoscaling(),
        workflow_runner=SingleBatchRunner(options.pop("workflow_runner", SandboxedWorkflowRunner())),
        **options,
    )
    return worker


_SINGLE_BATCH = _WorkflowLogicFlag.PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH


class SingleBatchRunner(WorkflowRunner):
    """A workflow runner (the sandbox by default) whose workflows apply every job of an
    activation before any workflow code runs (temporalio's
    `PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH` logic flag).

    By default temporalio 1.35 runs signal handlers, and the code they wake, before it applies
    the activity results and timers of the same activation. A timer that fired in the same
    workflow task as a request would then lose to the request in one grouping of the task's jobs
    and win in the other (a fresh worker and the replay of its history can group them
    differently), and the loan would decide differently on replay. Applied all at once, the
    timer wins in both (`workflows/collection.py`, `_next`). The flag is recorded in the history
    of every task that uses it, so a replay uses it exactly where the live run did (the SDK
    ignores default flags while replaying); histories recorded without it replay as before.

    Why a runner: it is part of the worker's `config()`, so a worker cloned from one made by
    `create_worker` (`Worker(client, **worker.config())`) carries the flag too. The flag itself
    is private API that the SDK announces as its future default, which is why temporalio is
    pinned (pyproject.toml) and every recorded history replays in the tests."""

    def __init__(self, inner: WorkflowRunner) -> None:
        self.inner = inner

    def prepare_workflow(self, defn: Any) -> None:
        self.inner.prepare_workflow(defn)

    def create_instance(self, det: WorkflowInstanceDetails) -> WorkflowInstance:
        flags = det.default_workflow_logic_flags | {_SINGLE_BATCH}
        return self.inner.create_instance(dataclasses.replace(det, default_workflow_logic_flags=flags))

    def set_worker_level_failure_exception_types(self, types: Sequence[type[BaseException]]) -> None:
        self.inner.set_worker_level_failure_exception_types(types)


def uninterrupted(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn`, a synchronous activity, run so that a cancellation cannot interrupt it halfway:
    temporalio's cancellation exception is held back while it runs (the SDK's public
    `activity.shield_thread_cancel_exception`) and raised, if one came, once it has returned.

    Why: temporalio cancels a synchronous activity running in the worker's thread pool (worker
    shutdown, which the tests do at the end of every test; an activity timeout; a cancel
    request) by raising CancelledError *asynchronously* in its thread (PyThreadState_SetAsyncExc),
    at whatever bytecode the thread is executing. Landing inside SQLAlchemy or psycopg (the pool's
    checkout, a statement's result handling, the commit, the rollback on return) it left the
    connection checked out with its transaction open and no owner, reachable only from the
    exception's traceback until the garbage collector freed it; sometimes back in the pool with
    the transaction still open. On PostgreSQL: a guard decision "idle in transaction" holding a
    person's lock row, the next decision for that person waiting on it, and a worker shutting
    down waiting for that one (issue 9, item 6a; tests/db/test_thread_cancel.py). Every synchronous
    activity here is one or a few short transactions (a lock wait ends at the server's
    lock_timeout), none heartbeats, and all are idempotent: one that commits and is then
    reported cancelled is run again and finds its work done."""

    def run(*args: Any) -> Any:
        with temporalio.activity.shield_thread_cancel_exception():
            return fn(*args)

    return run


class Uninterrupted(Interceptor):
    """Runs every synchronous activity of the worker through `uninterrupted`: one place, so
    that an activity added later is covered without anyone remembering to."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _UninterruptedInbound(next)


class _UninterruptedInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if not (inspect.iscoroutinefunction(input.fn) or inspect.iscoroutinefunction(type(input.fn).__call__)):
            input = dataclasses.replace(input, fn=uninterrupted(input.fn))
        return await self.next.execute_activity(input)


async def run_worker() -> None:
    """Serve the configured Temporal server until SIGINT/SIGTERM."""
    client = await temporal.connect()
    await ensure_search_attributes(client)  # the portfolio view's attributes, registered idempotently
    worker = create_worker(client)
    await ensure_scan_schedule(client, worker.task_queue)  # the daily scan, once per namespace
    log.info("worker on %s, task queue %s", settings().temporal_address, worker.task_queue)
    async with worker:
        await until_stopped()


async def run_embedded() -> None:
    """Dev server + Web UI + worker + sample portfolio, all in this process tree."""
    cfg = settings()
    cfg.temporal_db_file.parent.mkdir(parents=True, exist_ok=True)
    if temporal.ensure_codec_key():  # first start: encrypt payloads from the very first loan
        log.info("created codec key file %s (keep it: without it the history cannot be read)", cfg.codec_key_file)
    host, _, port = cfg.temporal_address.rpartition(":")
    env = await WorkflowEnvironment.start_local(
        namespace=cfg.temporal_namespace,
        data_converter=temporal.data_converter(),
        ip=host or "127.0.0.1",
        port=int(port),
        ui=True,
        ui_port=cfg.temporal_ui_port,
        dev_server_existing_path=venv_binary("temporal"),
        dev_server_database_filename=str(cfg.temporal_db_file),
        dev_server_extra_args=[
            "--sqlite-pragma",
            "journal_mode=WAL",
            "--sqlite-pragma",
            "synchronous=NORMAL",
            # a loan whose workflow task failed 5 times in a row gets TemporalReportedProblems
            # (the Web UI's "Task Failures" view, `starter.py doctor`); off unless configured
            "--dynamic-config-value",
            "system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute=5",
        ],
    )
    async with env:
        await ensure_search_attributes(env.client)
        worker = create_worker(env.client)
        await ensure_scan_schedule(env.client, worker.task_queue)
        async with worker:
            started = await load_sample_portfolio(env.client, task_queue=worker.task_queue)
            app = create_app(client=env.client, task_queue=worker.task_queue)
            server, serving = await start_server(app, cfg.api_host, cfg.api_port)
            token = dev_token(cfg.database_url, cfg.api_dev_token_file)
            demo = demo_users(cfg.database_url, cfg.desk_demo_file, cfg.policies_dir)
            arms = await asyncio.to_thread(sample_arms, cfg.database_url)
            print(_banner(cfg, len(started), worker.task_queue, token, demo, arms), flush=True)
            await until_stopped()
            server.should_exit = True
            await serving
    print("stopped: API, worker and Temporal dev server shut down cleanly", flush=True)


def _banner(
    cfg: Settings,
    loans: int,
    queue: str | None = None,
    api_token: str = "",
    desk_users: dict[str, str] | None = None,
    arms: dict[str, int] | None = None,
) -> str:
    host = cfg.temporal_address.rpartition(":")[0] or "localhost"
    ui = f"http://{host if host not in ('127.0.0.1', '0.0.0.0') else 'localhost'}:{cfg.temporal_ui_port}"
    # The Web UI shows only ciphertext until it is pointed at the codec server, which wants the
    # token: the CLI sends it as a header; the Web UI, which has no field for one, in the path.
    sealing, token = temporal.payload_codec(), temporal.codec_server_token()
    if sealing is None or token is None:
        privacy = "Payloads are NOT encrypted (no codec key): personal data is readable in the Web UI.\n"
    else:
        source = "COLLECTIONS_CODEC_KEYS" if cfg.codec_keys.get_secret_value().strip() else cfg.codec_key_file
        codec_url = f"http://localhost:{cfg.codec_server_port}"
        privacy = (
            f"Payloads are encrypted (key id {sealing.key_id}, key in {source}). To read them in the Web UI:\n"
            f"  make codec-server   (another terminal; decodes on {codec_url} only for holders of the token)\n"
            f"  then in the Web UI's codec server setting (Data Encoder) set the endpoint to\n"
            f"    {codec_url}/{token}\n"
            f"  CLI: .venv/bin/temporal workflow show -w collection-SAMPLE-001 --address {cfg.temporal_address} \\\n"
            f"         --codec-endpoint {codec_url} --codec-auth 'Bearer {token}'\n"
        )
    api = cfg.api_public_url or f"http://localhost:{cfg.api_port}"
    people = desk_users or {}
    desk = (
        f"Collectors' desk: {api}/desk/ (in a browser; Chinese or English)\n"
        + "".join(f"  sign in as {name} / {password}\n" for name, password in people.items())
        + "  more users: .venv/bin/python starter.py user add NAME --role collector --queue collectors\n"
    )
    split = "".join(f"  {count:>3} {arm}\n" for arm, count in (arms or {}).items())
    strategy = (
        "Screened at hand-over (policy auto; strategies/segmentation.toml) under the sample experiment\n"
        "(strategies/experiments/sample.toml): standard and high-risk loans 80/20 default / early-call.\n"
        f"Loans by segment and experiment/arm:\n{split}"
        "  .venv/bin/python starter.py experiment list   (also show, pause, resume, end --winner ARM)\n"
    )
    return f"""
Temporal dev server on {cfg.temporal_address}; Web UI: {ui}
Worker on task queue '{queue or cfg.temporal_task_queue}'; database {cfg.database_url}
Sample portfolio: {loans} loans in collection (workflow ids collection-<loan id>).
{strategy}HTTP API on {api} (interactive docs: {api}/docs); a platform token (kept in {cfg.api_dev_token_file}):
  export TOKEN={api_token}
  curl -s -H "Authorization: Bearer $TOKEN" {api}/v1/loans/SAMPLE-001
  curl -s -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \\
       -d @examples/loan.json {api}/v1/loans
  other roles: .venv/bin/python starter.py token create NAME --role collector --queue collectors

{desk}
In another terminal:
  .venv/bin/python starter.py list
  .venv/bin/python starter.py status SAMPLE-001
  .venv/bin/python starter.py pay SAMPLE-001 100.00 --currency CNY
  .venv/bin/python starter.py start examples/loan.json

{privacy}Ctrl-C stops the worker and the server (state stays in var/).
"""


async def until_stopped() -> None:
    """Wait for SIGINT or SIGTERM (a worker process's life; the benchmarks' worker processes too)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--embedded", action="store_true", help="start the embedded dev server, UI and sample portfolio"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_masking()  # phone numbers and e-mail addresses never reach the log in full
    logging.getLogger("temporalio").setLevel(logging.WARNING)
    asyncio.run(run_embedded() if args.embedded else run_worker())


if __name__ == "__main__":
    main()
    exit_process(0)
