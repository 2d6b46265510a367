"""Payments through the HTTP API: applied once per Idempotency-Key (the same body again gets the
same receipt, another body a 409), every bad input a 422 that changes nothing, a closed loan 409,
an unknown loan 404."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from client import wait_quiet
from db.tables import LedgerEntry
from tests.helpers import Api, loan_json


def pay(amount: Any = "100.00", **kw: Any) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY", "paid_at": "2026-12-01T10:00:00+08:00"} | kw


def payments(api: Api, loan_id: str) -> list[LedgerEntry]:
    with Session(api.engine) as session:
        query = select(LedgerEntry).where(LedgerEntry.loan_id == loan_id, LedgerEntry.kind == "payment")
        return list(session.exec(query).all())


async def started(api: Api, loan_id: str, **kw: Any) -> None:
    assert (await api.post("/v1/loans", loan_json(loan_id, **kw))).status_code == 201


async def test_a_payment_is_applied_once_per_key(api: Api) -> None:
    await started(api, "P-1")
    key = {"Idempotency-Key": "pay-0001"}
    first = await api.post("/v1/loans/P-1/payments", pay(), headers=key)
    assert first.status_code == 201, first.text
    receipt = first.json()
    assert receipt["payment_id"] == "pay-0001" and receipt["amount"] == "100.00"
    assert receipt["outstanding"]["total"] == "10500.00"
    again = await api.post("/v1/loans/P-1/payments", pay(), headers=key)
    assert again.status_code == 201 and again.json() == receipt
    other = await api.post("/v1/loans/P-1/payments", pay("200.00"), headers=key)
    assert other.status_code == 409 and other.json()["errors"][0]["field"] == "header.idempotency-key"
    status = (await api.get("/v1/loans/P-1")).json()
    assert status["paid_total"] == "100.00"
    await wait_quiet(api.client, "P-1")
    assert [str(row.amount) for row in payments(api, "P-1")] == ["100.00"]
    audit = (await api.get("/v1/loans/P-1/audit", "auditor")).json()["entries"]
    assert [e["actor"] for e in audit if e["action"] == "payment_applied"] == ["platform:lending-platform"]


async def test_bad_payments_are_422_and_change_nothing(api: Api) -> None:
    await started(api, "P-2")
    cases = [
        (pay("0.00"), "body.amount"),
        (pay("-5.00"), "body.amount"),
        (pay("10.001"), "body.amount"),
        (pay("1e3"), "body.amount"),
        (pay(100), "body.amount"),
        (pay(currency="XYZ"), "body.currency"),
        (pay(paid_at="2026-12-01T10:00:00"), "body.paid_at"),
    ]
    for n, (body, field) in enumerate(cases):
        response = await api.post("/v1/loans/P-2/payments", body, headers={"Idempotency-Key": f"bad-{n}"})
        assert response.status_code == 422, (body, response.text)
        assert any(e["field"].startswith(field) for e in response.json()["errors"]), (body, response.json())
    wrong = await api.post("/v1/loans/P-2/payments", pay(currency="USD"), headers={"Idempotency-Key": "usd"})
    assert wrong.status_code == 422 and "differs from the loan's CNY" in wrong.json()["reason"]
    missing = await api.post("/v1/loans/P-2/payments", pay())
    assert missing.status_code == 422 and missing.json()["errors"][0]["field"] == "header.idempotency-key"
    assert (await api.get("/v1/loans/P-2")).json()["paid_total"] == "0"
    assert payments(api, "P-2") == []


async def test_a_closed_loan_is_409_and_an_unknown_loan_404(api: Api) -> None:
    await started(api, "P-3")
    paid = await api.post("/v1/loans/P-3/payments", pay("10600.00"), headers={"Idempotency-Key": "all"})
    assert paid.status_code == 201 and paid.json()["closed"] is True
    late = await api.post("/v1/loans/P-3/payments", pay(), headers={"Idempotency-Key": "late"})
    assert late.status_code == 409 and "closed" in late.json()["detail"]
    again = await api.post("/v1/loans/P-3/payments", pay("10600.00"), headers={"Idempotency-Key": "all"})
    assert again.status_code == 201 and again.json() == paid.json()
    unknown = await api.post("/v1/loans/NOPE/payments", pay(), headers={"Idempotency-Key": "x"})
    assert unknown.status_code == 404
    retried = await api.post("/v1/loans/NOPE/payments", pay(), headers={"Idempotency-Key": "x"})
    assert retried.status_code == 404  # not remembered: the loan may be handed over later
