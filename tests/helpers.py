"""What tests share, as plain functions, classes and constants (fixtures live in the conftest.py
files): the test data folders, loans (`make_loan`), the workflow harness (`Harness`: start
loans on the time-skipping server, move the clock to a day past due, read the database), the
default ladder's expected timeline, recorded-history helpers, effect and guard requests, a
webhook receiver and a clock to drive the webhook dispatcher with, and the dev server and free
ports for the tests that run real processes.

No test module imports another test module (tests/unit/test_layout.py checks it): what two test
modules share lives here."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

import httpx
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel, select
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHistory
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

import starter
from db.book import BookLoan
from db.tables import OutboxMessage, TaskRow
from infra.loaders import load_holidays, load_ruleset
from infra.process import venv_binary
from infra.settings import settings
from infra.temporal import data_converter, workflow_id
from models import Borrower, CollectionStatus, OverdueLoan
from models.conduct import ContactRequest, Situation
from models.requests import ConductRules, GuardRequest
from models.scan import OPEN
from models.schedule import at_local, days_past_due, local_date
from worker import create_worker

T = TypeVar("T")
Row = TypeVar("Row", bound=SQLModel)

# ----------------------------------------------------------------------------- folders

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
HISTORIES = TESTS / "histories"
"""Recorded workflow histories (record.py, record_continued.py write them; tests/replay replays them)."""
SDK_BUGS = TESTS / "sdk_bugs"
TEST_POLICIES = TESTS / "policies"
LEGACY_SCHEMAS = TESTS / "legacy"
TEMPLATES_BAD = TESTS / "templates_bad"

# ----------------------------------------------------------------------------- loans

TZ = "Asia/Shanghai"


def make_loan(
    loan_id: str | None = None,
    *,
    dpd: int = 0,
    now: datetime | None = None,
    principal: str = "10000.00",
    interest: str = "500.00",
    fees: str = "100.00",
    currency: str = "CNY",
    tz: str = TZ,
    phone: str = "+8613800000000",
    email: str = "borrower@example.cn",
    address: str = "上海市浦东新区世纪大道1号",
) -> OverdueLoan:
    """A loan that is `dpd` days past due on the borrower's calendar at `now`."""
    today = local_date(now or datetime.now(UTC), tz)
    return OverdueLoan(
        loan_id=loan_id or f"L-{uuid.uuid4().hex[:10]}",
        borrower=Borrower(
            borrower_id=f"B-{uuid.uuid4().hex[:8]}",
            name="李明",
            phone=phone,
            email=email,
            address=address,
            timezone=tz,
            language="zh",
        ),
        currency=currency,
        principal=Decimal(principal),
        interest=Decimal(interest),
        fees=Decimal(fees),
        due_date=today - timedelta(days=dpd),
    )


def due(dpd: int) -> date:
    return local_date(datetime.now(UTC), TZ) - timedelta(days=dpd)


def dpd_of(at: datetime | None, loan: OverdueLoan) -> int:
    """Days past due of the loan at `at` (which must be set: a moment a row or status recorded)."""
    assert at is not None
    return days_past_due(at, loan.due_date, loan.borrower.timezone)


async def run_ids(client: Client, loan_id: str) -> tuple[str, str]:
    """The first run id and the current run id of a loan's workflow."""
    desc = await client.get_workflow_handle(workflow_id(loan_id)).describe()
    first = desc.raw_description.workflow_execution_info.first_run_id or desc.run_id
    return first, desc.run_id


def timeline_rows(status: CollectionStatus, loan: OverdueLoan) -> list[tuple[int, str, str, str]]:
    """(DPD, action, channel, outcome) for each timeline entry."""
    return [(dpd_of(e.at, loan), e.action, e.channel, e.outcome) for e in status.timeline]


def book_row(
    loan_id: str,
    due: date,
    *,
    grace: int = 0,
    status: str = OPEN,
    principal: str = "1000.00",
    tz: str = "Asia/Shanghai",
) -> BookLoan:
    """A row of the loan book (what the daily scan reads), due on `due`."""
    return BookLoan(
        loan_id=loan_id,
        borrower_id=f"B-{loan_id}",
        borrower_name="王芳",
        phone="+8613900000000",
        email="wf@example.cn",
        timezone=tz,
        currency="CNY",
        principal=Decimal(principal),
        interest=Decimal("10.00"),
        due_date=due,
        grace_days=grace,
        status=status,
    )


