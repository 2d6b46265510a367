"""`make run` end to end on the embedded dev server: it comes up with the sample portfolio,
the CLI starts, pays and queries loans against it, the Web UI answers, Ctrl-C stops it
cleanly, and a restart keeps every loan (state on disk) without starting any twice."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import httpx
import pytest

from infra.settings import ROOT
from tests.helpers import free_port


@pytest.fixture
def run_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": f"127.0.0.1:{free_port()}",
        "TEMPORAL_UI_PORT": str(free_port()),
        "TEMPORAL_DB_FILE": str(tmp_path / "temporal.db"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'collections.db'}",
        "TEMPORAL_TASK_QUEUE": "embedded-test",
        "CODEC_KEY_FILE": str(tmp_path / "codec.key"),  # as make run: a key made on first start
        "API_PORT": str(free_port()),
        "API_DEV_TOKEN_FILE": str(tmp_path / "api-token"),
        "DESK_DEMO_FILE": str(tmp_path / "desk-demo-users"),
        "DESK_SECRET_FILE": str(tmp_path / "desk-secret"),
    }


class Running:
    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env, self.log = env, log
        self.proc = subprocess.Popen(
            [sys.executable, "worker.py", "--embedded"],
            cwd=ROOT,
            env=env,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
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


def negotiate_through_the_cli(env: dict[str, str]) -> None:
    """Each negotiation path driven from the CLI against the running system."""
    soon = (date.today() + timedelta(days=3)).isoformat()
    later = (date.today() + timedelta(days=10)).isoformat()

    def ok(*args: str) -> dict[str, object]:
        result = cli(env, *args)
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        decision = json.loads(result.stdout)
        assert decision["accepted"], (args, decision)
        return decision

    ok("promise", "SAMPLE-003", "100.00", soon)
    again = cli(env, "promise", "SAMPLE-003", "100.00", soon)
    assert again.returncode == 2 and "already open" in json.loads(again.stdout)["reason"]
    ok("plan", "SAMPLE-004", "--instalments", "3", "--first-due", later)
    ok("settle", "SAMPLE-017", "2000.00", later)
    ok("hardship", "SAMPLE-006", "lost job", "--evidence", "DOC-1")
    ok("review", "SAMPLE-006", "resume")
    ok("dispute", "SAMPLE-015", "amount is wrong")
    ok("resolve", "SAMPLE-015", "rejected")
    ok("stop", "SAMPLE-019", "bankruptcy")
    shown = {
        loan: json.loads(cli(env, "status", loan).stdout)
        for loan in ("SAMPLE-003", "SAMPLE-004", "SAMPLE-017", "SAMPLE-015", "SAMPLE-019")
    }
    assert shown["SAMPLE-003"]["arrangement"]["kind"] == "promise"
    assert shown["SAMPLE-004"]["paused_reason"] == "instalment plan"
    assert shown["SAMPLE-017"]["arrangement"]["kind"] == "settlement"
    assert shown["SAMPLE-015"]["placement"] is None  # recalled when the dispute opened
    assert shown["SAMPLE-019"]["stop"]["route"] == "legal_review"
    text = subprocess.run(
        [sys.executable, "starter.py", "status", "SAMPLE-004"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert "arrangement: plan" in text


def the_banners_curl_examples_work(banner: str, env: dict[str, str]) -> str:
    """The banner's two curl commands, run as printed (the shell expands $TOKEN), answer."""
    api = f"http://localhost:{env['API_PORT']}"
    assert f"HTTP API on {api}" in banner
    token = re.search(r"export TOKEN=(\S+)", banner)
    assert token is not None
    lines = banner[banner.index("export TOKEN=") :].splitlines()
    status_curl, post_curl = lines[1].strip(), (lines[2].rstrip(" \\") + " " + lines[3].strip()).strip()
    shell_env = env | {"TOKEN": token.group(1)}
    status = subprocess.run(
        status_curl, shell=True, cwd=ROOT, env=shell_env, capture_output=True, text=True, timeout=30
    )
    assert json.loads(status.stdout)["loan_id"] == "SAMPLE-001", status
    created = subprocess.run(post_curl, shell=True, cwd=ROOT, env=shell_env, capture_output=True, text=True, timeout=30)
    assert json.loads(created.stdout) == {
        "loan_id": "EXAMPLE-001",
        "workflow_id": "collection-EXAMPLE-001",
        "outcome": "started",
    }, created
    assert httpx.get(f"{api}/openapi.json", timeout=10).json()["info"]["title"] == "Loan collections API"
    assert httpx.get(f"{api}/readyz", timeout=10).json()["status"] == "ok"
    return token.group(1)


