"""A status read through the API writes nothing: the loan's history has as many events after a
hundred reads as before (the figure for 10,000 reads is bench/api_status.py's)."""

from __future__ import annotations

from client import wait_quiet
from infra.temporal import workflow_id
from tests.helpers import Api, loan_json


async def history_length(api: Api, loan_id: str) -> int:
    history = await api.client.get_workflow_handle(workflow_id(loan_id)).fetch_history()
    return len(history.events)


async def test_reading_the_status_adds_no_history_event(api: Api) -> None:
    assert (await api.post("/v1/loans", loan_json("S-1", dpd=2))).status_code == 201
    first = await api.get("/v1/loans/S-1")
    assert first.status_code == 200
    await wait_quiet(api.client, "S-1")
    before = await history_length(api, "S-1")
    for _ in range(100):
        assert (await api.get("/v1/loans/S-1")).status_code == 200
    assert await history_length(api, "S-1") == before