def all_rows(engine: Engine, table: type[Row]) -> list[Row]:
    """Every row of `table`."""
    with Session(engine) as session:
        return list(session.exec(select(table)).all())


# ----------------------------------------------------------------------------- harness


async def start_time_skipping() -> WorkflowEnvironment:
    """A fresh time-skipping test server (from the venv) with the project's converter."""
    return await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"), data_converter=data_converter()
    )


@asynccontextmanager
async def worker_harness(env: WorkflowEnvironment, db_url: str, engine: Engine) -> AsyncIterator[Harness]:
    """A worker on a fresh task queue and the given database, and the harness around it."""
    queue = f"test-{uuid.uuid4()}"
    async with create_worker(env.client, task_queue=queue, database_url=db_url):
        yield Harness(env=env, engine=engine, task_queue=queue)


@dataclass
class Harness:
    env: WorkflowEnvironment
    engine: Engine
    task_queue: str

    @property
    def client(self) -> Client:
        return self.env.client

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def start(self, loan: OverdueLoan, policy: str = "default") -> str:
        return await starter.start_collection(self.client, loan, policy, task_queue=self.task_queue)

    async def at_dpd(self, loan: OverdueLoan, dpd: int, clock: time = time(12, 0)) -> None:
        """Skip time to `clock` local time on day `dpd` past due (noon: clear of 10:00 steps)."""
        target = at_local(loan.due_date + timedelta(days=dpd), clock, loan.borrower.timezone)
        wait = target - await self.now()
        assert wait > timedelta(0), f"already past DPD {dpd}"
        await self.env.sleep(wait)

    async def on_date(self, loan: OverdueLoan, day: date, clock: time = time(12, 0)) -> None:
        """Skip time to `clock` on calendar day `day` in the borrower's zone."""
        await self.at_dpd(loan, (day - loan.due_date).days, clock)

    async def today(self, loan: OverdueLoan) -> date:
        return local_date(await self.now(), loan.borrower.timezone)

    async def settle(self) -> None:
        """Let work already due (a catch-up step right after start) finish: a minute passes."""
        await self.env.sleep(timedelta(minutes=1))

    async def status(self, loan: OverdueLoan, fresh: bool = True) -> CollectionStatus:
        """The loan's status once the effects of everything it was told are written (a request
        is answered before its effects run, so tests that read the database wait for them)."""
        await self.quiet(loan)
        return await starter.get_status(self.client, loan.loan_id, fresh=fresh)

    async def quiet(self, loan: OverdueLoan, timeout: float = 30.0) -> None:
        """Until the loan has no effect queued or running (real time: the clock does not move)."""
        await starter.wait_quiet(self.client, loan.loan_id, timeout)

    async def is_running(self, loan: OverdueLoan, settle_seconds: float = 5.0) -> bool:
        """Whether the loan's workflow still runs, allowing a closing workflow a few real
        seconds to finish its last activities (they are not time the server can skip)."""
        handle = self.client.get_workflow_handle(f"collection-{loan.loan_id}")
        for _ in range(int(settle_seconds / 0.05)):
            if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
                return False
            await asyncio.sleep(0.05)
        return True

    def rows(self, table: type[Row], loan_id: str, order: Any = None) -> list[Row]:
        with Session(self.engine) as session:
            # SQLModel has no loan_id; every table passed here has one
            query = select(table).where(table.loan_id == loan_id)  # type: ignore[attr-defined]
            if order is not None:
                query = query.order_by(order)
            return list(session.exec(query).all())


# ----------------------------------------------------------------------------- the default ladder

