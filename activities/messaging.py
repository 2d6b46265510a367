"""Messaging activity: render, record in the outbox (once per key), deliver, mark sent."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity

from activities.channels import ChannelAdapter
from activities.rendering import Renderer
from db.store import audit_row, in_transaction, write_once
from db.tables import OutboxMessage, utcnow
from models.requests import MessageRequest, Recorded


class MessagingActivities:
    def __init__(self, engine: Engine, renderer: Renderer, adapter: ChannelAdapter) -> None:
        self._engine = engine
        self._renderer = renderer
        self._adapter = adapter

    @activity.defn
    def send_message(self, req: MessageRequest) -> Recorded:
        """Send one message. A retry finds the outbox row by key and at most re-delivers it
        (with the same key) if the earlier attempt died before marking it sent."""
        subject, body = self.render(req)
        row, duplicate = in_transaction(self._engine, lambda session: queue_message(session, req, subject, body))
        if row.status != "sent":
            self.deliver([row])
        return Recorded(ref=str(row.id), duplicate=duplicate)

    def render(self, req: MessageRequest) -> tuple[str, str]:
        """Subject and body (a template that does not render fails for good, before any write)."""
        return self._renderer.render(req.template, req.channel, req.language, req.context)

    def deliver(self, rows: list[OutboxMessage]) -> None:
        """Hand stored messages to the channel, in order, then mark them sent in one transaction
        (a crash in between re-delivers under the same key, which the gateway takes once)."""
        refs = [(row.id, self._adapter.deliver(row)) for row in rows]
        in_transaction(self._engine, lambda session: _mark_sent(session, refs))


def queue_message(session: Session, req: MessageRequest, subject: str, body: str) -> tuple[OutboxMessage, bool]:
    """The outbox row (once per key) with its audit entry, in the caller's transaction."""
    row = OutboxMessage(
        key=req.key,
        loan_id=req.loan_id,
        channel=req.channel,
        template=req.template,
        language=req.language,
        recipient=req.recipient,
        subject=subject,
        body=body,
        created_at=req.at,
    )
    audit = audit_row(
        f"{req.key}#queued",
        req.loan_id,
        "message_queued",
        "system",
        req.context.get("stage", ""),
        req.at,
        channel=req.channel,
        template=req.template,
    )
    return write_once(session, row, "key", [audit])


def _mark_sent(session: Session, refs: list[tuple[int | None, str]]) -> None:
    for row_id, provider_ref in refs:
        stored = session.get(OutboxMessage, row_id)
        assert stored is not None
        stored.status, stored.provider_ref, stored.sent_at = "sent", provider_ref, utcnow()
        session.add(stored)
