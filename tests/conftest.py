"""Shared fixtures: for each test a fresh time-skipping Temporal server (0.1 s to start; no
test can stall another's clock), a fresh database and a worker on its own queue.

Every test that takes `db_url`, `engine` or `harness` runs twice, `[sqlite]` and
`[postgresql]`, each time on a fresh database already at the migrations' head: a copy of a
SQLite file migrated once per session, or a copy (CREATE DATABASE ... TEMPLATE) of a migrated
PostgreSQL database on a throwaway server (tests/pg.py). Without PostgreSQL the
`[postgresql]` tests fail saying how to get it; SKIP_POSTGRES_TESTS=1 skips them instead."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine
from temporalio.testing import WorkflowEnvironment

from db import migrate
from db.store import make_engine
from tests import pg
from tests.helpers import Harness, start_time_skipping, worker_harness


@pytest.fixture
async def env() -> AsyncIterator[WorkflowEnvironment]:
    environment = await start_time_skipping()
    yield environment
    await environment.shutdown()


BACKENDS = ("sqlite", "postgresql")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite database migrated to head, copied for each test (a copy costs nothing)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "collections.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres() -> Iterator[pg.TestDatabases]:
    """The session's PostgreSQL databases: POSTGRES_TEST_URL's server or a cluster of our own,
    started at the first `[postgresql]` test and stopped at the end."""
    if pg.skipped():
        pytest.skip(f"PostgreSQL tests switched off ({pg.SKIP_VARIABLE}=1)")
    try:
        databases, cluster = pg.connect()
    except pg.PostgresUnavailable as exc:
        pytest.fail(
            f"PostgreSQL is needed for the [postgresql] tests: {exc}.\nTo fix: {pg.HOW_TO_GET_IT}.", pytrace=False
        )
    yield databases
    databases.close()
    if cluster is not None:
        cluster.stop()


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at head on `backend`."""
    if backend == "sqlite":
        path = tmp_path / "collections.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    databases: pg.TestDatabases = request.getfixturevalue("postgres")
    url = databases.create()
    yield url
    databases.drop(url)


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = make_engine(db_url)
    yield engine
    engine.dispose()


@pytest.fixture
async def harness(env: WorkflowEnvironment, db_url: str, engine: Engine) -> AsyncIterator[Harness]:
    """A worker on a fresh task queue and database."""
    async with worker_harness(env, db_url, engine) as harness:
        yield harness
