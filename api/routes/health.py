"""Health for load balancers and orchestrators: `/healthz` (the process answers) and `/readyz`
(Temporal and the database answer: send traffic here)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.schemas import Health
from api.state import ApiState, State, in_thread

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health, "description": "not ready"}})
async def readyz(state: State) -> JSONResponse:
    checks = {"temporal": await _temporal(state), "database": await _database(state)}
    ready = all(v == "ok" for v in checks.values())
    body = Health(status="ok" if ready else "unavailable", checks=checks)
    return JSONResponse(body.model_dump(), status_code=200 if ready else 503)


async def _temporal(state: ApiState) -> str:
    if state.client is None:
        return "not connected"
    try:
        await asyncio.wait_for(state.client.service_client.check_health(timeout=timedelta(seconds=2)), 3)
    except Exception as exc:  # noqa: BLE001  # any failure means "not ready", whatever it is
        return f"unreachable ({type(exc).__name__})"
    return "ok"


def _select_one(state: ApiState) -> None:
    with state.engine.connect() as conn:
        conn.execute(text("SELECT 1"))


async def _database(state: ApiState) -> str:
    try:
        await asyncio.wait_for(in_thread(_select_one, state), 5)
    except Exception as exc:  # noqa: BLE001  # any failure means "not ready"
        return f"unreachable ({type(exc).__name__})"
    return "ok"