def the_sample_experiment_runs(banner: str, env: dict[str, str]) -> None:
    """`make run` starts the sample experiment before the hand-over: it runs, and the banner's
    split puts sample loans in its arms (the portfolio is screened with policy auto)."""
    assert "early-call-2026-12/champion" in banner, banner
    listed_experiments = json.loads(cli(env, "experiment", "list").stdout)
    assert any(e["name"] == "early-call-2026-12" and e["status"] == "running" for e in listed_experiments)


def the_banners_desk_users_sign_in(banner: str, env: dict[str, str]) -> dict[str, str]:
    """The banner names the desk's address and a demo collector and supervisor whose printed
    passwords sign in (a plain HTTP client here; the browser tests are tests/desk)."""
    api = f"http://localhost:{env['API_PORT']}"
    assert f"Collectors' desk: {api}/desk/" in banner
    users = dict(re.findall(r"sign in as (\S+) / (\S+)", banner))
    assert set(users) == {"demo.collector", "demo.supervisor"}
    with httpx.Client(base_url=api, follow_redirects=True, timeout=30) as http:
        form = http.get("/desk/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert csrf is not None
        signed_in = http.post(
            "/desk/login", data={"csrf": csrf.group(1), "name": "demo.collector", "password": users["demo.collector"]}
        )
        assert signed_in.status_code == 200 and 'id="me">demo.collector<' in signed_in.text
        assert 'id="take-next"' in signed_in.text
    return users


def test_make_run_serves_the_sample_portfolio_and_the_cli(
    running: Running, run_env: dict[str, str], tmp_path: Path
) -> None:
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

    negotiate_through_the_cli(run_env)
    token = the_banners_curl_examples_work(banner, run_env)
    desk_users = the_banners_desk_users_sign_in(banner, run_env)
    the_sample_experiment_runs(banner, run_env)

    loan_file = tmp_path / "loan.json"
    loan_file.write_text(
        json.dumps(
            {
                "loan_id": "CLI-1",
                "currency": "CNY",
                "principal": "2000.00",
                "interest": "50.00",
                "due_date": "2026-01-20",
                "borrower": {
                    "borrower_id": "B-CLI",
                    "name": "测试",
                    "phone": "+8613800009999",
                    "timezone": "Asia/Shanghai",
                    "language": "zh",
                },
            }
        )
    )
    started = cli(run_env, "start", str(loan_file))
    assert json.loads(started.stdout) == {"workflow_id": "collection-CLI-1"}

    assert running.stop() == 0
    assert "stopped: API, worker and Temporal dev server shut down cleanly" in running.log.read_text()

    again = Running(run_env, tmp_path / "run2.log")
    try:
        banner = again.wait_for("Sample portfolio: 20 loans")
        assert f"export TOKEN={token}" in banner  # the same development token after a restart
        assert the_banners_desk_users_sign_in(banner, run_env) == desk_users  # and the same desk users
        rows = listed(run_env, 22)
        assert len(rows) == 22 and len({r["workflow_id"] for r in rows}) == 22  # nothing started twice
        status = json.loads(cli(run_env, "status", "SAMPLE-002").stdout)
        assert status["paid_total"] == "100.00"  # the state survived the restart
    finally:
        assert again.stop() == 0
