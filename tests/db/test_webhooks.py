"""Webhooks out on SQLite and PostgreSQL: events are captured with their effects (once per
business key, a contiguous seq per loan even under concurrent writers, no personal data), and
the dispatcher delivers them signed, in order per loan, at least once, with backoff through an
outage, dead after three days, never by two dispatchers at once, again after a dispatcher died
between sending and recording."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from typing import Any

import httpx
import pytest
from aiohttp import web
from sqlalchemy import Engine
from temporalio.testing import ActivityEnvironment

from activities.handover import HandoverActivities
from activities.ledger import LedgerActivities
from activities.records import RecordActivities
from activities.rendering import Renderer
from activities.tasks import TaskActivities
from api import webhooks
from db import webhook_queue as queue
from infra.settings import settings
from models import Allocation, Balance, Payment
from models.requests import (
    AuditEvent,
    FeeRequest,
    LoanRegistration,
    PaymentRecord,
    PlacementRequest,
    RecallRequest,
    TaskClosure,
    TaskRequest,
)
from models.webhooks import GIVE_UP_AFTER
from tests.helpers import FakeClock, WebhookReceiver, eventually, free_port, make_loan, refuse, template_context

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
URL = "http://subscriber.test/hooks"
SECRET = "s3cret"
NAME, PHONE, EMAIL = "李明", "+8613812345678", "li.ming@example.cn"
ADDRESS = "上海市浦东新区世纪大道1号"


def payment(loan_id: str, n: int, at: datetime = NOW) -> PaymentRecord:
    pay = Payment(payment_id=f"P-{n}", amount=Decimal("100.00"), currency="CNY", paid_at=at)
    return PaymentRecord(
        key=f"{loan_id}/payment/P-{n}",
        loan_id=loan_id,
        at=at,
        payment=pay,
        allocation=Allocation(principal=Decimal("100.00")),
        balance_after=Balance(principal=Decimal(10000 - 100 * n)),
    )


def pay(engine: Engine, loan_id: str, count: int, first: int = 1) -> None:
    """`count` payments of a loan, each in a transaction of its own (each one event)."""
    ledger = LedgerActivities(engine)
    for n in range(first, first + count):
        ActivityEnvironment().run(ledger.record_payment, payment(loan_id, n))


def seqs(engine: Engine, loan_id: str) -> list[int]:
    return [e["seq"] for e in queue.events(engine, loan_id)]


def by_loan(bodies: list[dict[str, Any]]) -> dict[str, list[int]]:
    order: dict[str, list[int]] = {}
    for body in bodies:
        order.setdefault(body["loan_id"], []).append(body["seq"])
    return order


async def run_until_delivered(
    engine: Engine,
    http: httpx.AsyncClient,
    clock: FakeClock,
    *,
    after_round: Callable[[list[dict[str, Any]]], None] = lambda _log: None,
) -> None:
    """Dispatch rounds on the fake clock, moving it to the next due attempt whenever a round
    had nothing to do, until nothing is pending; `after_round` sees the delivery log."""
    for _ in range(1000):
        done = await webhooks.dispatch_once(engine, http, now=clock)
        log = webhooks.deliveries(engine, limit=1000)
        after_round(log)
        pending = [datetime.fromisoformat(d["next_attempt_at"]) for d in log if d["status"] == "pending"]
        if not pending:
            return
        if done == 0:
            clock.at = max(clock.at, min(t for t in pending if t > clock.at))
    raise AssertionError("deliveries still pending after 1000 rounds")


# ------------------------------------------------------------------ capture


def a_loans_life(engine: Engine) -> None:
    """A loan through the real activities, each run twice (a retried activity): the start,
    a promise and the payment that keeps it, a fee, a call task opened and closed with a note
    naming the borrower, an agency placement (its handover note names and addresses the
    borrower) and recall, the close."""
    cfg = settings()
    renderer = Renderer(cfg.templates_dir)
    records = RecordActivities(engine, cfg.policies_dir, cfg.rulesets_dir, cfg.templates_dir)
    ledger, tasks, handover = (
        LedgerActivities(engine),
        TaskActivities(engine, renderer),
        HandoverActivities(engine, renderer),
    )
    loan = make_loan("L-HOOK", phone=PHONE, email=EMAIL, address=ADDRESS)
    context = template_context(loan.loan_id, NAME, borrower_address=ADDRESS)

    def audit(key: str, action: str, **detail: str) -> AuditEvent:
        return AuditEvent(
            key=f"{loan.loan_id}/{key}", loan_id=loan.loan_id, action=action, actor="cli", stage="early", at=NOW,
            detail=detail,
        )  # fmt: skip

    task = TaskRequest(
        key=f"{loan.loan_id}/call@5/1",
        loan_id=loan.loan_id,
        at=NOW,
        workflow_id="collection-L-HOOK",
        kind="call",
        queue="collectors",
        template="call_first_round",
        language="en",
        attempt=1,
        due_by=NOW + timedelta(days=1),
        context=context,
    )
    placement = PlacementRequest(
        key=f"{loan.loan_id}/agency@60",
        loan_id=loan.loan_id,
        at=NOW,
        template="agency_handover",
        language="en",
        context=context,
        agency="Acme",
        recall_at=NOW + timedelta(days=60),
        balance=Balance(principal=Decimal("10000.00"), interest=Decimal("425.00")),
        currency="CNY",
    )
    steps: list[tuple[Any, Any]] = [
        (
            records.register_loan,
            LoanRegistration(
                loan=loan, policy="default", policy_version="1", workflow_id="collection-L-HOOK", stage="early", at=NOW
            ),
        ),
        (records.record_event, audit("promise/1/accepted", "promise_accepted", detail="500.00 CNY by 2026-12-10")),
        (ledger.record_payment, payment(loan.loan_id, 1)),
        (records.record_event, audit("payment/P-1/promise-kept", "promise_kept", detail="500.00 promised")),
        (
            ledger.post_fee,
            FeeRequest(
                key=f"{loan.loan_id}/fee/1", loan_id=loan.loan_id, at=NOW, period=1, amount=Decimal(525), currency="CNY"
            ),
        ),
        (tasks.create_task, task),
        (
            tasks.close_task,
            TaskClosure(task_id=task.key, loan_id=loan.loan_id, at=NOW, outcome="promised", note=f"{NAME} pays Friday"),
        ),
        (handover.place_with_agency, placement),
        (
            handover.recall_from_agency,
            RecallRequest(placement_id=placement.key, loan_id=loan.loan_id, at=NOW, reason="loan closed (paid)"),
        ),
        (records.record_event, audit("closed", "collection_closed")),
    ]
    env = ActivityEnvironment()
    for method, request in steps:
        env.run(method, request)
        env.run(method, request)  # a retry writes nothing, and makes no second event


def test_effects_make_one_event_each_numbered_per_loan_with_named_fields_only(engine: Engine) -> None:
    a_loans_life(engine)
    events = queue.events(engine, "L-HOOK")
    assert [(e["seq"], e["type"]) for e in events] == list(
        enumerate(
            [
                "loan.started",
                "arrangement.accepted",
                "payment.applied",
                "arrangement.kept",
                "task.created",
                "task.closed",
                "loan.placed",
                "loan.recalled",
                "loan.closed",
            ],
            start=1,
        )
    )
    data = {e["type"]: e["data"] for e in events}
    assert data["loan.started"] == {
        "stage": "early",
        "policy": "default",
        "policy_version": "1",
        "currency": "CNY",
        "principal": "10000.00",
        "interest": "500.00",
        "fees": "100.00",
        "penalties": "0",
        "total": "10600.00",
        "due_date": data["loan.started"]["due_date"],
    }
    assert data["payment.applied"] == {
        "payment_id": "P-1",
        "amount": "100.00",
        "currency": "CNY",
        "balance_after": "9900",
        "source": "platform",
    }
    assert data["arrangement.kept"]["arrangement_id"] == data["arrangement.accepted"]["arrangement_id"]
    assert data["arrangement.kept"]["arrangement_id"] == "L-HOOK/promise/1"
    assert data["loan.placed"] == {
        "stage": "early",
        "placement_id": "L-HOOK/agency@60",
        "agency": "Acme",
        "recall_at": (NOW + timedelta(days=60)).isoformat(),
        "amount": "10425.00",
        "currency": "CNY",
    }
    assert data["task.closed"] == {"task_id": "L-HOOK/call@5/1", "kind": "call", "outcome": "promised"}
    text = json.dumps(events, ensure_ascii=False)
    for personal in (NAME, PHONE, EMAIL, ADDRESS, "pays Friday"):
        assert personal not in text
    assert len({e["id"] for e in events}) == len(events)


def test_concurrent_writers_keep_each_loans_seqs_contiguous(engine: Engine) -> None:
    """Payments of two loans from eight threads at once, and events the API records: on
    PostgreSQL the losers of the race for a seq run again; no seq is taken twice or skipped."""
    start = threading.Barrier(8)

    def work(n: int) -> None:
        start.wait()
        loan = f"L-{n % 2}"
        pay(engine, loan, 3, first=10 * n)
        webhooks.record_event(engine, loan, "payment.rejected", {"payment_id": f"X-{n}"}, f"{loan}/api/rejected/{n}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert seqs(engine, "L-0") == list(range(1, 17)) and seqs(engine, "L-1") == list(range(1, 17))


def test_the_api_records_an_event_once_per_key(engine: Engine) -> None:
    pay(engine, "L-1", 1)
    first = webhooks.record_event(engine, "L-1", "payment.rejected", {"payment_id": "P-7", "reason": "closed"}, "k/1")
    again = webhooks.record_event(engine, "L-1", "payment.rejected", {"payment_id": "P-7", "reason": "other"}, "k/1")
    assert first == again and first["seq"] == 2 and first["data"] == {"payment_id": "P-7", "reason": "closed"}
    with pytest.raises(ValueError, match="unknown event type"):
        webhooks.record_event(engine, "L-1", "payment.exploded", {}, "k/2")


# ------------------------------------------------------------------ subscribers


def test_subscribers_are_one_per_url_filtered_removed_and_taken_back(engine: Engine) -> None:
    sub = webhooks.add_subscriber(engine, URL, events="payment.applied")
    assert len(sub["secret"]) >= 32 and sub["events"] == ["payment.applied"]
    with pytest.raises(webhooks.SubscriberExists):
        webhooks.add_subscriber(engine, URL, "x")
    with pytest.raises(ValueError, match="not an http"):
        webhooks.add_subscriber(engine, "ftp://subscriber.test/", "x")
    other = webhooks.add_subscriber(engine, "http://other.test/", SECRET, "loan.closed")
    assert [s["id"] for s in webhooks.list_subscribers(engine)] == [sub["id"], other["id"]]
    assert all("secret" not in s for s in webhooks.list_subscribers(engine))

    pay(engine, "L-1", 2)
    webhooks.record_event(engine, "L-1", "payment.rejected", {"payment_id": "P-9"}, "L-1/api/rejected/P-9")
    queue.fan_out(engine, NOW)
    assert [(d["seq"], d["subscriber_id"]) for d in webhooks.deliveries(engine)] == [(2, sub["id"]), (1, sub["id"])]

    assert webhooks.remove_subscriber(engine, sub["id"]) and not webhooks.remove_subscriber(engine, sub["id"])
    listed = webhooks.deliveries(engine, subscriber_id=sub["id"])
    assert {(d["status"], d["last_error"]) for d in listed} == {("dead", "subscriber removed")}
    back = webhooks.add_subscriber(engine, URL, "new secret", "*")
    assert back["id"] == sub["id"] and back["events"] == ["*"]
    assert len(webhooks.deliveries(engine, subscriber_id=sub["id"])) == 2  # the log stays


# ------------------------------------------------------------------ delivery


async def test_a_local_subscriber_receives_signed_events_after_refusing_the_first_connection(engine: Engine) -> None:
    """A real HTTP server on a free port: down at first (connection refused, logged), then up."""
    port, received = free_port(), []

    async def hook(request: web.Request) -> web.Response:
        received.append((dict(request.headers), await request.read()))
        return web.Response(status=204)

    clock = FakeClock(NOW)
    sub = webhooks.add_subscriber(engine, f"http://127.0.0.1:{port}/hook", SECRET, "*", now=clock)
    pay(engine, "L-1", 2)
    async with httpx.AsyncClient(timeout=5) as http:
        assert await webhooks.dispatch_once(engine, http, now=clock) == 3  # two fanned out, one tried
        [refused] = webhooks.deliveries(engine, event_id=queue.events(engine, "L-1")[0]["id"])
        assert refused["status"] == "pending" and refused["attempts"][0]["status"] is None
        assert "ConnectError" in refused["attempts"][0]["error"]

        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        try:
            clock.at += timedelta(seconds=31)
            await run_until_delivered(engine, http, clock)
        finally:
            await runner.cleanup()

    assert [json.loads(body)["seq"] for _, body in received] == [1, 2]
    for headers, body in received:
        event = json.loads(body)
        assert headers["X-Webhook-Id"] == event["id"] and headers["X-Webhook-Event"] == "payment.applied"
        assert headers["X-Signature-Timestamp"] == str(int(clock.at.timestamp()))
        assert webhooks.verify_signature(
            SECRET, headers["X-Signature-Timestamp"], body, headers["X-Signature"], now=clock.at.timestamp()
        )
        assert not webhooks.verify_signature(
            SECRET, headers["X-Signature-Timestamp"], body, headers["X-Signature"], now=clock.at.timestamp() + 301
        )
    assert {d["status"] for d in webhooks.deliveries(engine, subscriber_id=sub["id"])} == {"delivered"}


async def test_a_subscriber_down_for_an_hour_loses_nothing(engine: Engine) -> None:
    """Refused connections for 30 minutes, then 500s for 30 minutes, then up: every event is
    delivered once up, in seq order per loan, each attempt logged, the waits as designed."""
    clock, receiver = FakeClock(NOW), WebhookReceiver()
    webhooks.add_subscriber(engine, URL, SECRET, "*", now=clock)
    pay(engine, "L-A", 3)
    pay(engine, "L-B", 1)
    up = NOW + timedelta(hours=1)

    def answer(request: httpx.Request) -> int:
        if clock.at < NOW + timedelta(minutes=30):
            return refuse(request)
        return 500 if clock.at < up else 200

    receiver.answer = answer
    async with receiver.client() as http:
        await run_until_delivered(engine, http, clock)

    assert by_loan(receiver.delivered()) == {"L-A": [1, 2, 3], "L-B": [1]}
    first_success = receiver.answers.index(200)
    assert all(r.headers["X-Webhook-Id"] != "" for r in receiver.requests)
    before_up = [json.loads(r.content) for r in receiver.requests[:first_success]]
    assert {(b["loan_id"], b["seq"]) for b in before_up} == {("L-A", 1), ("L-B", 1)}  # later seqs waited

    log = webhooks.deliveries(engine)
    assert {d["status"] for d in log} == {"delivered"}
    for d in log:
        assert d["attempt_count"] == len(d["attempts"])
        assert [a["attempt"] for a in d["attempts"]] == list(range(1, len(d["attempts"]) + 1))
        assert up <= datetime.fromisoformat(d["delivered_at"]) <= up + timedelta(hours=1)
    head = next(d for d in log if (d["loan_id"], d["seq"]) == ("L-A", 1))
    times = [datetime.fromisoformat(a["at"]) for a in head["attempts"]]
    for failures, (before, after) in enumerate(pairwise(times), start=1):
        ceiling = min(timedelta(hours=1), timedelta(seconds=30) * 2 ** (failures - 1))
        assert ceiling / 2 <= after - before <= ceiling
    outcomes = [(a["status"], a["error"].split(":")[0]) for a in head["attempts"]]
    assert outcomes[0] == (None, "ConnectError") and outcomes[-1] == (200, "")
    assert (500, "HTTP 500") in outcomes
    assert all(a["duration_ms"] >= 0 for a in head["attempts"])


async def test_a_delivery_is_dead_after_three_days_and_the_loans_next_event_goes(engine: Engine) -> None:
    clock, receiver = FakeClock(NOW), WebhookReceiver()
    webhooks.add_subscriber(engine, URL, SECRET, "*", now=clock)
    pay(engine, "L-A", 2)
    receiver.answer = lambda _request: 503
    dead_at: list[datetime] = []

    def come_back_when_dead(log: list[dict[str, Any]]) -> None:
        if not dead_at and any(d["status"] == "dead" for d in log):
            dead_at.append(clock.at)
            receiver.answer = lambda _request: 200

    async with receiver.client() as http:
        await run_until_delivered(engine, http, clock, after_round=come_back_when_dead)

    second, first = webhooks.deliveries(engine)
    assert (first["seq"], first["status"], second["seq"], second["status"]) == (1, "dead", 2, "delivered")
    times = [datetime.fromisoformat(a["at"]) for a in first["attempts"]]
    assert times[-1] >= NOW + GIVE_UP_AFTER > times[-2]  # dead at the first failure three days on
    assert 72 < len(times) <= 3 * 24 * 2 + 8  # an hour apart at most, half an hour at least, once capped
    assert {a["status"] for a in first["attempts"]} == {503} and first["next_attempt_at"] is None
    assert len(second["attempts"]) == 1  # sent once the first was given up, not before
    assert [json.loads(r.content)["seq"] for r in receiver.requests].index(2) == len(first["attempts"])


async def test_two_dispatchers_never_send_one_delivery_at_once(engine: Engine, db_url: str) -> None:
    """Two dispatchers (as two API replicas: engines and HTTP clients of their own) on 20
    events of 5 loans, the subscriber slow to answer: each event arrives once, in order per
    loan, never twice in flight. The first requests are held until both dispatchers have one
    in flight (each leases at most 2 of the 5 loans' first deliveries), so both take part."""
    from db.store import make_engine

    receiver, senders, both = WebhookReceiver(), set(), asyncio.Event()

    async def rendezvous(sender: str) -> None:
        senders.add(sender)
        if len(senders) == 2:
            both.set()
        with contextlib.suppress(TimeoutError):  # a dispatcher that never comes fails the test below
            await asyncio.wait_for(both.wait(), 10)

    receiver.gate, receiver.delay = rendezvous, 0.01
    webhooks.add_subscriber(engine, URL, SECRET, "*")
    for n in range(5):
        pay(engine, f"L-{n}", 4)
    second_engine, stop = make_engine(db_url), asyncio.Event()

    async def all_delivered() -> None:
        assert len(receiver.delivered()) == 20

    try:
        async with receiver.client("a") as a, receiver.client("b") as b:
            runs = [
                asyncio.create_task(webhooks.run_dispatcher(e, stop, http=h, poll_seconds=0.01, batch=2))
                for e, h in ((engine, a), (second_engine, b))
            ]
            try:
                await eventually(all_delivered, timeout=60)
            finally:
                stop.set()
                await asyncio.gather(*runs)
    finally:
        second_engine.dispose()

    assert receiver.most_in_flight == 1 and len(receiver.requests) == 20
    assert set(receiver.senders) == {"a", "b"}  # both took part
    assert by_loan(receiver.delivered()) == {f"L-{n}": [1, 2, 3, 4] for n in range(5)}
    assert {(d["status"], d["attempt_count"]) for d in webhooks.deliveries(engine)} == {("delivered", 1)}


async def test_a_dispatcher_that_dies_between_sending_and_recording_is_followed_by_a_resend(engine: Engine) -> None:
    clock, receiver = FakeClock(NOW), WebhookReceiver()
    webhooks.add_subscriber(engine, URL, SECRET, "*", now=clock)
    pay(engine, "L-A", 1)
    async with receiver.client() as http:
        queue.fan_out(engine, clock.at)
        [job] = await webhooks.claim_due(engine, now=clock)
        crashed = await webhooks.attempt(http, job, now=clock)  # sent; the dispatcher dies here
        assert crashed.status == 200

        clock.at += timedelta(seconds=59)  # the lease still holds: nobody sends it again
        assert await webhooks.dispatch_once(engine, http, now=clock) == 0
        clock.at += timedelta(seconds=2)  # the lease has expired
        assert await webhooks.dispatch_once(engine, http, now=clock) == 1

    first, again = receiver.requests
    assert first.headers["X-Webhook-Id"] == again.headers["X-Webhook-Id"] and first.content == again.content
    [d] = webhooks.deliveries(engine)
    assert (d["status"], d["attempt_count"], [a["attempt"] for a in d["attempts"]]) == ("delivered", 2, [2])
    # the dead dispatcher, were it to come back, logs its attempt and changes nothing else
    assert queue.finish(engine, job, crashed, clock.at, lambda: 0.0) == "lost"
    [d] = webhooks.deliveries(engine)
    assert (d["status"], [a["attempt"] for a in d["attempts"]]) == ("delivered", [1, 2])
