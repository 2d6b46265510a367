"""What every request handler shares: the Temporal client, the database engine and the settings
(one `ApiState` per app, on `app.state.api`). Nothing else is shared between API replicas."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio.to_thread
from fastapi import Depends, Request
from sqlalchemy import Engine
from temporalio.client import Client

from infra.settings import Settings


@dataclass
class ApiState:
    engine: Engine
    settings: Settings
    database_url: str
    client: Client | None = None
    task_queue: str | None = None
    token_cache: dict[str, tuple[float, Any]] = field(default_factory=dict)

    @property
    def temporal(self) -> Client:
        if self.client is None:
            raise RuntimeError("the API's Temporal client is not connected yet")
        return self.client


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.api
    return state


State = Annotated[ApiState, Depends(api_state)]


async def in_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking database call off the event loop (SQLAlchemy here is synchronous)."""
    return await anyio.to_thread.run_sync(fn, *args)
