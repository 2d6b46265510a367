"""The one activity that runs a loan's effects: a batch of writes and messages in the order the
decider asked for them, each under its business key.

Why a batch: a payment in full is a ledger row, a confirmation, an audit entry and a few closed
tasks; one activity does them all, so the loan spends one round trip through the server instead
of one per write. Each effect is idempotent on its own (a unique key in the database), so a batch
retried after a crash repeats nothing: what an earlier attempt wrote is found, a message stored
but not delivered is delivered under its key. A permanent failure of one effect (a template
that does not render) is that effect's result (`ok=False`), recorded by the decider; the rest of
the batch goes on. Any other error fails the attempt, and Temporal retries the batch.
"""

from __future__ import annotations

from datetime import UTC, datetime

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.guard import GuardActivities
from activities.handover import HandoverActivities
from activities.ledger import LedgerActivities
from activities.messaging import MessagingActivities
from activities.records import RecordActivities
from activities.tasks import TaskActivities
from models.effects import (
    Audit,
    BatchResult,
    ChargeOff,
    CloseTask,
    CreateTask,
    Effect,
    EffectBatch,
    EffectResult,
    FileCase,
    Place,
    PostFee,
    Recall,
    RecordConversation,
    RecordPayment,
    SendMessage,
    Waive,
)
from models.requests import Recorded


class EffectActivities:
    def __init__(self, ledger: LedgerActivities, messaging: MessagingActivities, tasks: TaskActivities,
                 handover: HandoverActivities, records: RecordActivities, guard: GuardActivities) -> None:
        self._ledger = ledger
        self._messaging = messaging
        self._tasks = tasks
        self._handover = handover
        self._records = records
        self._guard = guard

    @activity.defn
    def perform(self, batch: EffectBatch) -> BatchResult:
        """Run the effects in order; the result of each, and when the batch finished."""
        results = [self._one(effect) for effect in batch.effects]
        return BatchResult(results=results, at=datetime.now(UTC))

    def _one(self, effect: Effect) -> EffectResult:
        try:
            if isinstance(effect, SendMessage) and effect.guard is not None:
                decision = self._guard.decide_contact(effect.guard)
                if decision.verdict != "allowed":
                    return EffectResult(key=effect.key, ok=False, guard=decision)
                recorded = self._run(effect)
                return EffectResult(key=effect.key, duplicate=recorded.duplicate, guard=decision)
            recorded = self._run(effect)
        except ApplicationError as exc:
            if not exc.non_retryable:
                raise
            return EffectResult(key=effect.key, ok=False, error=exc.message)
        return EffectResult(key=effect.key, duplicate=recorded.duplicate)

    def _run(self, effect: Effect) -> Recorded:
        match effect:
            case PostFee(req=req):
                return self._ledger.post_fee(req)
            case RecordPayment(req=req):
                return self._ledger.record_payment(req)
            case ChargeOff(req=req):
                return self._ledger.charge_off(req)
            case Waive(req=req):
                return self._ledger.waive(req)
            case Audit(req=req):
                return self._records.record_event(req)
            case SendMessage(req=req):
                return self._messaging.send_message(req)
            case CreateTask(req=req):
                return self._tasks.create_task(req)
            case CloseTask(req=req):
                return self._tasks.close_task(req)
            case RecordConversation(task_id=task_id):
                return self._guard.record_conversation(task_id)
            case Place(req=req):
                return self._handover.place_with_agency(req)
            case Recall(req=req):
                return self._handover.recall_from_agency(req)
            case FileCase(req=req):
                return self._handover.file_case(req)
        raise AssertionError(f"unknown effect {type(effect).__name__}")  # pragma: no cover - Effect is closed