# (DPD, action, channel, outcome) of a never-paying loan of 10,000 CNY principal + 500 interest
# + 100 fees under policies/default.toml, with no task outcome ever reported.
EXPECTED_TIMELINE = [
    (0, "collection_started", "", "DPD 0"),
    (1, "reminder_first", "sms", "sent"),
    (3, "reminder_second", "sms", "sent"),
    (3, "reminder_second", "email", "sent"),
    (5, "call_task", "phone", "created"),
    (6, "call_outcome", "phone", "timeout"),  # 24 h outcome timeout
    (7, "late_fee", "ledger", "posted"),  # grace 6 days
    (7, "call_task", "phone", "created"),  # retry 24 h later, attempt 2 of 3
    (8, "call_outcome", "phone", "timeout"),
    (9, "call_task", "phone", "created"),
    (10, "call_outcome", "phone", "timeout"),  # attempts used up
    (15, "call_task", "phone", "created"),  # senior round
    (17, "call_outcome", "phone", "timeout"),
    (19, "call_task", "phone", "created"),
    (21, "call_outcome", "phone", "timeout"),
    (30, "stage_changed", "", "middle"),
    (30, "demand_letter", "letter", "sent"),
    (37, "late_fee", "ledger", "posted"),
    (45, "field_visit_task", "visit", "created"),
    (50, "field_visit_outcome", "visit", "timeout"),
    (60, "agency_placement", "agency", "placed"),
    (67, "late_fee", "ledger", "posted"),
    (90, "stage_changed", "", "late"),
    (97, "late_fee", "ledger", "posted"),
    (120, "agency_recall", "agency", "recalled"),
    (120, "pre_litigation_notice", "letter", "sent"),
    (127, "late_fee", "ledger", "posted"),
    (135, "litigation", "court", "filed"),
    (157, "late_fee", "ledger", "capped"),
    (180, "write_off", "ledger", "charged_off"),
    (545, "recovery_ended", "", "closed as written off"),
    (545, "collection_closed", "", "written_off"),
]


# ----------------------------------------------------------------------------- recorded histories

SCREENED_TIMELINE = [
    EXPECTED_TIMELINE[0],
    (0, "strategy_assigned", "", "standard (score 20)"),  # screened at hand-over, arm "explicit"
    *EXPECTED_TIMELINE[1:],
]
"""EXPECTED_TIMELINE of a loan started on a worker, which screens every new loan (`make_loan`'s
10,600 CNY, never paid: strategies/segmentation.toml gives 20, standard); the decider's own
tests begin without a strategy and keep EXPECTED_TIMELINE."""

SINGLE_BATCH = 2
"""temporalio's PROCESS_WORKFLOW_ACTIVATION_JOBS_AS_SINGLE_BATCH logic flag (worker.py)."""


def lang_flags(history: WorkflowHistory) -> set[int]:
    """The SDK logic flags the history's workflow tasks recorded."""
    return {
        flag
        for e in history.events
        if e.HasField("workflow_task_completed_event_attributes")
        for flag in e.workflow_task_completed_event_attributes.sdk_metadata.lang_used_flags
    }


# ----------------------------------------------------------------------------- effects and the guard

MESSAGE_CONTEXT = {
    "loan_id": "L-1",
    "borrower_name": "李明",
    "amount_due": "10,600.00",
    "currency": "CNY",
    "due_date": "2026-11-20",
    "dpd": "11",
    "lender_name": "Example Lending",
    "lender_phone": "400",
    "dispute_contact": "d@x",
    "stage": "early",
}


class FlakyAdapter:
    """Delivers, then fails the first attempt of each key, as if the worker died right after
    the gateway accepted the message and before the activity reported back."""

    def __init__(self) -> None:
        self.deliveries: list[str] = []

    def deliver(self, message: OutboxMessage) -> str:
        self.deliveries.append(message.key)
        if self.deliveries.count(message.key) == 1:
            raise ConnectionError("worker lost after delivery")
        return "ok"


PERSON = "B-LOCK"
"""The borrower of `sms` requests."""


def cn_rules() -> ConductRules:
    folder = settings().rulesets_dir
    ruleset = load_ruleset("cn", folder)
    return ConductRules(ruleset=ruleset, holidays=sorted(load_holidays(ruleset.hours.holidays, folder)))


def sms(loan_id: str, at: datetime) -> GuardRequest:
    """A text message to PERSON about `loan_id` at `at`, under the CN rule set."""
    return GuardRequest(
        contact=ContactRequest(
            borrower_id=PERSON,
            loan_id=loan_id,
            channel="sms",
            at=at,
            timezone="Asia/Shanghai",
            key=f"{loan_id}/sms@{at.isoformat()}",
        ),
        rules=cn_rules(),
        situation=Situation(),
    )


# ----------------------------------------------------------------------------- webhooks


