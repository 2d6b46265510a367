"""No side effect happens twice: activity retries, concurrent attempts and a replaced worker."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import Engine
from sqlmodel import Session
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

import db.store
from activities.channels import OutboxAdapter, WebhookAdapter
from activities.ledger import LedgerActivities
from activities.messaging import MessagingActivities
from activities.rendering import Renderer
from activities.tasks import TaskActivities
from db.tables import AuditRow, LedgerEntry, OutboxMessage, TaskRow
from infra.settings import settings
from models import Allocation, Balance, Payment
from models.requests import FeeRequest, MessageRequest, PaymentRecord, TaskRequest
from tests.helpers import (
    MESSAGE_CONTEXT,
    SCREENED_TIMELINE,
    FlakyAdapter,
    Harness,
    Row,
    all_rows,
    make_loan,
    timeline_rows,
)
from worker import create_worker

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def audit(engine: Engine) -> list[AuditRow]:
    return all_rows(engine, AuditRow)


def message(key: str = "L-1/message@1/sms") -> MessageRequest:
    return MessageRequest(
        key=key,
        loan_id="L-1",
        at=NOW,
        channel="sms",
        template="reminder_first",
        language="zh",
        recipient="+8613800000000",
        context=MESSAGE_CONTEXT,
    )


def test_a_retried_message_is_stored_once_and_redelivered_with_the_same_key(engine: Engine) -> None:
    adapter = FlakyAdapter()
    acts = MessagingActivities(engine, Renderer(settings().templates_dir), adapter)
    env = ActivityEnvironment()
    with pytest.raises(ConnectionError):
        env.run(acts.send_message, message())
    result = env.run(acts.send_message, message())
    again = env.run(acts.send_message, message())
    stored = all_rows(engine, OutboxMessage)
    assert len(stored) == 1 and stored[0].status == "sent"
    assert result.duplicate and again.duplicate
    # at most one re-delivery, with the same idempotency key for the gateway to drop
    assert adapter.deliveries == ["L-1/message@1/sms", "L-1/message@1/sms"]


def test_concurrent_attempts_write_one_row(engine: Engine) -> None:
    acts = LedgerActivities(engine)
    req = FeeRequest(key="L-1/fee/1", loan_id="L-1", at=NOW, period=1, amount=Decimal("525.00"), currency="CNY")
    env = ActivityEnvironment()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: env.run(acts.post_fee, req), range(8)))
    assert len(all_rows(engine, LedgerEntry)) == 1
    assert sorted(r.duplicate for r in results) == [False] + [True] * 7
    assert all_rows(engine, LedgerEntry)[0].amount == Decimal("525.00")


def test_an_attempt_that_loses_the_race_for_its_key_returns_the_stored_row(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two attempts both pass the look-up before either inserts: the second one's insert hits
    the unique constraint (PostgreSQL: a unique violation once the first commits), its
    transaction is rolled back, and it answers with the first one's row as a duplicate."""
    acts = LedgerActivities(engine)
    req = FeeRequest(key="L-1/fee/1", loan_id="L-1", at=NOW, period=1, amount=Decimal("525.00"), currency="CNY")
    env = ActivityEnvironment()
    first = env.run(acts.post_fee, req)
    real_find = db.store._find
    missed: list[object] = []

    def find_too_early(session: Session, model: type[Row], key_field: str, key: object) -> Row | None:
        if not missed:  # the look-up ran before the first attempt committed
            missed.append(key)
            return None
        return real_find(session, model, key_field, key)

    monkeypatch.setattr(db.store, "_find", find_too_early)
    second = env.run(acts.post_fee, req.model_copy(update={"amount": Decimal("999.00")}))
    assert missed == ["L-1/fee/1"]
    assert (first.duplicate, second.duplicate, second.ref) == (False, True, first.ref)
    stored = all_rows(engine, LedgerEntry)
    assert [(e.key, e.amount) for e in stored] == [("L-1/fee/1", Decimal("525.00"))]
    assert len([a for a in audit(engine) if a.key.startswith("L-1/fee/1")]) == 1


