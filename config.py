"""Settings and the Temporal plumbing every process shares (one data converter, one connect).

Settings come from the environment (or a `.env` file) with local defaults, so `make run`
needs no configuration and production sets only what differs.
"""

from __future__ import annotations

import os
import shutil
import sys
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic_settings import BaseSettings, SettingsConfigDict
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

ROOT = Path(__file__).resolve().parent
DATA_CONVERTER = pydantic_data_converter
"""The one converter for clients and workers: pydantic models, Decimal and datetime intact."""

WORKFLOW_ID_PREFIX = "collection-"


class Settings(BaseSettings):
    """Process settings; each field reads the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_task_queue: str = "collections"
    temporal_ui_port: int = 8233
    temporal_db_file: Path = ROOT / "var" / "temporal.db"
    database_url: str = f"sqlite:///{ROOT / 'var' / 'collections.db'}"
    db_pool_size: int = 10
    policies_dir: Path = ROOT / "policies"
    templates_dir: Path = ROOT / "templates"
    channel_adapter: Literal["outbox", "webhook"] = "outbox"
    webhook_url: str = ""
    webhook_timeout_seconds: float = 10.0
    activity_threads: int = 32
    max_cached_workflows: int = 2000


@lru_cache
def settings() -> Settings:
    return Settings()


_process_task_queue: list[str] = []


def remember_task_queue(name: str) -> None:
    """Record the task queue a worker of this process serves, so that starters in the same
    process (tests, `make run`) send loans to it without being told again."""
    _process_task_queue[:] = [name]


def task_queue(explicit: str | None = None) -> str:
    """The task queue to use: the one given, else this process's worker's, else the setting."""
    return explicit or (_process_task_queue[0] if _process_task_queue else settings().temporal_task_queue)


def with_converter(client: Client) -> Client:
    """`client` itself if it already uses the project's converter, else a copy that does
    (a test environment's client comes with the SDK's default converter)."""
    if client.data_converter.payload_converter_class is DATA_CONVERTER.payload_converter_class:
        return client
    config = client.config()
    config["data_converter"] = DATA_CONVERTER
    return Client(**config)


def workflow_id(loan_id: str) -> str:
    """The collection workflow id of a loan: one running collection per loan."""
    return f"{WORKFLOW_ID_PREFIX}{loan_id}"


def venv_binary(name: str) -> str:
    """Path of a binary installed into this virtualenv (temporal, temporal-test-server), so
    the SDK never tries to download a server."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install the project (pip install -e .)")
    return found


async def connect(address: str | None = None, namespace: str | None = None) -> Client:
    """A Temporal client with the project's data converter."""
    cfg = settings()
    return await Client.connect(
        address or cfg.temporal_address,
        namespace=namespace or cfg.temporal_namespace,
        data_converter=DATA_CONVERTER,
    )


def exit_process(code: int) -> None:
    """Exit without interpreter finalisation. The Temporal core's threads can still call into
    Python while the interpreter tears down and abort it ("PyGILState_Release"), turning a
    finished command into exit code -6; everything is flushed and closed by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
