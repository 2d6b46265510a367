"""Handing loans over and reading them through the HTTP API: 201 then 200 for the same loan,
422 (and nothing started) for an unknown policy or currency, a due date in the future or a bad
time zone; the status as of now; listings and totals."""

from __future__ import annotations

from typing import Any

import pytest
from temporalio.service import RPCError

from infra.temporal import workflow_id
from tests.helpers import Api, eventually, loan_json


async def test_a_loan_is_handed_over_once(api: Api) -> None:
    body = loan_json("H-1")
    first = await api.post("/v1/loans", body)
    assert first.status_code == 201, first.text
    assert first.json() == {"loan_id": "H-1", "workflow_id": "collection-H-1", "outcome": "started"}
    again = await api.post("/v1/loans", body)
    assert again.status_code == 200 and again.json()["outcome"] == "running"
    status = await api.get("/v1/loans/H-1")
    assert status.status_code == 200
    assert status.json()["days_past_due"] == 3 and status.json()["currency"] == "CNY"
    assert status.json()["outstanding"]["principal"] == "10000.00"


async def _not_started(api: Api, loan_id: str) -> None:
    with pytest.raises(RPCError):
        await api.client.get_workflow_handle(workflow_id(loan_id)).describe()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"policy": "no-such-policy"}, "body.policy"),
        ({"currency": "XYZ"}, "body.currency"),
        ({"currency": "XAU"}, "body.currency"),
        ({"currency": "EUR", "policy": "auto"}, "body.currency"),  # a currency the scorecard has no bands for
        ({"due_date": "2999-01-01"}, "body.due_date"),
        ({"principal": 100.5}, "body.principal"),
        ({"principal": "100.555"}, "body"),
    ],
)
async def test_bad_hand_overs_are_422_and_start_nothing(api: Api, change: dict[str, Any], field: str) -> None:
    loan_id = f"BAD-{abs(hash(str(change))) % 10**8}"
    response = await api.post("/v1/loans", loan_json(loan_id) | change)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 422 and problem["title"]
    assert any(e["field"].startswith(field) for e in problem["errors"]), problem
    await _not_started(api, loan_id)


async def test_a_bad_time_zone_is_422(api: Api) -> None:
    body = loan_json("BAD-TZ")
    body["borrower"]["timezone"] = "Mars/Olympus_Mons"
    response = await api.post("/v1/loans", body)
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.borrower.timezone"
    await _not_started(api, "BAD-TZ")


async def test_an_unknown_loan_is_404(api: Api) -> None:
    response = await api.get("/v1/loans/NOPE-1")
    assert response.status_code == 404 and response.headers["content-type"] == "application/problem+json"


async def test_listing_pages_filters_and_totals(api: Api) -> None:
    for loan_id, dpd in (("LS-1", 2), ("LS-2", 3), ("LS-3", 35)):
        assert (await api.post("/v1/loans", loan_json(loan_id, dpd=dpd))).status_code == 201

    async def listed() -> None:
        page = await api.get("/v1/loans", params={"page_size": 2})
        assert page.status_code == 200, page.text
        first = page.json()
        assert len(first["loans"]) == 2 and first["next_page_token"]
        rest = (await api.get("/v1/loans", params={"page_size": 2, "page_token": first["next_page_token"]})).json()
        ids = {r["loan_id"] for r in first["loans"] + rest["loans"]}
        assert {"LS-1", "LS-2", "LS-3"} <= ids
        late = (await api.get("/v1/loans", params={"dpd_min": 30, "dpd_max": 59})).json()["loans"]
        assert [r["loan_id"] for r in late] == ["LS-3"] and late[0]["days_past_due"] == 35
        middle = (await api.get("/v1/loans", params={"stage": "middle"})).json()["loans"]
        assert [r["loan_id"] for r in middle] == ["LS-3"]

    await eventually(listed)
    stats = await api.get("/v1/portfolio/stats")
    assert stats.status_code == 200
    totals = {(t["stage"], t["currency"]): t for t in stats.json()["totals"]}
    assert totals[("middle", "CNY")]["loans"] >= 1


async def test_listing_refuses_bad_filters(api: Api) -> None:
    for params in ({"dpd_min": 10, "dpd_max": 5}, {"page_size": 0}, {"page_token": "%%%"}, {"stage": "x'y"}):
        response = await api.get("/v1/loans", params=params)
        assert response.status_code == 422, (params, response.text)
