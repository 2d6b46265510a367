"""Webhooks from a loan run by the worker (time-skipping server): its life makes the expected
events, numbered 1, 2, 3 ... with no gap, free of the borrower's personal data, and a
subscriber receives them signed, in that order."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import starter
from api import webhooks
from db import webhook_queue as queue
from models import Payment
from models.arrangements import PromiseRequest
from models.loan import OverdueLoan
from tests.helpers import FakeClock, Harness, WebhookReceiver, make_loan

NAME, PHONE, EMAIL = "李明", "+8613812345678", "li.ming@example.cn"
ADDRESS = "上海市浦东新区世纪大道1号"
SECRET = "s3cret"


def payment(loan: OverdueLoan, amount: Decimal, currency: str | None = None) -> Payment:
    return Payment(
        payment_id=f"P-{uuid.uuid4().hex[:8]}",
        amount=amount,
        currency=currency or loan.currency,
        paid_at=datetime.now(UTC),
    )


async def test_a_loans_life_makes_numbered_events_and_the_subscriber_gets_them_signed(harness: Harness) -> None:
    h = harness
    sub = webhooks.add_subscriber(h.engine, "http://subscriber.test/hooks", SECRET, "*")
    loan = make_loan(dpd=0, now=await h.now(), phone=PHONE, email=EMAIL, address=ADDRESS)
    await h.start(loan)
    await h.at_dpd(loan, 5)  # reminders, the first call task
    promised = PromiseRequest(amount=Decimal("1000.00"), date=await h.today(loan) + timedelta(days=3))
    assert (await starter.promise_to_pay(h.client, loan.loan_id, promised)).accepted
    await starter.register_payment(h.client, loan.loan_id, payment(loan, Decimal("1000.00")))  # keeps it
    await starter.send_bank_payment(h.client, loan.loan_id, payment(loan, Decimal("5.00"), "USD"))  # refused
    await h.quiet(loan)
    await h.at_dpd(loan, 62)  # middle stage, the field visit, the agency
    outstanding = (await h.status(loan)).outstanding.total
    await starter.register_payment(h.client, loan.loan_id, payment(loan, outstanding))  # paid in full
    await h.quiet(loan)

    events = queue.events(h.engine, loan.loan_id)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    kinds = [e["type"] for e in events]
    assert kinds[0] == "loan.started" and kinds[-1] == "loan.closed"
    assert {
        "arrangement.accepted",
        "arrangement.kept",
        "payment.applied",
        "payment.rejected",
        "task.created",
        "task.closed",
        "loan.stage_changed",
        "loan.placed",
        "loan.recalled",
    } <= set(kinds)
    assert kinds.index("arrangement.accepted") < kinds.index("arrangement.kept")
    assert kinds.index("loan.placed") < kinds.index("loan.recalled") < kinds.index("loan.closed")
    assert kinds.count("payment.applied") == 2 and kinds.count("task.created") == kinds.count("task.closed")
    assert [e["data"]["stage"] for e in events if e["type"] == "loan.stage_changed"] == ["middle"]
    assert events[-1]["data"]["stage"] == "paid"
    text = json.dumps(events, ensure_ascii=False)
    for personal in (NAME, PHONE, EMAIL, ADDRESS, loan.borrower.borrower_id):
        assert personal not in text

    clock, receiver = FakeClock(datetime.now(UTC)), WebhookReceiver()
    async with receiver.client() as http:
        while await webhooks.dispatch_once(h.engine, http, now=clock):
            pass
    bodies = receiver.delivered()
    assert [b["id"] for b in bodies] == [e["id"] for e in events]
    for request in receiver.requests:
        assert webhooks.verify_signature(
            SECRET,
            request.headers["X-Signature-Timestamp"],
            request.content,
            request.headers["X-Signature"],
            now=clock.at.timestamp(),
        )
    assert {d["status"] for d in webhooks.deliveries(h.engine, subscriber_id=sub["id"], limit=500)} == {"delivered"}
