"""The daily scan on the embedded dev server (the time-skipping server has neither schedules
nor visibility): it starts exactly the newly overdue loans of a mixed book, never one twice
(a second scan, two overlapping scans, small pages across continue-as-new), and the schedule
exists once however many workers start, following their settings."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select
from temporalio.client import (
    Client,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleOverlapPolicy,
)
from temporalio.testing import WorkflowEnvironment

import starter
from db.book import BookLoan, CollectionStart
from db.store import make_engine
from infra import codec
from infra.schedules import PAUSE_NOTE, ensure_scan_schedule
from infra.settings import ROOT, Settings
from infra.temporal import COLLECTION_TYPES, WORKFLOW_ID_PREFIX, codec_keys, with_converter, workflow_id
from models import CollectionStatus, Payment
from models.scan import OPEN, SCHEDULE_ID, ScanTotals, scan_date
from tests.helpers import book_row, eventually, make_loan, start_dev_server
from worker import create_worker

TZ = "Asia/Shanghai"


@dataclass
class Book:
    """A dev server, a worker on its own queue and database, and the loan book in it."""

    env: WorkflowEnvironment
    engine: Engine
    queue: str
    as_of: date

    @property
    def client(self) -> Client:
        return with_converter(self.env.client)

    def add(self, rows: list[BookLoan]) -> None:
        with Session(self.engine, expire_on_commit=False) as session:
            session.add_all(rows)
            session.commit()

    def starts(self) -> dict[str, CollectionStart]:
        with Session(self.engine) as session:
            return {r.loan_id: r for r in session.exec(select(CollectionStart)).all()}

    async def scan(self, scan_id: str, **kwargs: int) -> ScanTotals:
        return await starter.scan_overdue(self.client, self.as_of, scan_id=scan_id, task_queue=self.queue, **kwargs)

    async def collection_runs(self) -> Counter[str]:
        """Collection workflow runs per loan id, from visibility."""
        runs: Counter[str] = Counter()
        types = " OR ".join(f"WorkflowType = '{name}'" for name in COLLECTION_TYPES)
        async for wf in self.client.list_workflows(types):
            runs[wf.id.removeprefix(WORKFLOW_ID_PREFIX)] += 1
        return runs

    async def expect_collections(self, loan_ids: set[str]) -> None:
        """Exactly these loans have a collection workflow, each exactly one run."""

        async def check() -> None:
            runs = await self.collection_runs()
            assert set(runs) == loan_ids, (sorted(set(runs) - loan_ids), sorted(loan_ids - set(runs)))
            assert set(runs.values()) == {1}

        await eventually(check, timeout=60)


def row(
    loan_id: str, due: date, *, grace: int = 0, status: str = OPEN, principal: str = "800.00", tz: str = TZ
) -> BookLoan:
    """A row of this test's book (`tests.helpers.book_row` with its principal)."""
    return book_row(loan_id, due, grace=grace, status=status, principal=principal, tz=tz)


def newly_overdue(prefix: str, n: int, as_of: date) -> list[BookLoan]:
    """n loans past their grace on `as_of`: 1 to 10 days past due, grace 0 to 3 days."""
    return [row(f"{prefix}{i:03d}", as_of - timedelta(days=(i % 4) + 1 + i % 7), grace=i % 4) for i in range(n)]


@pytest.fixture
async def book(tmp_path: Path) -> AsyncIterator[Book]:
    env = await start_dev_server(dev_server_log_level="error", dev_server_startup_timeout=timedelta(seconds=60))
    db_url = f"sqlite:///{tmp_path / 'collections.db'}"
    queue = f"scan-{uuid.uuid4()}"
    try:
        async with create_worker(env.client, task_queue=queue, database_url=db_url):
            yield Book(env, make_engine(db_url), queue, scan_date(datetime.now(UTC), TZ))
    finally:
        await env.shutdown()


