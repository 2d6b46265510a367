"""Fixtures of the HTTP API tests: the app (`api.create_app`) driven in-process by httpx, a
worker on its own queue and a fresh SQLite database, and a token for each role. The dev server
(real time, with visibility for listings) is shared by a module's tests."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.testing import WorkflowEnvironment

from api import create_app, create_token
from db.store import make_engine
from tests.helpers import PEOPLE, Api, start_dev_server
from worker import create_worker


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture
async def api(server: WorkflowEnvironment, tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Api]:
    path = tmp_path / "collections.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    queue = f"api-{uuid.uuid4()}"
    app = create_app(client=server.client, database_url=url, task_queue=queue)
    engine = make_engine(url)
    tokens = {
        who: create_token(url, name, role, agency, queues=queues)
        for who, (name, role, agency, queues) in PEOPLE.items()
    }
    transport = httpx.ASGITransport(app=app)
    async with (
        create_worker(server.client, task_queue=queue, database_url=url),
        httpx.AsyncClient(transport=transport, base_url="http://api") as http,
    ):
        yield Api(http=http, client=server.client, engine=engine, database_url=url, task_queue=queue, tokens=tokens)
    app.state.api.engine.dispose()
    engine.dispose()
