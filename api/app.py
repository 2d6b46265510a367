"""The HTTP API as an ASGI app: `create_app(client=..., database_url=...)`. A thin adapter over
the client functions the CLI uses (`client`): it validates, checks who may do what (`api.auth`),
calls them and answers; no business rule lives here. Several replicas can serve behind a load
balancer: they share nothing but Temporal and the database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from temporalio.client import Client

from api import problems
from api.routes import experiment_reports, experiments, health, loans, negotiation, partners, payments, tasks, webhooks
from api.state import ApiState
from api.webhooks import run_dispatcher
from db import migrate
from db.store import make_engine
from infra import temporal
from infra.settings import settings

DESCRIPTION = """Hand loans over, post payments, negotiate, work tasks, report as a partner and
read the audit record. Every call but /healthz and /readyz needs `Authorization: Bearer <token>`
(`starter.py token create NAME --role ROLE`). Errors are `application/problem+json`.
Money is a decimal string with its ISO 4217 currency beside it; times are ISO 8601 with an offset."""


def create_app(
    client: Client | None = None,
    database_url: str | None = None,
    *,
    task_queue: str | None = None,
    deliver_webhooks: bool | None = None,
    serve_desk: bool = True,
    desk_secret: str | None = None,
) -> FastAPI:
    """The API app. `client`: the Temporal client to use (None: connect to the configured
    server when the app starts). `database_url`: the project's database (None: DATABASE_URL);
    its schema is brought up to date first. `task_queue`: where new loans go (None: the
    TEMPORAL_TASK_QUEUE setting). `deliver_webhooks`: run the webhook dispatcher while the app
    runs (its lifespan; None: the WEBHOOK_DISPATCHER setting). `serve_desk`: serve the
    collectors' desk under /desk too (`desk.app.mount`; `desk_secret` signs its cookies, None:
    DESK_SECRET_KEY or the key file). The worker runs apart."""
    cfg = settings()
    url = database_url or cfg.database_url
    migrate.upgrade(url)
    engine = make_engine(url, cfg.database_pool_size, cfg.database_max_overflow)
    state = ApiState(engine=engine, settings=cfg, database_url=url, client=client, task_queue=task_queue)

    dispatch = cfg.webhook_dispatcher if deliver_webhooks is None else deliver_webhooks

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if state.client is None:
            state.client = await temporal.connect()
        stop = asyncio.Event()
        dispatcher = asyncio.create_task(run_dispatcher(engine, stop)) if dispatch else None
        try:
            yield
        finally:
            stop.set()
            if dispatcher is not None:
                await dispatcher
            engine.dispose()

    app = FastAPI(
        title="Loan collections API",
        version="1",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.api = state
    problems.install(app)
    for module in (health, loans, payments, negotiation, tasks, partners, webhooks, experiments, experiment_reports):
        app.include_router(module.router)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    if serve_desk:
        from desk.app import mount  # the one import of desk from api: pyproject.toml, "layers"

        mount(app, state, secret=desk_secret)
    return app


PROBLEM_REF = "#/components/schemas/Problem"


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with error bodies under application/problem+json (the type they are
    sent as) and the bearer token declared, so /docs can send it and generated clients know it."""
    if app.openapi_schema:
        return app.openapi_schema
    doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "a token from `starter.py token create`"}
    }
    for path, operations in doc["paths"].items():
        for operation in operations.values():
            if not path.startswith("/v1/"):
                continue
            operation["security"] = [{"bearer": []}]
            if "requestBody" in operation:  # a body that is not JSON at all (FastAPI answers 400)
                operation["responses"].setdefault("400", {"description": problems.TITLES[400], "content": {}})
                operation["responses"]["400"]["content"] = {problems.MEDIA_TYPE: {}}
            for code, response in operation.get("responses", {}).items():
                content = response.get("content", {})
                if code.isdigit() and int(code) >= 400 and problems.MEDIA_TYPE in content:
                    schema = content.pop("application/json", {}).get("schema")
                    content[problems.MEDIA_TYPE] = {"schema": schema or {"$ref": PROBLEM_REF}}
    app.openapi_schema = doc
    return doc