class FakeClock:
    """A clock the webhook dispatcher reads (`now=clock`); the test moves `at`."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class WebhookReceiver:
    """A subscriber behind httpx.MockTransport: records every request it is sent (failed ones
    too) and answers with `answer(request)`: a status, or an exception to raise (a refused
    connection: `httpx.ConnectError`). Counts the requests in flight per event id; `delay`
    keeps each one open that long (real seconds), `gate(sender)` until it returns."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.answers: list[int | None] = []
        self.answer: Callable[[httpx.Request], int] = lambda _request: 200
        self.delay = 0.0
        self.in_flight: dict[str, int] = {}
        self.most_in_flight = 0
        self.senders: list[str] = []
        self.gate: Callable[[str], Awaitable[None]] | None = None

    async def handle(self, request: httpx.Request, sender: str = "") -> httpx.Response:
        event = request.headers["X-Webhook-Id"]
        self.in_flight[event] = self.in_flight.get(event, 0) + 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight[event])
        try:
            if self.gate is not None:
                await self.gate(sender)
            if self.delay:
                await asyncio.sleep(self.delay)
            self.requests.append(request)
            self.senders.append(sender)
            try:
                status = self.answer(request)
            except httpx.HTTPError:
                self.answers.append(None)
                raise
            self.answers.append(status)
            return httpx.Response(status)
        finally:
            self.in_flight[event] -= 1

    def client(self, sender: str = "") -> httpx.AsyncClient:
        """An HTTP client whose requests reach this receiver (`senders` tells them apart)."""

        async def handle(request: httpx.Request) -> httpx.Response:
            return await self.handle(request, sender)

        return httpx.AsyncClient(transport=httpx.MockTransport(handle))

    def delivered(self) -> list[dict[str, Any]]:
        """The bodies of the requests answered 2xx, in the order received."""
        return [
            json.loads(r.content)
            for r, status in zip(self.requests, self.answers, strict=True)
            if status and 200 <= status < 300
        ]


def refuse(request: httpx.Request) -> int:
    """A subscriber that is down: the connection is refused."""
    raise httpx.ConnectError("[Errno 111] Connection refused", request=request)


# ----------------------------------------------------------------------------- dev server, processes


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def start_dev_server(*dynamic_config: str, **options: Any) -> WorkflowEnvironment:
    """The embedded Temporal dev server (real time, with visibility and schedules) with the
    project's data converter; each of `dynamic_config` is a `key=value` dynamic config value;
    `options` go to `WorkflowEnvironment.start_local`. The caller shuts it down."""
    extra: list[str] = []
    for value in dynamic_config:
        extra += ["--dynamic-config-value", value]
    if extra:
        extra += ["--log-level", "error"]
    return await WorkflowEnvironment.start_local(
        dev_server_existing_path=venv_binary("temporal"),
        data_converter=data_converter(),
        dev_server_extra_args=extra,
        **options,
    )


def daytime_zone() -> str:
    """A zone where it is now between 10:00 and 19:00, so the test runs the same at any hour."""
    now = datetime.now(UTC)
    zones = [f"Etc/GMT{'+' if h < 0 else '-'}{abs(h)}" if h else "UTC" for h in range(-11, 14)]
    return next(z for z in zones if 10 <= now.astimezone(ZoneInfo(z)).hour < 19)


async def eventually(check: Callable[[], Awaitable[T]], timeout: float = 20.0) -> T:
    """Visibility is eventually consistent: retry until the check holds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await check()
        except (AssertionError, RPCError):  # not listed yet, or attributes not registered yet
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.3)


# ----------------------------------------------------------------------------- the HTTP API (tests/api)


@dataclass
class Api:
    """The app under test, its worker's queue and database, and a token per role."""

    http: httpx.AsyncClient
    client: Client
    engine: Engine
    database_url: str
    task_queue: str
    tokens: dict[str, str] = field(default_factory=dict)

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    async def get(self, path: str, who: str = "platform", **kw: Any) -> httpx.Response:
        return await self.http.get(path, headers=self.auth(who) | kw.pop("headers", {}), **kw)

    async def post(self, path: str, body: Any = None, who: str = "platform", **kw: Any) -> httpx.Response:
        return await self.http.post(path, json=body, headers=self.auth(who) | kw.pop("headers", {}), **kw)


PEOPLE = {
    "platform": ("lending-platform", "platform", None, ()),
    "collector": ("li.wei", "collector", None, ("collectors",)),
    "other_collector": ("wang.fang", "collector", None, ("field-agents",)),
    "supervisor": ("zhang.min", "supervisor", None, ()),
    "agency": ("acme-agent", "agency", "default-agency", ()),
    "other_agency": ("other-agent", "agency", "other-agency", ()),
    "auditor": ("auditor", "auditor", None, ()),
}
"""Token holders by test name: (name, role, agency, queues). The default policy's first calls go
to queue `collectors`, its field visits to `field-agents`."""


