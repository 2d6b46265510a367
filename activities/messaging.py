"""Messaging activity: render, record in the outbox (once per key), deliver, mark sent."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlmodel import Session
from temporalio import activity

from activities.channels import ChannelAdapter
from activities.rendering import Renderer
from db.store import audit_row, insert_once
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
        subject, body = self._renderer.render(req.template, req.channel, req.language, req.context)
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
            f"{req.key}#queued", req.loan_id, "message_queued", "system", req.context.get("stage", ""),
            req.at, channel=req.channel, template=req.template,
        )
        row, duplicate = insert_once(self._engine, row, "key", [audit])
        if row.status != "sent":
            provider_ref = self._adapter.deliver(row)
            with Session(self._engine) as session:
                stored = session.get(OutboxMessage, row.id)
                assert stored is not None
                stored.status, stored.provider_ref, stored.sent_at = "sent", provider_ref, utcnow()
                session.add(stored)
                session.commit()
        return Recorded(ref=str(row.id), duplicate=duplicate)
