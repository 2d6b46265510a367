"""The API under generated requests (schemathesis, from its own OpenAPI document), with a worker
behind it: no answer is a 5xx, every answer matches the document (status code, content type,
headers, body schema) and every request that breaks the schema is refused with a 4xx. Run once
with a platform token and once with a supervisor's, so both roles' operations are reached."""

from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from temporalio.testing import WorkflowEnvironment

from activities.admin import ensure_search_attributes
from api import create_app, create_token
from api.serve import start_server
from db import migrate
from tests.helpers import free_port
from worker import create_worker

CHECKS = ",".join(
    (
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
    )
)


@pytest.fixture
async def served(server: WorkflowEnvironment, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    url = f"sqlite:///{tmp_path / 'collections.db'}"
    migrate.upgrade(url)
    queue = f"fuzz-{uuid.uuid4()}"
    port = free_port()
    app = create_app(client=server.client, database_url=url, task_queue=queue)
    await ensure_search_attributes(server.client)  # as a worker does at start (listings need them)
    async with create_worker(server.client, task_queue=queue, database_url=url):
        http, serving = await start_server(app, "127.0.0.1", port)
        try:
            yield f"http://127.0.0.1:{port}", url
        finally:
            http.should_exit = True
            await serving


@pytest.mark.parametrize("role", ["platform", "supervisor"])
async def test_generated_requests_get_no_5xx_and_answers_match_the_schema(
    served: tuple[str, str], role: str, tmp_path: Path
) -> None:
    base, database_url = served
    token = create_token(database_url, f"fuzz-{role}", role)
    cli = Path(sys.executable).parent / "st"
    proc = await asyncio.create_subprocess_exec(
        str(cli),
        "run",
        f"{base}/openapi.json",
        "--checks",
        CHECKS,
        "--header",
        f"Authorization: Bearer {token}",
        "--max-examples",
        "15",
        "--phases",
        "examples,coverage,fuzzing",
        "--seed",
        "20261207",
        "--generation-deterministic",
        "--request-timeout",
        "30",
        "--workers",  # one: hypothesis describes lambdas with ast.parse, which on CPython 3.11.7 fails when two
        "1",  # threads parse at once ("AST constructor recursion depth mismatch", CPython gh-106905)
        "--no-color",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=tmp_path,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), timeout=600)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-12000:]
