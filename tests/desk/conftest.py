"""Fixtures of the desk's browser tests: the app (`api.create_app`, which serves the desk too)
served by uvicorn on a free port with a worker on its own queue, a fresh SQLite database and the
desk users of `tests.helpers.DESK_PEOPLE`, shared by a module's tests (each test uses loans of
its own); Debian's Chromium driven by Playwright (one browser for the session, a fresh context,
so fresh cookies, per page)."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.async_api import Browser, async_playwright, expect
from temporalio.testing import WorkflowEnvironment

from api import create_app, create_token
from api.serve import start_server
from db.store import make_engine
from desk.users import create_user
from tests.helpers import CHROMIUM, CHROMIUM_ARGS, DESK_PASSWORD, DESK_PEOPLE, DeskSite, free_port, start_dev_server
from worker import create_worker

DESK_SECRET = "desk-tests-secret-key-0123456789abcdef"
expect.set_options(timeout=30_000)  # a page waits for the loan's answer; a loaded machine is slower


@pytest.fixture(scope="module")
async def server() -> AsyncIterator[WorkflowEnvironment]:
    env = await start_dev_server()
    yield env
    await env.shutdown()


@pytest.fixture(scope="module")
async def site(
    server: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path
) -> AsyncIterator[DeskSite]:
    path = tmp_path_factory.mktemp("desk") / "collections.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    queue = f"desk-{uuid.uuid4()}"
    for name, role, queues, language in DESK_PEOPLE.values():
        create_user(url, name, role, DESK_PASSWORD, queues=queues, language=language)
    app = create_app(
        client=server.client, database_url=url, task_queue=queue, deliver_webhooks=False, desk_secret=DESK_SECRET
    )
    port = free_port()
    engine = make_engine(url)
    token = create_token(url, "lending-platform", "platform")
    async with create_worker(server.client, task_queue=queue, database_url=url):
        uvicorn_server, task = await start_server(app, "127.0.0.1", port)
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            yield DeskSite(
                base_url=base,
                client=server.client,
                engine=engine,
                database_url=url,
                task_queue=queue,
                platform_token=token,
                http=http,
            )
        uvicorn_server.should_exit = True
        await task
    engine.dispose()


@pytest.fixture(scope="session")
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: run `sh scripts/ensure-chromium.sh` (make test does)")
    async with async_playwright() as p:
        found = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield found
        await found.close()


@pytest.fixture
async def new_page(browser: Browser) -> AsyncIterator[Any]:
    """Make pages, each in a context of its own (its own cookies: another person), 1280x800."""
    contexts = []

    async def make(width: int = 1280, height: int = 800) -> Any:
        context = await browser.new_context(viewport={"width": width, "height": height}, locale="en-US")
        contexts.append(context)
        return await context.new_page()

    yield make
    for context in contexts:
        await context.close()