def test_a_payment_is_recorded_once_with_its_allocation(engine: Engine) -> None:
    acts = LedgerActivities(engine)
    pay = Payment(payment_id="P-1", amount=Decimal("700.00"), currency="CNY", paid_at=NOW)
    req = PaymentRecord(
        key="L-1/payment/P-1",
        loan_id="L-1",
        at=NOW,
        payment=pay,
        allocation=Allocation(penalties=Decimal("525.00"), fees=Decimal("100.00"), interest=Decimal("75.00")),
        balance_after=Balance(principal=Decimal("10000.00"), interest=Decimal("425.00")),
    )
    env = ActivityEnvironment()
    env.run(acts.record_payment, req)
    assert env.run(acts.record_payment, req).duplicate
    entries = {(e.kind, e.component): e.amount for e in all_rows(engine, LedgerEntry)}
    assert entries == {
        ("payment", ""): Decimal("700.00"),
        ("allocation", "penalties"): Decimal("525.00"),
        ("allocation", "fees"): Decimal("100.00"),
        ("allocation", "interest"): Decimal("75.00"),
    }


def test_a_task_is_created_once(engine: Engine) -> None:
    acts = TaskActivities(engine, Renderer(settings().templates_dir))
    req = TaskRequest(
        key="L-1/call@5/1",
        loan_id="L-1",
        at=NOW,
        workflow_id="collection-L-1",
        kind="call",
        queue="collectors",
        template="call_first_round",
        language="en",
        attempt=1,
        due_by=NOW + timedelta(days=1),
        context={**MESSAGE_CONTEXT, "attempt": "1"},
    )
    env = ActivityEnvironment()
    env.run(acts.create_task, req)
    env.run(acts.create_task, req)
    tasks = all_rows(engine, TaskRow)
    assert [t.task_id for t in tasks] == ["L-1/call@5/1"]
    assert "10,600.00 CNY" in tasks[0].brief


def test_a_retried_guard_request_gets_the_recorded_decision(engine: Engine) -> None:
    """Found by tests/system/test_crash.py: a worker killed after the guard committed a deferral (or a
    refusal) and before it reported back left the retry failing forever on the audit key, and
    the loan stuck. A retry now gets the recorded decision again, with one audit entry."""
    from activities.guard import GuardActivities
    from db.contacts import ContactRow
    from db.tables import AuditRow
    from infra.loaders import load_ruleset
    from models.conduct import ContactRequest, Situation
    from models.requests import ConductRules, GuardRequest

    guard = GuardActivities(engine)
    rules = ConductRules(ruleset=load_ruleset("cn", settings().rulesets_dir))
    late = datetime(2026, 12, 1, 15, 30, tzinfo=UTC)  # 23:30 in Shanghai: outside the hours
    env = ActivityEnvironment()
    for key, situation, verdict in (
        ("L-1/message@1/sms", Situation(), "deferred"),
        ("L-1/message@3/sms", Situation(stopped=True), "refused"),
    ):
        contact = ContactRequest(
            borrower_id="B-1", loan_id="L-1", channel="sms", at=late, timezone="Asia/Shanghai", key=key
        )
        req = GuardRequest(contact=contact, rules=rules, situation=situation)
        first = env.run(guard.request_contact, req)
        again = env.run(guard.request_contact, req)
        assert first.verdict == verdict and again == first
        assert [r.action for r in all_rows(engine, AuditRow) if r.key.startswith(key)] == [f"guard_{verdict}"]
    assert all_rows(engine, ContactRow) == []  # neither took a slot


