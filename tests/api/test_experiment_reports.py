"""`GET /v1/experiments/{name}/report`: an experiment's live figures as JSON for supervisors,
the platform and auditors (not collectors or agencies), money as decimal strings, 404 as
problem+json for an experiment without loans, 422 for a period that ends before it starts.

No Temporal here: the route reads the database only, so the app runs without a client (its
lifespan, which would connect, is not started by httpx's in-process transport). The screening's
columns are added as tests/db/test_lab_live.py does, until migration 0006 is merged."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text
from sqlmodel import Session

from api import create_app, create_token
from db.store import make_engine
from db.tables import BorrowerRow, LedgerEntry, LoanRow
from lab.live import has_experiments

T0 = datetime.now(UTC) - timedelta(days=100)


def seed(url: str) -> None:
    engine = make_engine(url)
    if not has_experiments(engine):
        with engine.begin() as c:
            for name in ("segment", "experiment", "arm"):
                c.execute(text(f"ALTER TABLE loans ADD COLUMN {name} VARCHAR(64) NULL"))
    with Session(engine) as s:
        for i in range(80):
            loan_id = f"E-{i:03}"
            s.add(BorrowerRow(borrower_id=f"B-{loan_id}", name="x", timezone="Asia/Shanghai", language="zh"))
            s.add(
                LoanRow(
                    loan_id=loan_id,
                    borrower_id=f"B-{loan_id}",
                    currency="CNY",
                    principal=Decimal("1000.00"),
                    interest=Decimal(0),
                    fees=Decimal(0),
                    penalties=Decimal(0),
                    due_date=(T0 - timedelta(days=3)).date(),
                    created_at=T0,
                    stage="early",
                )
            )
            if i % 2 or i % 3 == 0:
                s.add(
                    LedgerEntry(
                        key=f"{loan_id}/pay",
                        loan_id=loan_id,
                        kind="payment",
                        amount=Decimal("250.00"),
                        currency="CNY",
                        at=T0 + timedelta(days=5 + i),
                    )
                )
        s.commit()
    with engine.begin() as c:
        c.execute(
            text(
                "UPDATE loans SET experiment = 'early', segment = 'prime', arm = CASE WHEN "
                "CAST(SUBSTR(loan_id, 3) AS INTEGER) % 2 = 1 THEN 'champion' ELSE 'early-call' END"
            )
        )
    engine.dispose()


@pytest.fixture
async def http(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[tuple[httpx.AsyncClient, str]]:
    path = tmp_path / "collections.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    seed(url)
    app = create_app(database_url=url, deliver_webhooks=False, serve_desk=False)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        yield client, url
    app.state.api.engine.dispose()


def bearer(url: str, role: str) -> dict[str, str]:
    agency = "acme" if role == "agency" else None
    queues = ["collectors"] if role == "collector" else []
    return {"Authorization": f"Bearer {create_token(url, f'{role}-1', role, agency, queues=queues)}"}


async def test_supervisor_gets_the_figures(http: tuple[httpx.AsyncClient, str]) -> None:
    client, url = http
    answer = await client.get("/v1/experiments/early/report", headers=bearer(url, "supervisor"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["experiment"] == "early" and body["loans"] == 80
    arms = {a["arm"]: a for a in body["arms"]}
    assert set(arms) == {"champion", "early-call"}
    champion, challenger = arms["champion"], arms["early-call"]
    assert champion["loans"] == 40 and champion["handover_balance"] == "40000.00"
    assert champion["recovered"] == "10000.00" and champion["recovery_rate"] == pytest.approx(0.25)
    assert Decimal(challenger["recovered"]) == Decimal("250.00") * 14
    assert champion["recovery_rate_ci"]["low"] <= 0.25 <= champion["recovery_rate_ci"]["high"]
    assert {d["metric"] for d in body["differences"]} == {"recovery_rate", "cure_rate", "cost_per_unit"}
    assert any("recovers" in s and "than the champion" in s for s in body["summary"])


@pytest.mark.parametrize("role", ["platform", "auditor"])
async def test_platform_and_auditor_may_read(http: tuple[httpx.AsyncClient, str], role: str) -> None:
    client, url = http
    answer = await client.get("/v1/experiments/early/report", headers=bearer(url, role))
    assert answer.status_code == 200


@pytest.mark.parametrize("role", ["collector", "agency"])
async def test_collectors_and_agencies_may_not(http: tuple[httpx.AsyncClient, str], role: str) -> None:
    client, url = http
    answer = await client.get("/v1/experiments/early/report", headers=bearer(url, role))
    assert answer.status_code == 403
    assert answer.headers["content-type"].startswith("application/problem+json")


async def test_unknown_experiment_and_bad_period(http: tuple[httpx.AsyncClient, str]) -> None:
    client, url = http
    headers = bearer(url, "supervisor")
    missing = await client.get("/v1/experiments/nothing/report", headers=headers)
    assert missing.status_code == 404
    assert missing.headers["content-type"].startswith("application/problem+json")
    assert "no loans" in missing.json()["detail"]
    empty = await client.get("/v1/experiments/early/report?to=2000-01-01", headers=headers)
    assert empty.status_code == 404
    backwards = await client.get("/v1/experiments/early/report?from=2026-02-01&to=2026-01-01", headers=headers)
    assert backwards.status_code == 422
    bad = await client.get("/v1/experiments/Bad%20Name/report", headers=headers)
    assert bad.status_code == 422