def loan_json(loan_id: str, dpd: int = 3, **kw: Any) -> dict[str, Any]:
    """A hand-over body for `POST /v1/loans`: a loan `dpd` days past due in a zone where it is
    daytime now (catch-up contacts happen at once), under the default policy (or `policy`)."""
    policy = kw.pop("policy", "default")
    loan = make_loan(loan_id, dpd=dpd, tz=kw.pop("tz", daytime_zone()), **kw)
    return loan.model_dump(mode="json") | {"policy": policy}


def template_context(loan_id: str, borrower_name: str = "李明", **extra: str) -> dict[str, str]:
    """What a message or task template is rendered with (a loan at DPD 11, 10,600.00 CNY due),
    for tests that call the activities directly; `extra` adds or replaces fields."""
    return {
        "loan_id": loan_id,
        "borrower_name": borrower_name,
        "amount_due": "10,600.00",
        "currency": "CNY",
        "due_date": "2026-11-20",
        "dpd": "11",
        "lender_name": "Example Lending",
        "lender_phone": "400",
        "dispute_contact": "d@x",
        "stage": "early",
        "attempt": "1",
        "agency": "Acme",
        "recall_date": "2027-01-30",
        "principal": "10,000.00",
        "interest": "500.00",
        "fees": "100.00",
        "penalties": "0.00",
    } | extra


# ----------------------------------------------------------------------------- the desk (tests/desk)

CHROMIUM = Path(os.environ.get("DESK_CHROMIUM", "/usr/lib/chromium/chromium"))
"""Debian's Chromium (scripts/ensure-chromium.sh installs it): Playwright drives it through
`executable_path` and never downloads a browser of its own."""
CHROMIUM_ARGS = [
    "--no-sandbox",  # the tests run as root (CI)
    "--headless=new",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no calls home: this machine's network is closed
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--metrics-recording-only",
    "--no-default-browser-check",
]
SCREENSHOTS = TESTS.parent / "docs" / "screenshots"

DESK_PEOPLE = {
    "collector": ("li.wei", "collector", ("collectors",), "en"),
    "other": ("wang.fang", "collector", ("collectors",), "zh"),
    "field": ("zhao.lei", "collector", ("field-agents",), "en"),
    "supervisor": ("zhang.min", "supervisor", (), "en"),
}
"""Desk users by test name: (name, role, queues, language). Their password is DESK_PASSWORD."""
DESK_PASSWORD = "correct horse battery"


@dataclass
class DeskSite:
    """The app (API and desk) served on a real port, its worker's queue and database, and a
    platform token to hand loans over through the API."""

    base_url: str
    client: Client
    engine: Engine
    database_url: str
    task_queue: str
    platform_token: str
    http: httpx.AsyncClient

    def url(self, path: str) -> str:
        return self.base_url + path

    async def hand_over(self, loan_id: str, dpd: int = 5, **kw: Any) -> None:
        """Hand a loan over through the API (a call task follows at once in daytime)."""
        body = loan_json(loan_id, dpd=dpd, **kw)
        response = await self.http.post(
            "/v1/loans", json=body, headers={"Authorization": f"Bearer {self.platform_token}"}
        )
        assert response.status_code == 201, response.text

    async def open_task(self, loan_id: str, timeout: float = 20.0) -> str:
        """The id of the loan's open task, once the loan has made it."""

        async def find() -> str:
            with Session(self.engine) as session:
                row = session.exec(select(TaskRow).where(TaskRow.loan_id == loan_id, TaskRow.status == "open")).first()
            assert row is not None, f"no open task for {loan_id} yet"
            return row.task_id

        return await eventually(find, timeout)


async def desk_sign_in(page: Any, site: DeskSite, who: str, password: str = DESK_PASSWORD) -> None:
    """Sign `who` (a key of DESK_PEOPLE) in through the sign-in form, as a person would."""
    await page.goto(site.url("/desk/login"))
    await page.get_by_label(re.compile("User name|用户名")).fill(DESK_PEOPLE[who][0])
    await page.get_by_label(re.compile("^(Password|密码)$")).fill(password)
    await page.get_by_role("button", name=re.compile("^(Sign in|登录)$")).click()
