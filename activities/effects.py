"""The one activity that runs a loan's effects: a batch of writes and messages in the order the
decider asked for them, each under its business key.

Why a batch: a payment in full is a ledger row, a confirmation, an audit entry and a few closed
tasks; one activity does them all, in one database transaction (messages are handed to the
channel after it commits), so the loan spends one round trip through the server and one commit
instead of one of each per write. Each effect is idempotent on its own (a unique key in the
database), so a batch retried after a crash repeats nothing: what an earlier attempt wrote is
found, a message stored but not delivered is delivered under its key. A permanent failure of
one effect (a template that does not render, found before anything is written) is that effect's
result (`ok=False`), recorded by the decider; the rest of the batch goes on. Any other error
rolls the transaction back and fails the attempt, and Temporal retries the batch.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities import guard, handover, ledger, messaging, records, tasks
from activities.handover import HandoverActivities
from activities.messaging import MessagingActivities
from activities.tasks import TaskActivities
from db.store import in_transaction
from db.tables import OutboxMessage
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
    def __init__(
        self, engine: Engine, messaging: MessagingActivities, tasks: TaskActivities, handover: HandoverActivities
    ) -> None:
        self._engine = engine
        self._messaging = messaging
        self._tasks = tasks
        self._handover = handover

    @activity.defn
    def perform(self, batch: EffectBatch) -> BatchResult:
        """Render what the batch sends, write it all in one transaction, deliver the messages;
        the result of each effect, and when the batch finished."""
        texts = [self._render(effect) for effect in batch.effects]
        written = in_transaction(
            self._engine,
            lambda session: [
                (text, None) if isinstance(text, EffectResult) else self._write(session, effect, text)
                for effect, text in zip(batch.effects, texts, strict=True)
            ],
        )
        outbox = [row for _, row in written if row is not None and row.status != "sent"]
        if outbox:
            self._messaging.deliver(outbox)
        return BatchResult(results=[result for result, _ in written], at=datetime.now(UTC))

    def _render(self, effect: Effect) -> Any:
        """The text a message, task, placement or court filing carries, rendered before the
        transaction; a template that does not render is that effect's permanent failure."""
        try:
            match effect:
                case SendMessage(req=req):
                    return self._messaging.render(req)
                case CreateTask(req=req):
                    return self._tasks.brief(req)
                case Place(req=req):
                    return self._handover.handover_note(req)
                case FileCase(req=req):
                    return self._handover.claim(req)
        except ApplicationError as exc:
            if not exc.non_retryable:
                raise
            return EffectResult(key=effect.key, ok=False, error=exc.message)
        return None

    def _write(self, session: Session, effect: Effect, text: Any) -> tuple[EffectResult, OutboxMessage | None]:
        """One effect's writes in the batch's transaction (and the outbox row to deliver)."""
        if isinstance(effect, SendMessage):
            return self._message(session, effect, text)
        recorded = self._record(session, effect, text)
        return EffectResult(key=effect.key, duplicate=recorded.duplicate), None

    def _message(
        self, session: Session, effect: SendMessage, text: tuple[str, str]
    ) -> tuple[EffectResult, OutboxMessage | None]:
        decision = None
        if effect.guard is not None:  # a confirmation: the guard is asked here, in the same transaction
            decision = guard.decide_contact(session, effect.guard)
            if decision.verdict != "allowed":
                return EffectResult(key=effect.key, ok=False, guard=decision), None
        row, duplicate = messaging.queue_message(session, effect.req, *text)
        return EffectResult(key=effect.key, duplicate=duplicate, guard=decision), row

    def _record(self, session: Session, effect: Effect, text: Any) -> Recorded:
        match effect:
            case PostFee(req=req):
                return ledger.post_fee(session, req)
            case RecordPayment(req=req):
                return ledger.record_payment(session, req)
            case ChargeOff(req=req):
                return ledger.charge_off(session, req)
            case Waive(req=req):
                return ledger.waive(session, req)
            case Audit(req=req):
                return records.record_event(session, req)
            case CreateTask(req=req):
                return tasks.create_task(session, req, text)
            case CloseTask(req=req):
                return tasks.close_task(session, req)
            case RecordConversation(task_id=task_id):
                return guard.record_conversation(session, task_id)
            case Place(req=req):
                return handover.place_with_agency(session, req, text)
            case Recall(req=req):
                return handover.recall_from_agency(session, req)
            case FileCase(req=req):
                return handover.file_case(session, req, text)
        raise AssertionError(f"unknown effect {type(effect).__name__}")  # pragma: no cover - Effect is closed
