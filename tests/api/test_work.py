"""People's work through the HTTP API: who may do what (401, 403, 404 for an agency), tasks
listed by priority, claimed by one collector at a time and closed with an outcome, negotiation
answered 201 or 422 with the loan's reason, the actor on the timeline and in the audit record,
partners' reports and contact requests, the audit record as JSON and CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session

from api.tokens import create_token, revoke_token
from db.desk_marks import LoanMark
from models.schedule import local_date
from tests.helpers import Api, daytime_zone, eventually, loan_json


async def with_call_task(api: Api, loan_id: str) -> dict[str, Any]:
    """A loan at DPD 5 in contact hours: its first call task is created at once."""
    assert (await api.post("/v1/loans", loan_json(loan_id, dpd=5))).status_code == 201

    async def task() -> dict[str, Any]:
        listed = (await api.get("/v1/tasks", "supervisor")).json()["tasks"]
        mine = [t for t in listed if t["loan_id"] == loan_id]
        assert mine, listed
        return mine[0]

    return await eventually(task)


async def test_no_token_a_bad_token_and_a_revoked_token_are_401(api: Api) -> None:
    assert (await api.http.get("/v1/loans/X")).status_code == 401
    bad = await api.http.get("/v1/loans/X", headers={"Authorization": "Bearer lc_nope_nope"})
    assert bad.status_code == 401 and bad.headers["content-type"] == "application/problem+json"
    token_id = api.tokens["auditor"].split("_")[1]
    assert revoke_token(api.database_url, token_id)
    api.http._transport.app.state.api.token_cache.clear()  # type: ignore[attr-defined]
    assert (await api.get("/v1/loans/X", "auditor")).status_code == 401


async def test_roles_are_kept_to_their_operations(api: Api) -> None:
    task = await with_call_task(api, "R-1")
    body = {"amount": "100.00", "currency": "CNY", "paid_at": "2026-12-01T10:00:00+08:00"}
    for who in ("collector", "supervisor", "agency", "auditor"):
        response = await api.post("/v1/loans/R-1/payments", body, who, headers={"Idempotency-Key": f"k-{who}"})
        assert response.status_code == 403, (who, response.text)
    promise = {"amount": "500.00", "date": str(local_date(datetime.now(UTC), daytime_zone()) + timedelta(days=3))}
    assert (await api.post("/v1/loans/R-1/promises", promise, "platform")).status_code == 403
    assert (await api.post("/v1/loans/R-1/promises", promise, "auditor")).status_code == 403
    assert (await api.get("/v1/loans", who="collector")).status_code == 403
    assert (await api.get("/v1/loans/R-1/audit", who="platform")).status_code == 403
    # a collector sees loans with a task in their queues, not others; an agency sees nothing not placed with it
    assert task["queue"] == "collectors"
    assert (await api.get("/v1/loans/R-1", "collector")).status_code == 200
    assert (await api.get("/v1/loans/R-1", "other_collector")).status_code == 403
    assert (await api.get("/v1/loans/R-1", "agency")).status_code == 404
    assert (await api.get(f"/v1/tasks?queue={task['queue']}", "other_collector")).status_code == 403
    assert (await api.post(f"/v1/tasks/{task['task_id']}/claim", None, "other_collector")).status_code == 403


async def test_a_task_is_claimed_once_and_closed_with_its_outcome(api: Api) -> None:
    task = await with_call_task(api, "T-1")
    assert task["status"] == "open" and task["assignee"] == ""
    mine = await api.post(f"/v1/tasks/{task['task_id']}/claim", None, "collector")
    assert mine.status_code == 200 and mine.json()["assignee"] == "li.wei"
    extra = await api.get("/v1/tasks", "collector", params={"queue": "collectors"})
    assert [t["task_id"] for t in extra.json()["tasks"] if t["loan_id"] == "T-1"] == [task["task_id"]]
    assert (await api.post(f"/v1/tasks/{task['task_id']}/claim", None, "collector")).status_code == 200
    given = await api.post(f"/v1/tasks/{task['task_id']}/claim", {"assignee": "x"}, "collector")
    assert given.status_code == 403
    outcome = {"outcome": "promised", "note": "will pay Friday", "recording_ref": "rec-1"}
    done = await api.post(f"/v1/tasks/{task['task_id']}/outcome", outcome, "collector")
    assert done.status_code == 200, done.text
    assert all(t["task_id"] != task["task_id"] for t in done.json()["open_tasks"])

    async def closed_row() -> None:
        closed = (await api.get("/v1/tasks", "supervisor", params={"status": "closed"})).json()["tasks"]
        assert [t["outcome"] for t in closed if t["task_id"] == task["task_id"]] == ["promised"]

    await eventually(closed_row)
    again = await api.post(f"/v1/tasks/{task['task_id']}/outcome", outcome, "collector")
    assert again.status_code == 409


async def test_two_collectors_claiming_at_once_get_one_task(api: Api) -> None:
    task = await with_call_task(api, "T-2")
    second = create_token(api.database_url, "chen.jie", "collector", queues=["collectors"])
    api.tokens["second"] = second
    answers = await asyncio.gather(
        api.post(f"/v1/tasks/{task['task_id']}/claim", None, "collector"),
        api.post(f"/v1/tasks/{task['task_id']}/claim", None, "second"),
    )
    assert sorted(r.status_code for r in answers) == [200, 409]


async def test_negotiation_is_answered_with_the_decision_and_names_the_collector(api: Api) -> None:
    await with_call_task(api, "N-1")
    today = local_date(datetime.now(UTC), daytime_zone())
    promise = {"amount": "500.00", "date": str(today + timedelta(days=3)), "made_by": "someone-else"}
    accepted = await api.post("/v1/loans/N-1/promises", promise, "collector")
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["accepted"] is True
    with Session(api.engine) as session:  # the desk's queue orders by the promise's date at once
        mark = session.get(LoanMark, "N-1")
        assert mark is not None and str(mark.next_due) == promise["date"]
    refused = await api.post("/v1/loans/N-1/promises", promise, "collector")  # one promise at a time
    assert refused.status_code == 422 and refused.json()["reason"]
    plan = {"instalments": 99, "first_due": str(today + timedelta(days=5))}
    too_long = await api.post("/v1/loans/N-1/plans", plan, "supervisor")
    assert too_long.status_code == 422 and too_long.json()["reason"]
    status = (await api.get("/v1/loans/N-1", "supervisor")).json()
    assert status["arrangement"]["kind"] == "promise"
    assert any("collector:li.wei" in e["detail"] for e in status["timeline"] if e["action"] == "promise")
    assert not any("someone-else" in e["detail"] for e in status["timeline"])

    async def audited() -> None:
        record = (await api.get("/v1/loans/N-1/audit", "auditor")).json()
        assert record["chain"]["intact"] is True
        assert any(e["actor"] == "collector:li.wei" for e in record["entries"])

    await eventually(audited)
    as_csv = await api.get("/v1/loans/N-1/audit", "supervisor", headers={"Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.headers["x-chain-intact"] == "true"
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert rows and rows[0]["seq"] == "1"


async def test_an_agency_reports_and_asks_the_guard_only_for_its_placements(api: Api) -> None:
    assert (await api.post("/v1/loans", loan_json("A-1", dpd=100))).status_code == 201

    async def placed() -> dict[str, Any]:
        status = await api.get("/v1/loans/A-1", "agency")
        assert status.status_code == 200, status.text
        assert status.json()["placement"] is not None
        return dict(status.json()["placement"])

    placement = await eventually(placed)
    assert (await api.get("/v1/loans/A-1", "other_agency")).status_code == 404
    report = {"placement_id": placement["placement_id"], "note": "spoke to borrower", "contacted": True}
    done = await api.post("/v1/loans/A-1/agency-reports", report, "agency")
    assert done.status_code == 201, done.text

    async def audited() -> None:
        record = (await api.get("/v1/loans/A-1/audit", "supervisor")).json()
        assert any(e["actor"] == "agency:acme-agent" and e["action"] == "agency_report" for e in record["entries"])

    await eventually(audited)
    assert (await api.post("/v1/loans/A-1/agency-reports", report, "other_agency")).status_code == 404
    wrong = report | {"placement_id": "not-this-one"}
    assert (await api.post("/v1/loans/A-1/agency-reports", wrong, "agency")).status_code == 404
    ask = {"placement_id": placement["placement_id"], "channel": "phone"}
    answer = await api.post("/v1/loans/A-1/contact-requests", ask, "agency")
    assert answer.status_code == 200, answer.text
    assert answer.json()["verdict"] in ("allowed", "deferred", "refused") and answer.json()["rule"]
