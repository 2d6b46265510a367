"""`make run` end to end on the embedded dev server: it comes up with the sample portfolio,
the CLI starts, pays and queries loans against it, the Web UI answers, Ctrl-C stops it
cleanly, and a restart keeps every loan (state on disk) without starting any twice."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import config

ROOT = config.ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_UI_PORT": str(free_port()),
        "TEMPORAL_DB_FILE": str(tmp_path / "temporal.db"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'collections.db'}",
        "TEMPORAL_TASK_QUEUE": "embedded-test",
    }


class Running:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py", "--embedded"], cwd=ROOT, env=env,
            stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def wait_for(self, text: str, timeout: float = 90) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.log.read_text(errors="replace")
            if text in out:
                return out
            if self.proc.poll() is not None:
                raise AssertionError(f"make run exited early:\n{out}")
            time.sleep(0.2)
        raise AssertionError(f"no {text!r} within {timeout}s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                os.killpg(self.proc.pid, signal.SIGKILL)


@pytest.fixture
def running(run_env: dict[str, str], tmp_path: Path) -> Iterator[Running]:
    r = Running(run_env, tmp_path / "run1.log")
    try:
        yield r
    finally:
        if r.proc.poll() is None:
            r.stop()


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "starter.py", "--json", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def listed(env: dict[str, str], expect: int) -> list[dict[str, str]]:
    """Visibility is eventually consistent: ask until `expect` loans show up."""
    for _ in range(50):
        rows = json.loads(cli(env, "list", "--status", "running").stdout)
        if len(rows) >= expect:
            return rows
        time.sleep(0.2)
    return rows


def test_make_run_serves_the_sample_portfolio_and_the_cli(running: Running, run_env: dict[str, str], tmp_path: Path) -> None:
    banner = running.wait_for("Sample portfolio: 20 loans")
    assert f"Web UI: http://localhost:{run_env['TEMPORAL_UI_PORT']}" in banner
    assert httpx.get(f"http://127.0.0.1:{run_env['TEMPORAL_UI_PORT']}/", timeout=10).status_code == 200

    rows = listed(run_env, 20)
    assert sorted(r["loan_id"] for r in rows) == [f"SAMPLE-{n:03d}" for n in range(1, 21)]

    status = json.loads(cli(run_env, "status", "SAMPLE-018").stdout)
    assert (status["stage"], status["days_past_due"]) == ("late", 121)

    paid = cli(run_env, "pay", "SAMPLE-002", "100.00")
    assert paid.returncode == 0, paid.stderr
    receipt = json.loads(paid.stdout)
    assert receipt["paid_total"] == "100.00" and receipt["allocation"]["fees"] == "20.00"
    bad = cli(run_env, "pay", "SAMPLE-002", "-5")
    assert bad.returncode == 2 and "must be positive" in bad.stderr

    loan_file = tmp_path / "loan.json"
    loan_file.write_text(json.dumps({
        "loan_id": "CLI-1", "currency": "CNY", "principal": "2000.00", "interest": "50.00",
        "due_date": "2026-01-20", "borrower": {"borrower_id": "B-CLI", "name": "测试", "phone": "+8613800009999",
                                               "timezone": "Asia/Shanghai", "language": "zh"},
    }))
    started = cli(run_env, "start", str(loan_file))
    assert json.loads(started.stdout) == {"workflow_id": "collection-CLI-1"}

    assert running.stop() == 0
    assert "stopped: worker and Temporal dev server shut down cleanly" in running.log.read_text()

    again = Running(run_env, tmp_path / "run2.log")
    try:
        again.wait_for("Sample portfolio: 20 loans")
        rows = listed(run_env, 21)
        assert len(rows) == 21 and len({r["workflow_id"] for r in rows}) == 21  # nothing started twice
        status = json.loads(cli(run_env, "status", "SAMPLE-002").stdout)
        assert status["paid_total"] == "100.00"  # the state survived the restart
    finally:
        assert again.stop() == 0
