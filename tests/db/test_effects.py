"""The `perform` activity: a loan's effects in one transaction, each once by its key; a template
that does not render fails its own effect only; a batch retried after a lost delivery repeats
nothing; a confirmation's guard is asked inside the batch."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import Engine
from temporalio.testing import ActivityEnvironment

from activities.channels import ChannelAdapter
from activities.effects import EffectActivities
from activities.handover import HandoverActivities
from activities.messaging import MessagingActivities
from activities.records import RecordActivities
from activities.rendering import Renderer
from activities.tasks import TaskActivities
from db.contacts import ContactRow
from db.tables import AuditRow, LedgerEntry, OutboxMessage
from infra.loaders import load_policy
from infra.settings import ROOT
from models.conduct import ContactRequest, Situation
from models.effects import Audit, EffectBatch, PostFee, SendMessage
from models.loan import Stage
from models.requests import AuditEvent, FeeRequest, GuardRequest, MessageRequest
from tests.helpers import MESSAGE_CONTEXT, FlakyAdapter, all_rows

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def effects(engine: Engine, adapter: ChannelAdapter | None = None) -> EffectActivities:
    renderer = Renderer(ROOT / "templates")
    messaging = MessagingActivities(engine, renderer, adapter or FlakyAdapterThatWorks())
    return EffectActivities(engine, messaging, TaskActivities(engine, renderer), HandoverActivities(engine, renderer))


class FlakyAdapterThatWorks:
    def __init__(self) -> None:
        self.deliveries: list[str] = []

    def deliver(self, message: OutboxMessage) -> str:
        self.deliveries.append(message.key)
        return f"gw-{len(self.deliveries)}"


def fee(period: int) -> PostFee:
    return PostFee(
        req=FeeRequest(
            key=f"L-1/fee/{period}", loan_id="L-1", period=period, amount=Decimal("25.00"), currency="CNY", at=NOW
        )
    )


def sms(template: str, key: str, guard: GuardRequest | None = None) -> SendMessage:
    context = {**MESSAGE_CONTEXT, "paid_total": "10,600.00", "opt_out": "回复TD退订"}
    return SendMessage(
        req=MessageRequest(
            key=key,
            loan_id="L-1",
            at=NOW,
            channel="sms",
            template=template,
            language="zh",
            recipient="+8613800000000",
            context=context,
        ),
        guard=guard,
    )


def audit_event(key: str) -> Audit:
    return Audit(
        req=AuditEvent(
            key=f"L-1/{key}", loan_id="L-1", at=NOW, action="stage_changed", actor="workflow", stage=Stage.middle
        )
    )


def test_a_batch_writes_each_effect_once_and_a_bad_template_fails_only_its_own(engine: Engine) -> None:
    batch = EffectBatch(
        effects=[
            fee(1),
            sms("no_such_template", "L-1/x/sms"),
            audit_event("stage:middle"),
            sms("reminder_first", "L-1/message@1/sms"),
        ]
    )
    result = ActivityEnvironment().run(effects(engine).perform, batch)
    assert [(r.ok, r.duplicate) for r in result.results] == [
        (True, False),
        (False, False),
        (True, False),
        (True, False),
    ]
    assert "no_such_template" in result.results[1].error
    assert [m.key for m in all_rows(engine, OutboxMessage)] == ["L-1/message@1/sms"]
    assert [e.key for e in all_rows(engine, LedgerEntry)] == ["L-1/fee/1"]
    assert {a.action for a in all_rows(engine, AuditRow)} == {"fee_posted", "stage_changed", "message_queued"}

    again = ActivityEnvironment().run(effects(engine).perform, batch)  # a retried batch repeats nothing
    assert [r.duplicate for r in again.results] == [True, False, True, True]
    assert len(all_rows(engine, LedgerEntry)) == 1 and len(all_rows(engine, OutboxMessage)) == 1
    assert len(all_rows(engine, AuditRow)) == 3


def test_a_delivery_lost_after_the_gateway_is_delivered_again_under_its_key(engine: Engine) -> None:
    adapter = FlakyAdapter()
    batch = EffectBatch(effects=[fee(2), sms("reminder_first", "L-1/message@1/sms")])
    # the attempt fails after its transaction committed: Temporal retries the batch
    with contextlib.suppress(ConnectionError):
        ActivityEnvironment().run(effects(engine, adapter).perform, batch)
    result = ActivityEnvironment().run(effects(engine, adapter).perform, batch)
    assert [r.duplicate for r in result.results] == [True, True]
    assert adapter.deliveries == ["L-1/message@1/sms", "L-1/message@1/sms"]  # same key: the gateway takes it once
    [stored] = all_rows(engine, OutboxMessage)
    assert stored.status == "sent" and stored.provider_ref == "ok"


def test_a_confirmation_asks_the_guard_in_the_batch(engine: Engine) -> None:
    policy = load_policy("default", ROOT / "policies")
    rules = RecordActivities(engine, ROOT / "policies", ROOT / "rulesets", ROOT / "templates").load_conduct_rules(
        policy.conduct
    )

    def confirmation(key: str, stopped: bool) -> SendMessage:
        contact = ContactRequest(
            borrower_id="B-1",
            loan_id="L-1",
            channel="sms",
            purpose="transactional",
            at=NOW,
            timezone="Asia/Shanghai",
            key=key,
        )
        return sms(
            "paid_confirmation", key, GuardRequest(contact=contact, rules=rules, situation=Situation(stopped=stopped))
        )

    result = ActivityEnvironment().run(
        effects(engine).perform,
        EffectBatch(effects=[confirmation("L-1/paid/sms", stopped=False), confirmation("L-2/paid/sms", stopped=True)]),
    )
    sent, refused = result.results
    assert sent.ok and sent.guard is not None and sent.guard.verdict == "allowed"
    assert not refused.ok and refused.guard is not None and refused.guard.rule == "GEN-STOP"
    assert [m.key for m in all_rows(engine, OutboxMessage)] == ["L-1/paid/sms"]
    assert [c.key for c in all_rows(engine, ContactRow)] == ["L-1/paid/sms"]
