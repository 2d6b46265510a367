"""Shared fixtures: for each test a fresh time-skipping Temporal server (0.1 s to start; no
test can stall another's clock), a fresh SQLite database and a worker on its own queue."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

import config
from db.store import make_engine
from models import Borrower, OverdueLoan
from models.schedule import local_date
from tests.support import Harness
from worker import create_worker

TZ = "Asia/Shanghai"


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=config.venv_binary("temporal-test-server"),
        data_converter=config.DATA_CONVERTER,
    )
    yield environment
    await environment.shutdown()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'collections.db'}"


@pytest.fixture
def engine(db_url: str) -> Engine:
    return make_engine(db_url)


@pytest.fixture
async def harness(env: WorkflowEnvironment, db_url: str, engine: Engine) -> AsyncIterator[Harness]:
    """A worker on a fresh task queue and database."""
    queue = f"test-{uuid.uuid4()}"
    async with create_worker(env.client, task_queue=queue, database_url=db_url):
        yield Harness(env=env, engine=engine, task_queue=queue)


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
    today = local_date(now or datetime.now(timezone.utc), tz)
    return OverdueLoan(
        loan_id=loan_id or f"L-{uuid.uuid4().hex[:10]}",
        borrower=Borrower(
            borrower_id=f"B-{uuid.uuid4().hex[:8]}", name="李明", phone=phone, email=email,
            address=address, timezone=tz, language="zh",
        ),
        currency=currency,
        principal=Decimal(principal),
        interest=Decimal(interest),
        fees=Decimal(fees),
        due_date=today - timedelta(days=dpd),
    )


def due(dpd: int) -> date:
    return local_date(datetime.now(timezone.utc), TZ) - timedelta(days=dpd)

