"""Webhook subscribers and the delivery log (docs/webhooks.md): the platform (or a supervisor)
subscribes a URL to event types, removes it, and reads what was delivered, attempt by attempt."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from api import webhooks
from api.auth import Principal, allow
from api.problems import ApiError, problem_responses
from api.state import State, in_thread
from db.webhook_queue import SubscriberExists
from models.webhooks import EVENT_TYPES

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

Admin = Annotated[Principal, allow("platform", "supervisor")]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]


class SubscriberIn(BaseModel):
    """A URL to POST events to, the event types it wants (or `*`), and optionally the secret to
    sign them with (else one is made and returned once)."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(min_length=8, max_length=2048, pattern=r"^https?://[^\s]+$")
    events: list[EventType] | Literal["*"] = "*"
    secret: str | None = Field(default=None, min_length=16, max_length=256)


class Subscriber(BaseModel):
    id: str
    url: str
    events: list[str] | str
    active: bool
    created_at: datetime


class NewSubscriber(Subscriber):
    secret: str = Field(description="shown this once: receivers verify X-Signature with it")


class Attempt(BaseModel):
    attempt: int
    at: datetime
    status: int | None
    error: str | None
    duration_ms: int | None


class Delivery(BaseModel):
    id: int
    event_id: str
    event_type: str
    loan_id: str
    seq: int
    subscriber_id: str
    status: str
    attempt_count: int
    next_attempt_at: datetime | None
    last_status: int | None
    last_error: str | None
    created_at: datetime | None
    delivered_at: datetime | None
    attempts: list[Attempt]


@router.post("", status_code=201, response_model=NewSubscriber, responses=problem_responses(401, 403, 409, 422))
async def subscribe(body: SubscriberIn, state: State, principal: Admin) -> NewSubscriber:
    """Subscribe a URL (one subscriber per URL; a removed URL subscribed again keeps its id and log)."""
    events: list[str] | str = body.events if isinstance(body.events, str) else list(body.events)
    try:
        made = await in_thread(webhooks.add_subscriber, state.engine, body.url, body.secret, events)
    except SubscriberExists as exc:
        raise ApiError(409, str(exc), field="body.url") from exc
    except ValueError as exc:
        raise ApiError(422, str(exc), field="body") from exc
    return NewSubscriber(**made)


@router.get("", response_model=list[Subscriber], responses=problem_responses(401, 403))
async def subscribers(state: State, principal: Admin) -> list[Subscriber]:
    """Every subscriber, removed ones with `active` false (never their secrets)."""
    return [Subscriber(**s) for s in await in_thread(webhooks.list_subscribers, state.engine)]


@router.delete("/{subscriber_id}", status_code=204, responses=problem_responses(401, 403, 404, 422))
async def unsubscribe(
    subscriber_id: Annotated[str, Path(min_length=1, max_length=64)], state: State, principal: Admin
) -> Response:
    """Stop delivering to a subscriber: its pending deliveries end as dead; the log stays."""
    if not await in_thread(webhooks.remove_subscriber, state.engine, subscriber_id):
        raise ApiError(404, f"no active subscriber {subscriber_id}")
    return Response(status_code=204)


@router.get("/deliveries", response_model=list[Delivery], responses=problem_responses(401, 403, 422))
async def delivery_log(
    state: State,
    principal: Admin,
    subscriber_id: Annotated[str | None, Query(max_length=64)] = None,
    event_id: Annotated[str | None, Query(max_length=64)] = None,
    loan_id: Annotated[str | None, Query(max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Delivery]:
    """Deliveries, newest first, each with every attempt (time, HTTP status or error, duration)."""
    found = await in_thread(_deliveries, state, subscriber_id, event_id, loan_id, limit)
    return [Delivery(**d) for d in found]


def _deliveries(
    state: State, subscriber_id: str | None, event_id: str | None, loan_id: str | None, limit: int
) -> list[dict[str, object]]:
    return webhooks.deliveries(
        state.engine, subscriber_id=subscriber_id, event_id=event_id, loan_id=loan_id, limit=limit
    )
