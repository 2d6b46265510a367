"""Serving the app inside another process's event loop (`make run` serves the API beside the
worker and the dev server) and the development token `make run` prints."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from api.tokens import create_token, find_token
from db.store import make_engine


async def start_server(app: FastAPI, host: str, port: int) -> tuple[uvicorn.Server, asyncio.Task[None]]:
    """Serve `app` on host:port in this loop; returns once it listens (or raises if it cannot).
    Stop it with `server.should_exit = True` and await the task."""
    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # the port is taken, or the app failed to start: say so
            raise RuntimeError(f"the API did not start on {host}:{port}")
        await asyncio.sleep(0.05)
    return server, task


def dev_token(database_url: str, path: Path) -> str:
    """The development platform token: the one kept in `path` while it is still valid, else a new
    one written there (mode 600). Only for `make run`: a real token is shown once, never kept."""
    if path.is_file():
        token = path.read_text(encoding="utf-8").strip()
        engine = make_engine(database_url, pool_size=1, max_overflow=0)
        try:
            if find_token(engine, token) is not None:
                return token
        finally:
            engine.dispose()
    token = create_token(database_url, "make-run", "platform")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(token + "\n", encoding="utf-8")
    os.chmod(path, 0o600)
    return token