async def test_a_scan_starts_exactly_the_newly_overdue_loans_and_a_second_scan_nothing(book: Book) -> None:
    day = book.as_of
    due = newly_overdue("NEW-", 40, day)
    in_grace = [row(f"GRACE-{i:02d}", day - timedelta(days=1 + i % 3), grace=3) for i in range(30)]
    not_due = [row(f"LATER-{i:03d}", day + timedelta(days=i % 25)) for i in range(150)]  # incl. due today
    closed = [row(f"CLOSED-{i:02d}", day - timedelta(days=5), status="closed") for i in range(40)]
    recorded = [row(f"HANDED-{i:02d}", day - timedelta(days=6)) for i in range(30)]  # by an earlier scan
    invalid = [
        row("BAD-zone", day - timedelta(days=3), tz="Mars/Olympus"),
        row("BAD-zero", day - timedelta(days=3), principal="0"),
    ]
    invalid[1].interest = Decimal(0)
    running, paid = row("EXT-running", day - timedelta(days=2)), row("EXT-paid", day - timedelta(days=2))
    book.add([*due, *in_grace, *not_due, *closed, *recorded, *invalid, running, paid])
    with Session(book.engine, expire_on_commit=False) as session:
        session.add_all(
            CollectionStart(
                loan_id=r.loan_id,
                workflow_id=workflow_id(r.loan_id),
                scan_id="earlier",
                as_of=day - timedelta(days=1),
                outcome="started",
            )
            for r in recorded
        )
        session.commit()
    # Two loans the platform put into collection itself (no record): one still in collection,
    # one that has been paid in full and whose collection has ended.
    for ext in (running, paid):
        await starter.start_collection(book.client, make_loan(ext.loan_id, dpd=2), task_queue=book.queue)
    await starter.register_payment(
        book.client,
        paid.loan_id,
        Payment(payment_id="EXT-paid-1", amount=Decimal("10600.00"), currency="CNY", paid_at=datetime.now(UTC)),
    )
    ended = await book.client.get_workflow_handle(workflow_id(paid.loan_id), result_type=CollectionStatus).result()
    assert ended.stage == "paid"

    first = await book.scan("scan-1", page_size=50)

    assert first.model_dump(exclude={"pages", "runs"}) == {
        "scanned": 40 + 30 + 2 + 2,
        "started": 40,
        "already_started": 2,
        "in_grace": 30,
        "invalid": 2,
    }
    starts = book.starts()
    new_ids = {r.loan_id for r in due}
    assert set(starts) == new_ids | {r.loan_id for r in recorded} | {"EXT-running", "EXT-paid"}
    assert {starts[i].outcome for i in new_ids} == {"started"} and {starts[i].scan_id for i in new_ids} == {"scan-1"}
    assert (starts["EXT-running"].outcome, starts["EXT-paid"].outcome) == ("running", "closed")
    assert {starts[r.loan_id].scan_id for r in recorded} == {"earlier"}  # untouched
    await book.expect_collections(new_ids | {"EXT-running", "EXT-paid"})

    second = await book.scan("scan-1", page_size=50)  # the same id again, after the first finished

    assert second.model_dump(exclude={"pages", "runs"}) == {
        "scanned": 30 + 2,
        "started": 0,
        "already_started": 0,
        "in_grace": 30,
        "invalid": 2,
    }
    assert book.starts() == starts
    await book.expect_collections(new_ids | {"EXT-running", "EXT-paid"})


async def test_overlapping_scans_start_each_loan_once(book: Book) -> None:
    due = newly_overdue("OVL-", 60, book.as_of)
    book.add([*due, *(row(f"LATER-{i:03d}", book.as_of + timedelta(days=3)) for i in range(60))])

    a, b = await asyncio.gather(book.scan("scan-a", page_size=7), book.scan("scan-b", page_size=7))

    assert a.started + b.started == 60
    assert a.started + a.already_started <= 60 and b.started + b.already_started <= 60
    starts = book.starts()
    assert set(starts) == {r.loan_id for r in due}
    assert {s.scan_id for s in starts.values()} <= {"scan-a", "scan-b"}
    await book.expect_collections({r.loan_id for r in due})

    c, d = await asyncio.gather(book.scan("scan-c", page_size=7), book.scan("scan-d", page_size=7))

    assert (c.started, c.already_started, d.started, d.already_started) == (0, 0, 0, 0)
    assert book.starts() == starts
    await book.expect_collections({r.loan_id for r in due})


async def test_small_pages_and_continue_as_new_still_cover_every_row_once(book: Book) -> None:
    due = newly_overdue("CAN-", 45, book.as_of)
    grace = [row(f"CAN-G{i:02d}", book.as_of - timedelta(days=1), grace=2) for i in range(9)]
    book.add([*due, *grace, *(row(f"CAN-L{i:02d}", book.as_of + timedelta(days=9)) for i in range(30))])

    totals = await book.scan("scan-small", page_size=4, pages_per_run=3)

    assert (totals.scanned, totals.started, totals.in_grace) == (54, 45, 9)
    assert totals.pages == 14  # 54 rows by 4: 13 full pages and the empty one that ends the walk
    assert totals.runs == 5  # 14 pages, 3 a run
    runs = [wf async for wf in book.client.list_workflows("WorkflowId = 'scan-small'")]
    assert len(runs) == 5
    assert set(book.starts()) == {r.loan_id for r in due}
    await book.expect_collections({r.loan_id for r in due})


async def test_a_scheduled_run_scans_for_its_scheduled_date(book: Book) -> None:
    book.add(newly_overdue("SCHED-", 5, book.as_of))
    cfg = Settings(scan_timezone=TZ, scan_page_size=2, scan_pages_per_run=2)
    assert await ensure_scan_schedule(book.client, book.queue, cfg) == "created"
    schedule = book.client.get_schedule_handle(SCHEDULE_ID)

    await schedule.trigger()

    async def finished() -> str:
        desc = await schedule.describe()
        assert desc.info.recent_actions and not desc.info.running_actions
        action = desc.info.recent_actions[-1].action
        assert isinstance(action, ScheduleActionExecutionStartWorkflow)
        return action.workflow_id

    scan_id = await eventually(finished, timeout=60)
    totals = await book.client.get_workflow_handle(scan_id, result_type=ScanTotals).result()
    assert scan_id.startswith(f"{SCHEDULE_ID}-") and (totals.started, totals.runs) == (5, 2)
    starts = book.starts()
    assert {s.scan_id for s in starts.values()} == {scan_id}
    assert {s.as_of for s in starts.values()} == {scan_date(datetime.now(UTC), TZ)}


