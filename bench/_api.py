"""The HTTP API benchmarks' deployment (bench/api_payments.py, bench/api_status.py), as in
production: the embedded dev server, the project's worker in a process of its own and the API
(`python -m api`, uvicorn) in another, configured only through its environment (DATABASE_URL,
TEMPORAL_ADDRESS, TEMPORAL_TASK_QUEUE, API_PORT), with a platform token from `api.tokens`.
In-process ASGI transport (as tests/api uses) would hide what an API call really costs: the
HTTP hop, the API process's own event loop and its share of the two cores.

Run as a script (`python bench/_api.py` with BENCH_API_WORKER set), this module is the worker
child: `start_worker_process` starts it and waits for its "ready".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import _common

CHILD_ENV = "BENCH_API_WORKER"

KEEPALIVE_EXPIRY = 3.0
"""Seconds the benchmarks' httpx keeps an idle connection: under uvicorn's 5 s keep-alive, so the
client never reuses a connection the server is closing at that moment (an httpx ReadError seen
once on the first request after the pause between two phases)."""


# ----------------------------------------------------------------------------- the worker child


async def worker_child(spec: dict[str, Any]) -> None:
    """The project's worker (`worker.create_worker`) on the benchmark's queue and database."""
    import logging

    from infra.temporal import connect
    from worker import create_worker, until_stopped

    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    client = await connect(spec["address"], spec["namespace"])
    async with create_worker(client, task_queue=spec["queue"], database_url=spec["db_url"]):
        print("ready", flush=True)
        await until_stopped()


# ----------------------------------------------------------------------------- the stack


@dataclass
class Stack:
    """What a benchmark drives: the bench's own Temporal client (for direct calls and starts),
    the API's address and token, the worker's queue and the processes to measure."""

    client: Any
    base_url: str
    token: str
    queue: str
    db_file: Path
    worker_pid: int
    api_pid: int

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def pids(self) -> dict[str, list[int]]:
        """Processes by role; the server is whatever child of this process is neither of the others."""
        server = [p for p in _common.child_pids() if p not in (self.worker_pid, self.api_pid)]
        return {"bench": [os.getpid()], "api": [self.api_pid], "worker": [self.worker_pid], "server": server}


def free_port() -> int:
    """A port nobody listens on now (the API binds it a moment later; a race we accept here)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def _wait_ready(base_url: str, api: asyncio.subprocess.Process, log: Path, timeout: float) -> None:
    """Until /readyz says Temporal and the database answer (the API connects in its lifespan)."""
    import httpx

    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as http:
        while time.monotonic() < deadline:
            if api.returncode is not None:
                raise RuntimeError(f"the API process ended ({api.returncode}) before it was ready:\n{_tail(log)}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get("/readyz")).status_code == 200:
                    return
            await asyncio.sleep(0.2)
    raise RuntimeError(f"the API was not ready within {timeout:.0f} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 20) -> str:
    """The end of a child's log (the file goes with the temporary directory)."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


async def _stop(child: asyncio.subprocess.Process, timeout: float = 30) -> None:
    if child.returncode is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.wait(), timeout=timeout)
    except TimeoutError:
        child.kill()
        await child.wait()


@contextlib.asynccontextmanager
async def api_stack(tmp: Path) -> AsyncIterator[Stack]:
    """Dev server, worker process and API process on a fresh SQLite database under `tmp`.
    `_common.configure` must have run: both children inherit the codec key through the
    environment. Their logs are written under `tmp` (and go with it); an API that does not come
    up is reported with the end of its log."""
    from api.tokens import create_token

    db_file = tmp / "collections.db"
    url = f"sqlite:///{db_file}"
    _common.progress(f"starting the dev server (state in {tmp})")
    env = await _common.start_dev_server(tmp)
    async with env:
        client = env.client
        address = client.service_client.config.target_host
        queue = f"bench-api-{uuid.uuid4().hex[:8]}"
        spec = {"address": address, "namespace": client.namespace, "queue": queue, "db_url": url}
        logs = {"worker": tmp / "worker.log", "api": tmp / "api.log"}
        _common.progress("starting the worker process")
        worker = await _common.start_worker_process(
            Path(__file__).resolve(), {**os.environ, CHILD_ENV: json.dumps(spec)}, logs["worker"], timeout=90
        )
        api: asyncio.subprocess.Process | None = None
        try:
            token = create_token(url, "bench", "platform")
            port = free_port()
            api_env = {
                **os.environ,
                "DATABASE_URL": url,
                "TEMPORAL_ADDRESS": address,
                "TEMPORAL_NAMESPACE": client.namespace,
                "TEMPORAL_TASK_QUEUE": queue,
                "API_HOST": "127.0.0.1",
                "API_PORT": str(port),
            }
            _common.progress(f"starting the API process (python -m api, port {port})")
            with logs["api"].open("ab") as out:  # a file, not a pipe: nothing can fill and block it
                api = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "api", env=api_env, cwd=_common.ROOT, stdout=out, stderr=out
                )
            base_url = f"http://127.0.0.1:{port}"
            await _wait_ready(base_url, api, logs["api"], timeout=90)
            yield Stack(
                client=client,
                base_url=base_url,
                token=token,
                queue=queue,
                db_file=db_file,
                worker_pid=worker.pid,
                api_pid=api.pid,
            )
        finally:
            if api is not None:
                await _stop(api)
            await _stop(worker)


# ----------------------------------------------------------------------------- loans and measuring


async def start_loans(stack: Stack, ids: Sequence[str], concurrency: int = 50) -> float:
    """Start these loans (DPD 0: asleep until DPD 1 once registered) directly, and wait until each
    has registered (its `loans` row: the last thing before its first sleep); the wall seconds."""
    import starter
    from tests.helpers import make_loan

    async with _common.LoanRegistrations(stack.db_file) as regs:

        async def one(i: int) -> None:
            await starter.start_collection(stack.client, make_loan(ids[i]), task_queue=stack.queue)
            await regs.wait(ids[i])

        wall, _ = await _common.bounded(len(ids), concurrency, one)
    return wall


async def wait_idle(pids: Sequence[int], quiet_cpu: float = 0.05, quiet_for: int = 2, timeout: float = 60) -> float:
    """Wait until these processes together used under `quiet_cpu` CPU seconds in each of
    `quiet_for` consecutive seconds (the worker done with the last phase's effects), so a phase
    does not pay for the one before; the seconds waited."""

    def total() -> float:
        found = 0.0
        for pid in pids:
            with contextlib.suppress(OSError):
                found += _common.cpu_seconds(pid)
        return found

    t0, quiet, last = time.monotonic(), 0, total()
    while quiet < quiet_for and time.monotonic() - t0 < timeout:
        await asyncio.sleep(1)
        now = total()
        quiet = quiet + 1 if now - last < quiet_cpu else 0
        last = now
    return time.monotonic() - t0


class ProcessCpu:
    """CPU of each process role (bench, api, worker, server) between creation and `describe`:
    which process a phase kept busy."""

    def __init__(self, pids: dict[str, list[int]]) -> None:
        self._pids = pids
        self._t0 = time.perf_counter()
        self._cpu0 = self._read()

    def _read(self) -> dict[str, float]:
        found: dict[str, float] = {}
        for role, pids in self._pids.items():
            found[role] = 0.0
            for pid in pids:
                with contextlib.suppress(OSError):
                    found[role] += _common.cpu_seconds(pid)
        return found

    def read(self) -> tuple[float, dict[str, float]]:
        """(wall seconds, CPU seconds per role) since creation."""
        wall = time.perf_counter() - self._t0
        now = self._read()
        return wall, {role: now[role] - self._cpu0[role] for role in self._pids}

    @staticmethod
    def describe(wall: float, seconds: dict[str, float]) -> str:
        """Percent of one core per role over `wall`, and their sum against the machine's."""
        parts = ", ".join(f"{role} {cpu / wall * 100:.0f}%" for role, cpu in seconds.items())
        total = sum(seconds.values()) / wall * 100
        return f"{parts} (sum {total:.0f}% of {len(os.sched_getaffinity(0)) * 100}%)"


async def history_length(client: Any, workflow_id: str) -> int:
    """The number of events in the workflow's current run."""
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return len(history.events)


if __name__ == "__main__":
    asyncio.run(worker_child(json.loads(os.environ[CHILD_ENV])))
    _common.finish(0)
