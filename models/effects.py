"""What the decider asks the workflow shell to do, and what comes back.

Two kinds of command:
- an *effect*: a write or a message under its business key (a fee, a payment's ledger rows, an
  audit entry, a message, a task, a placement...). The shell runs the effects it has in one
  activity (`activities.effects.EffectActivities.perform`), in order, and feeds each result back
  to the decider as an `EffectDone` event. Each effect is idempotent by its key: a retried batch
  finds what an earlier attempt wrote.
- a *guard question* (`AskGuard`): may this person be contacted on this channel now? The answer
  decides what the decider does next (send, defer, give up), so it is its own activity and comes
  back as a `GuardAnswered` event.

Only the shell's main loop runs commands: handlers only record (they return commands to the
queue), so the order of commands in a workflow task never depends on how handlers interleave.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field

from models.conduct import GuardDecision
from models.requests import (
    AuditEvent,
    CaseRequest,
    ChargeOffRequest,
    FeeRequest,
    GuardRequest,
    MessageRequest,
    PaymentRecord,
    PlacementRequest,
    RecallRequest,
    TaskClosure,
    TaskRequest,
    WaiverRequest,
)


class _Command(BaseModel):
    model_config = ConfigDict(frozen=True)


class PostFee(_Command):
    kind: Literal["post_fee"] = "post_fee"
    req: FeeRequest

    @property
    def key(self) -> str:
        return self.req.key


class RecordPayment(_Command):
    kind: Literal["record_payment"] = "record_payment"
    req: PaymentRecord

    @property
    def key(self) -> str:
        return self.req.key


class ChargeOff(_Command):
    kind: Literal["charge_off"] = "charge_off"
    req: ChargeOffRequest

    @property
    def key(self) -> str:
        return self.req.key


class Waive(_Command):
    kind: Literal["waive"] = "waive"
    req: WaiverRequest

    @property
    def key(self) -> str:
        return self.req.key


class Audit(_Command):
    kind: Literal["audit"] = "audit"
    req: AuditEvent

    @property
    def key(self) -> str:
        return self.req.key


class SendMessage(_Command):
    """Render, store in the outbox, deliver. `guard` is set for transactional messages only
    (a confirmation): their answer depends on nothing but a stop, so the guard is asked in the
    same activity, and the message goes out only if it allows."""

    kind: Literal["send_message"] = "send_message"
    req: MessageRequest
    guard: GuardRequest | None = None

    @property
    def key(self) -> str:
        return self.req.key


class CreateTask(_Command):
    kind: Literal["create_task"] = "create_task"
    req: TaskRequest

    @property
    def key(self) -> str:
        return self.req.key


class CloseTask(_Command):
    kind: Literal["close_task"] = "close_task"
    req: TaskClosure

    @property
    def key(self) -> str:
        return f"{self.req.task_id}#closed"


class RecordConversation(_Command):
    """A call reached the borrower: it counts as a conversation for the guard's caps."""

    kind: Literal["record_conversation"] = "record_conversation"
    task_id: str

    @property
    def key(self) -> str:
        return f"{self.task_id}#conversation"


class Place(_Command):
    kind: Literal["place"] = "place"
    req: PlacementRequest

    @property
    def key(self) -> str:
        return self.req.key


class Recall(_Command):
    kind: Literal["recall"] = "recall"
    req: RecallRequest

    @property
    def key(self) -> str:
        return f"{self.req.placement_id}#recalled"


class FileCase(_Command):
    kind: Literal["file_case"] = "file_case"
    req: CaseRequest

    @property
    def key(self) -> str:
        return self.req.key


Effect = Annotated[
    PostFee
    | RecordPayment
    | ChargeOff
    | Waive
    | Audit
    | SendMessage
    | CreateTask
    | CloseTask
    | RecordConversation
    | Place
    | Recall
    | FileCase,
    Field(discriminator="kind"),
]


class AskGuard(_Command):
    """Ask the conduct guard for a contact; the answer comes back as `GuardAnswered`."""

    kind: Literal["ask_guard"] = "ask_guard"
    req: GuardRequest

    @property
    def key(self) -> str:
        return self.req.contact.key


Command = Annotated[
    PostFee
    | RecordPayment
    | ChargeOff
    | Waive
    | Audit
    | SendMessage
    | CreateTask
    | CloseTask
    | RecordConversation
    | Place
    | Recall
    | FileCase
    | AskGuard,
    Field(discriminator="kind"),
]


def is_effect(command: Command) -> TypeGuard[Effect]:
    return not isinstance(command, AskGuard)


class EffectBatch(BaseModel):
    """The effects one activity runs, in order."""

    effects: list[Effect]


class EffectResult(BaseModel):
    """What one effect did. `ok` is False only for a permanent failure (a broken template):
    the decider records it and collection goes on; passing failures are retried by the activity.
    `guard` is the inline guard's answer of a transactional message."""

    key: str
    ok: bool = True
    duplicate: bool = False
    error: str = ""
    guard: GuardDecision | None = None


class BatchResult(BaseModel):
    """Results in the batch's order, and when the batch finished (UTC, real time): the
    decider's clock moves on to it, from history rather than from the worker's clock."""

    results: list[EffectResult]
    at: datetime
