"""Fixtures of the tests on the embedded dev server (real time, with visibility and schedules)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from temporalio.testing import WorkflowEnvironment

from tests.helpers import start_dev_server


@pytest.fixture
async def dev_env() -> AsyncIterator[WorkflowEnvironment]:
    """A fresh embedded dev server with the project's data converter."""
    env = await start_dev_server()
    yield env
    await env.shutdown()