def test_webhook_adapter_posts_with_the_idempotency_key() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"id": "gw-42"})

    adapter = WebhookAdapter(
        "https://gateway.invalid/send", client=httpx.Client(transport=httpx.MockTransport(handler))
    )
    msg = OutboxMessage(
        key="L-1/message@1/sms",
        loan_id="L-1",
        channel="sms",
        template="t",
        language="zh",
        recipient="+8613800000000",
        body="hello",
    )
    assert adapter.deliver(msg) == "gw-42"
    assert seen[0].headers["Idempotency-Key"] == "L-1/message@1/sms"
    assert b'"recipient":"+8613800000000"' in seen[0].content.replace(b" ", b"")

    failing = WebhookAdapter(
        "https://gateway.invalid/send",
        client=httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(503))),
    )
    with pytest.raises(httpx.HTTPStatusError):
        failing.deliver(msg)  # raised, so the activity is retried


def test_outbox_adapter_logs_masked_recipient(caplog: pytest.LogCaptureFixture) -> None:
    msg = OutboxMessage(
        id=7,
        key="k",
        loan_id="L-1",
        channel="sms",
        template="t",
        language="zh",
        recipient="+8613812345678",
        body="hello",
    )
    with caplog.at_level("INFO"):
        assert OutboxAdapter().deliver(msg) == "outbox:7"
    assert "13812345678" not in caplog.text and "***5678" in caplog.text


async def test_replaced_worker_repeats_nothing(env: WorkflowEnvironment, db_url: str, engine: Engine) -> None:
    """Worker A runs the first 20 days, then stops; worker B (same queue and database) takes
    over and replays A's history. The whole ladder still happens exactly once."""
    queue = f"test-{uuid.uuid4()}"
    harness = Harness(env=env, engine=engine, task_queue=queue)
    loan = make_loan(dpd=0, now=await env.get_current_time())
    # no workflow cache on A: the test server never times out a dead worker's sticky queue
    async with create_worker(env.client, task_queue=queue, database_url=db_url, max_cached_workflows=0):
        await harness.start(loan)
        await harness.at_dpd(loan, 20)
    counts_at_handover = (len(harness.rows(OutboxMessage, loan.loan_id)), len(harness.rows(TaskRow, loan.loan_id)))
    assert counts_at_handover == (3, 5)
    async with create_worker(env.client, task_queue=queue, database_url=db_url):
        await harness.at_dpd(loan, 600)
        status = await harness.status(loan)
    assert timeline_rows(status, loan) == SCREENED_TIMELINE
    assert len(harness.rows(OutboxMessage, loan.loan_id)) == 5
    assert len(harness.rows(TaskRow, loan.loan_id)) == 6
    fees = [e for e in harness.rows(LedgerEntry, loan.loan_id) if e.kind == "fee"]
    assert len(fees) == 5 and sum(e.amount for e in fees) == Decimal("2500.00")


async def test_a_delivery_retried_inside_the_workflow_is_recorded_once(
    env: WorkflowEnvironment, db_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every first delivery fails after reaching the gateway; the workflow's retries find the
    outbox row and each message is still stored and reported once."""
    adapter = FlakyAdapter()
    monkeypatch.setattr("worker.make_adapter", lambda *a, **k: adapter)
    queue = f"test-{uuid.uuid4()}"
    harness = Harness(env=env, engine=engine, task_queue=queue)
    loan = make_loan(dpd=0, now=await env.get_current_time())
    async with create_worker(env.client, task_queue=queue, database_url=db_url):
        await harness.start(loan)
        await harness.at_dpd(loan, 4)
        status = await harness.status(loan)
    sent = [(e.action, e.channel) for e in status.timeline if e.outcome == "sent"]
    assert sent == [("reminder_first", "sms"), ("reminder_second", "sms"), ("reminder_second", "email")]
    stored = harness.rows(OutboxMessage, loan.loan_id)
    assert len(stored) == 3 and all(m.status == "sent" for m in stored)
    assert sorted(set(adapter.deliveries)) == sorted(m.key for m in stored)
