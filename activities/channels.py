"""Channel adapters: how a rendered message leaves the system.

The outbox row is always written first (it is the record and the idempotency guard); the
adapter then delivers it. `OutboxAdapter` only logs (a real sender drains the table);
`WebhookAdapter` POSTs to a gateway with the message key as `Idempotency-Key`, so a retry
after a lost response is recognised by the gateway, not sent twice.
"""

from __future__ import annotations

import logging
from typing import Protocol

import httpx

from activities.rendering import mask
from db.tables import OutboxMessage

log = logging.getLogger("collections.channels")


class ChannelAdapter(Protocol):
    def deliver(self, message: OutboxMessage) -> str:
        """Deliver the message; return the provider's reference. Raise to have it retried."""
        ...


class OutboxAdapter:
    """Leaves the message in the outbox table and logs it, with the recipient masked."""

    def deliver(self, message: OutboxMessage) -> str:
        log.info(
            "outbox %s %s to %s [%s] %s",
            message.channel,
            message.template,
            mask(message.recipient),
            message.key,
            message.subject or message.body.splitlines()[0][:60],
        )
        return f"outbox:{message.id}"


class WebhookAdapter:
    """POSTs the rendered message as JSON to a messaging gateway."""

    def __init__(self, url: str, timeout: float = 10.0, client: httpx.Client | None = None) -> None:
        if not url:
            raise ValueError("WEBHOOK_URL must be set for the webhook channel adapter")
        self._url = url
        self._client = client or httpx.Client(timeout=timeout)

    def deliver(self, message: OutboxMessage) -> str:
        response = self._client.post(
            self._url,
            headers={"Idempotency-Key": message.key},
            json={
                "key": message.key,
                "loan_id": message.loan_id,
                "channel": message.channel,
                "language": message.language,
                "recipient": message.recipient,
                "subject": message.subject,
                "body": message.body,
            },
        )
        response.raise_for_status()
        try:
            return str(response.json().get("id", response.status_code))
        except (ValueError, AttributeError):
            return str(response.status_code)


def make_adapter(kind: str, webhook_url: str = "", timeout: float = 10.0) -> ChannelAdapter:
    """The adapter named by the CHANNEL_ADAPTER setting."""
    if kind == "webhook":
        return WebhookAdapter(webhook_url, timeout)
    return OutboxAdapter()