# ----------------------------------------------------------------------------- the schedule


def worker_env(address: str, db_file: Path, **settings: str) -> dict[str, str]:
    """The environment of a worker process on the test's server and key. Each worker gets a
    database of its own, so the test is about the schedule only (concurrent migrations of one
    database are tests/db/test_migrations.py's subject)."""
    keys = ",".join(codec.encode_key(k) for k in codec_keys())
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": address,
        "TEMPORAL_TASK_QUEUE": "scan-workers",
        "DATABASE_URL": f"sqlite:///{db_file}",
        "COLLECTIONS_CODEC_KEYS": keys,
        "CODEC_KEY_FILE": str(db_file.with_suffix(".absent-key")),
        **settings,
    }


class WorkerProcess:
    """`python worker.py` (the path a deployed worker takes) until it is serving."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py"],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    async def serving(self, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log.read_text(errors="replace")
            if "worker on " in out:
                return out
            assert self.proc.poll() is None, f"worker exited early:\n{out}"
            await asyncio.sleep(0.2)
        raise AssertionError(f"worker not serving within {timeout}s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)


async def only_the_scan_schedule(client: Client) -> None:
    """The namespace has exactly one schedule, the scan's (listing is eventually consistent)."""
    assert [s.id async for s in await client.list_schedules()] == [SCHEDULE_ID]


@pytest.fixture
def workers() -> Iterator[list[WorkerProcess]]:
    started: list[WorkerProcess] = []
    yield started
    for w in started:
        w.stop()


async def test_the_schedule_exists_once_after_two_workers_start_and_follows_the_settings(
    book: Book,
    workers: list[WorkerProcess],
    tmp_path: Path,
) -> None:
    address = book.env.client.service_client.config.target_host

    async def start(name: str, **settings: str) -> str:
        w = WorkerProcess(worker_env(address, tmp_path / f"{name}.db", **settings), tmp_path / f"{name}.log")
        workers.append(w)
        return await w.serving()

    logs = await asyncio.gather(*(start(f"w{i}", SCAN_HOUR="2", SCAN_MINUTE="15") for i in range(2)))

    assert sorted("created schedule" in log for log in logs) == [False, True]  # one created it, one found it
    await eventually(lambda: only_the_scan_schedule(book.client))
    desc = await book.client.get_schedule_handle(SCHEDULE_ID).describe()
    calendar = desc.schedule.spec.calendars[0]
    assert ([r.start for r in calendar.hour], [r.start for r in calendar.minute]) == ([2], [15])
    assert desc.schedule.spec.time_zone_name == "Asia/Shanghai"  # the default SCAN_TIMEZONE
    assert desc.schedule.policy.overlap == ScheduleOverlapPolicy.SKIP and not desc.schedule.state.paused
    assert isinstance(desc.schedule.action, ScheduleActionStartWorkflow)
    assert desc.schedule.action.task_queue == "scan-workers"

    log = await start("w2", SCAN_HOUR="6", SCAN_MINUTE="45", SCAN_TIMEZONE="Europe/London")  # settings changed

    assert f"schedule {SCHEDULE_ID} updated" in log
    desc = await book.client.get_schedule_handle(SCHEDULE_ID).describe()
    calendar = desc.schedule.spec.calendars[0]
    assert ([r.start for r in calendar.hour], [r.start for r in calendar.minute]) == ([6], [45])
    assert desc.schedule.spec.time_zone_name == "Europe/London"
    await eventually(lambda: only_the_scan_schedule(book.client))

    await start("w3", SCAN_HOUR="6", SCAN_MINUTE="45", SCAN_TIMEZONE="Europe/London", SCAN_ENABLED="false")

    desc = await book.client.get_schedule_handle(SCHEDULE_ID).describe()
    assert desc.schedule.state.paused and desc.schedule.state.note == PAUSE_NOTE


async def test_settings_pause_and_resume_the_schedule_but_keep_an_operators_pause(book: Book) -> None:
    on = Settings(scan_hour=3)
    off = Settings(scan_hour=3, scan_enabled=False)
    assert await ensure_scan_schedule(book.client, book.queue, off) == "absent"  # disabled: nothing created
    assert await ensure_scan_schedule(book.client, book.queue, on) == "created"
    assert await ensure_scan_schedule(book.client, book.queue, on) == "unchanged"
    assert await ensure_scan_schedule(book.client, book.queue, off) == "paused"
    assert await ensure_scan_schedule(book.client, book.queue, on) == "resumed"
    schedule = book.client.get_schedule_handle(SCHEDULE_ID)
    await schedule.pause(note="month-end freeze")
    assert await ensure_scan_schedule(book.client, book.queue, Settings(scan_hour=4)) == "updated"
    state = (await schedule.describe()).schedule.state
    assert state.paused and state.note == "month-end freeze"
