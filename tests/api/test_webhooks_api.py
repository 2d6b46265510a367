"""Webhook subscribers through the HTTP API: subscribe (the secret shown once), refuse a bad URL,
an unknown event type or a second subscription of one URL, list, read the delivery log, remove.
Payments made through the API reach the subscriber signed: `payment.applied` from the loan's
record, `payment.rejected` recorded by the API for a payment the loan refused."""

from __future__ import annotations

import asyncio
import json

from api.webhooks import run_dispatcher, verify_signature
from client import wait_quiet
from tests.helpers import Api, WebhookReceiver, eventually, loan_json


async def test_subscribers_are_managed_and_get_the_payments_events_signed(api: Api) -> None:
    assert (await api.post("/v1/webhooks", {"url": "ftp://x.example/hook"})).status_code == 422
    unknown = await api.post("/v1/webhooks", {"url": "https://x.example/hook", "events": ["loan.exploded"]})
    assert unknown.status_code == 422
    assert (await api.post("/v1/webhooks", {"url": "https://x.example/hook"}, "collector")).status_code == 403
    made = await api.post(
        "/v1/webhooks", {"url": "https://hooks.example/lender", "events": ["payment.applied", "payment.rejected"]}
    )
    assert made.status_code == 201, made.text
    subscriber = made.json()
    assert subscriber["secret"] and subscriber["events"] == ["payment.applied", "payment.rejected"]
    again = await api.post("/v1/webhooks", {"url": "https://hooks.example/lender"})
    assert again.status_code == 409
    listed = (await api.get("/v1/webhooks")).json()
    assert [s["id"] for s in listed] == [subscriber["id"]] and "secret" not in listed[0]

    assert (await api.post("/v1/loans", loan_json("W-1"))).status_code == 201
    pay = {"amount": "100.00", "currency": "CNY", "paid_at": "2026-12-07T10:00:00+08:00"}
    assert (await api.post("/v1/loans/W-1/payments", pay, headers={"Idempotency-Key": "w-ok"})).status_code == 201
    usd = pay | {"currency": "USD"}
    assert (await api.post("/v1/loans/W-1/payments", usd, headers={"Idempotency-Key": "w-usd"})).status_code == 422
    await wait_quiet(api.client, "W-1")

    receiver = WebhookReceiver()
    stop = asyncio.Event()
    dispatcher = asyncio.create_task(run_dispatcher(api.engine, stop, http=receiver.client(), poll_seconds=0.05))
    try:

        async def both_delivered() -> None:
            assert sorted(e["type"] for e in receiver.delivered()) == ["payment.applied", "payment.rejected"]

        await eventually(both_delivered)
    finally:
        stop.set()
        await dispatcher
    for request in receiver.requests:
        assert verify_signature(
            subscriber["secret"],
            request.headers["X-Signature-Timestamp"],
            request.content,
            request.headers["X-Signature"],
        )
    by_type = {e["type"]: e for e in receiver.delivered()}
    assert by_type["payment.applied"]["data"]["amount"] == "100.00"
    rejected = by_type["payment.rejected"]["data"]
    assert rejected["currency"] == "USD" and "differs from the loan's CNY" in rejected["reason"]
    assert "李明" not in json.dumps(receiver.delivered(), ensure_ascii=False)

    log = (await api.get("/v1/webhooks/deliveries", params={"loan_id": "W-1"})).json()
    assert {d["status"] for d in log} == {"delivered"} and all(d["attempts"][0]["status"] == 200 for d in log)
    gone = await api.http.delete(f"/v1/webhooks/{subscriber['id']}", headers=api.auth("platform"))
    assert gone.status_code == 204
    again_gone = await api.http.delete(f"/v1/webhooks/{subscriber['id']}", headers=api.auth("platform"))
    assert again_gone.status_code == 404
