"""Process helpers for the entry points: where the virtualenv's binaries are, and an exit that
the Temporal core's threads cannot turn into a crash."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path


def venv_binary(name: str) -> str:
    """Path of a binary installed into this virtualenv (temporal, temporal-test-server), so
    the SDK never tries to download a server."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found; install the project (pip install -e .)")
    return found


def exit_process(code: int) -> None:
    """Exit without interpreter finalisation. The Temporal core's threads can still call into
    Python while the interpreter tears down and abort it ("PyGILState_Release"), turning a
    finished command into exit code -6; everything is flushed and closed by now."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
