"""The webhook outbox's queue operations (tables: `db.webhooks`): subscribers, events the API
records itself, the fan-out of events to deliveries, the lease a dispatcher takes on a delivery
before it sends, the outcome of an attempt, and the delivery log. Synchronous and short
transactions; the HTTP side and the loop are `api.webhooks`.

Why a lease and not a lock held while sending: an HTTP call may take seconds, and a row lock
held that long would hold up every other dispatcher and the database. A dispatcher claims a
delivery with one conditional UPDATE (`leased_until` empty or past, checked by its rowcount),
sends, then records the outcome only if its lease token is still there. Several dispatchers
(API replicas) therefore never send the same delivery at the same time, and one that dies
between sending and recording loses its lease when it expires: another sends again (at least
once; receivers deduplicate by event id).

Per loan and subscriber, deliveries go in seq order: a delivery is due only when no delivery of
a lower seq of the same loan to the same subscriber is still pending, and no event of a lower
seq of the loan is still waiting for its fan-out.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlsplit

from sqlalchemy import CursorResult, Engine, exists, false, or_, true, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from db.store import hold_write_lock, in_transaction
from db.webhooks import WebhookAttempt, WebhookDelivery, WebhookEvent, WebhookSubscriber, next_seq
from models.webhooks import EVENT_TYPES, after_failure, check_event_filter, delivered, wants
from models.webhooks import event_id as event_id_of


class SubscriberExists(ValueError):
    """An active subscriber already has this URL (one subscriber per URL)."""


# ------------------------------------------------------------------ subscribers


def add_subscriber(engine: Engine, url: str, secret: str, events: list[str] | str, now: datetime) -> dict[str, Any]:
    """Register `url` for `events` (a list of types, or "*"), signed with `secret`; the
    subscriber as a dict, secret included (the only time it is shown). A URL removed before is
    taken back with the new secret and events (same id, its log kept); an active one raises
    SubscriberExists."""
    wanted = check_event_filter(events)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {url!r}")
    if not secret:
        raise ValueError("the secret is empty")

    def work(session: Session) -> dict[str, Any]:
        hold_write_lock(session)
        row = session.exec(select(WebhookSubscriber).where(WebhookSubscriber.url == url)).first()
        if row is not None and row.active:
            raise SubscriberExists(f"subscriber {row.id} already receives events at {url}")
        if row is None:
            row = WebhookSubscriber(id=f"whs_{uuid.uuid4().hex[:16]}", url=url, secret=secret, created_at=now)
        row.secret, row.events, row.active, row.updated_at = secret, json.dumps(wanted), True, now
        session.add(row)
        session.flush()  # a racing add of the same URL shows here: the transaction runs again
        return subscriber_dict(row) | {"secret": secret}

    return in_transaction(engine, work)


def list_subscribers(engine: Engine) -> list[dict[str, Any]]:
    """Every subscriber, active or removed, oldest first (secrets left out)."""
    with Session(engine) as session:
        rows = session.exec(select(WebhookSubscriber).order_by(col(WebhookSubscriber.created_at))).all()
        return [subscriber_dict(row) for row in rows]


def remove_subscriber(engine: Engine, subscriber_id: str, now: datetime) -> bool:
    """Stop sending to a subscriber: it is deactivated (its delivery log stays) and what was
    still pending for it is marked dead. False if there is no such active subscriber."""

    def work(session: Session) -> bool:
        hold_write_lock(session)
        row = session.get(WebhookSubscriber, subscriber_id, with_for_update=True)
        if row is None or not row.active:
            return False
        row.active, row.updated_at = False, now
        session.add(row)
        session.execute(
            update(WebhookDelivery)
            .where(col(WebhookDelivery.subscriber_id) == subscriber_id, col(WebhookDelivery.status) == "pending")
            .values(status="dead", last_error="subscriber removed", leased_until=None, lease_token="")
        )
        return True

    return in_transaction(engine, work)


def subscriber_dict(row: WebhookSubscriber) -> dict[str, Any]:
    return {
        "id": row.id,
        "url": row.url,
        "events": json.loads(row.events),
        "active": row.active,
        "created_at": row.created_at.isoformat(),
    }


# ------------------------------------------------------------------ events the API records


def record_event(
    engine: Engine, loan_id: str, type_: str, data: Mapping[str, Any], key: str, occurred_at: datetime
) -> tuple[dict[str, Any], bool]:
    """An event that has no audit entry (a payment the loan refused through the API: a refused
    request changes nothing, so nothing is recorded by the loan), once per `key`: the event and
    whether it was there already. `data` must hold no personal data (ids, amounts, reasons)."""
    if type_ not in EVENT_TYPES:
        raise ValueError(f"unknown event type {type_!r}")
    payload = json.dumps(dict(data), ensure_ascii=False, sort_keys=True, default=str)

    def work(session: Session) -> tuple[dict[str, Any], bool]:
        hold_write_lock(session)
        found = session.exec(select(WebhookEvent).where(WebhookEvent.key == key)).first()
        if found is not None:
            return event_dict(found), True
        row = WebhookEvent(
            event_id=event_id_of(key),
            key=key,
            loan_id=loan_id,
            seq=next_seq(session, loan_id, {}),
            event_type=type_,
            occurred_at=occurred_at,
            payload=payload,
        )
        session.add(row)
        session.flush()  # a lost race for the seq or the key shows here: the transaction runs again
        return event_dict(row), False

    return in_transaction(engine, work)


def events(engine: Engine, loan_id: str) -> list[dict[str, Any]]:
    """A loan's events in seq order."""
    with Session(engine) as session:
        query = select(WebhookEvent).where(WebhookEvent.loan_id == loan_id).order_by(col(WebhookEvent.seq))
        return [event_dict(row) for row in session.exec(query).all()]


def event_dict(row: WebhookEvent) -> dict[str, Any]:
    return {
        "id": row.event_id,
        "type": row.event_type,
        "loan_id": row.loan_id,
        "seq": row.seq,
        "occurred_at": row.occurred_at.isoformat(),
        "data": json.loads(row.payload),
    }


# ------------------------------------------------------------------ fan-out


def fan_out(engine: Engine, now: datetime, limit: int = 200) -> int:
    """Make the deliveries of up to `limit` events not fanned out yet, one per active
    subscriber that wants the event's type, due now; the number of events. Events another
    dispatcher is fanning out are skipped (PostgreSQL: SKIP LOCKED; SQLite: one writer)."""

    def work(session: Session) -> int:
        hold_write_lock(session)
        query = (
            select(WebhookEvent)
            .where(col(WebhookEvent.fanned_out) == false())
            .order_by(col(WebhookEvent.id))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        rows = session.exec(query).all()
        if not rows:
            return 0
        subscribers = session.exec(select(WebhookSubscriber).where(col(WebhookSubscriber.active) == true())).all()
        filters = [(s.id, json.loads(s.events)) for s in subscribers]
        for event in rows:
            for subscriber_id, wanted in filters:
                if wants(wanted, event.event_type):
                    session.add(
                        WebhookDelivery(
                            event_id=event.event_id,
                            subscriber_id=subscriber_id,
                            loan_id=event.loan_id,
                            seq=event.seq,
                            event_type=event.event_type,
                            next_attempt_at=now,
                            created_at=now,
                        )
                    )
            event.fanned_out = True
            session.add(event)
        return len(rows)

    return in_transaction(engine, work)


# ------------------------------------------------------------------ lease, attempt, outcome


@dataclass(frozen=True)
class Job:
    """A delivery a dispatcher holds the lease of: what to send where, and its attempt number."""

    delivery_id: int
    attempt: int
    token: str
    url: str
    secret: str
    event_id: str
    event_type: str
    loan_id: str
    seq: int
    occurred_at: datetime
    payload: str


def due(engine: Engine, now: datetime, limit: int) -> list[int]:
    """Deliveries that may be sent now, soonest due first: pending, due, not leased, to an
    active subscriber, and first in their loan's order for that subscriber (module doc)."""
    d, earlier = WebhookDelivery, aliased(WebhookDelivery)
    blocked = exists().where(
        col(earlier.subscriber_id) == col(d.subscriber_id),
        col(earlier.loan_id) == col(d.loan_id),
        col(earlier.seq) < col(d.seq),
        col(earlier.status) == "pending",
    )
    unfanned = exists().where(
        col(WebhookEvent.loan_id) == col(d.loan_id),
        col(WebhookEvent.seq) < col(d.seq),
        col(WebhookEvent.fanned_out) == false(),
    )
    query = (
        select(d.id)
        .join(WebhookSubscriber, col(WebhookSubscriber.id) == d.subscriber_id)
        .where(
            d.status == "pending",
            col(d.next_attempt_at) <= now,
            or_(col(d.leased_until).is_(None), col(d.leased_until) < now),
            col(WebhookSubscriber.active) == true(),
            ~blocked,
            ~unfanned,
        )
        .order_by(col(d.next_attempt_at), col(d.id))
        .limit(limit)
    )
    with Session(engine) as session:
        return [int(i) for i in session.exec(query).all() if i is not None]


def claim(engine: Engine, delivery_ids: list[int], now: datetime, lease: timedelta, token: str) -> list[Job]:
    """Take the lease of each of `delivery_ids` that is still free and due (one conditional
    UPDATE each, judged by its rowcount: a delivery another dispatcher took in the meantime is
    left alone); the jobs taken, each with its attempt number."""

    def work(session: Session) -> list[Job]:
        hold_write_lock(session)
        taken = []
        for delivery_id in delivery_ids:
            result = session.execute(
                update(WebhookDelivery)
                .where(
                    col(WebhookDelivery.id) == delivery_id,
                    col(WebhookDelivery.status) == "pending",
                    col(WebhookDelivery.next_attempt_at) <= now,
                    or_(col(WebhookDelivery.leased_until).is_(None), col(WebhookDelivery.leased_until) < now),
                )
                .values(leased_until=now + lease, lease_token=token, attempts=col(WebhookDelivery.attempts) + 1)
                .execution_options(synchronize_session=False)
            )
            if cast(CursorResult[Any], result).rowcount == 1:
                taken.append(delivery_id)
        if not taken:
            return []
        rows = session.exec(
            select(WebhookDelivery, WebhookEvent, WebhookSubscriber)
            .join(WebhookEvent, col(WebhookEvent.event_id) == WebhookDelivery.event_id)
            .join(WebhookSubscriber, col(WebhookSubscriber.id) == WebhookDelivery.subscriber_id)
            .where(col(WebhookDelivery.id).in_(taken))
            .order_by(col(WebhookDelivery.id))
        ).all()
        return [
            Job(
                delivery_id=int(delivery.id or 0),
                attempt=delivery.attempts,
                token=token,
                url=subscriber.url,
                secret=subscriber.secret,
                event_id=event.event_id,
                event_type=event.event_type,
                loan_id=event.loan_id,
                seq=event.seq,
                occurred_at=event.occurred_at,
                payload=event.payload,
            )
            for delivery, event, subscriber in rows
        ]

    return in_transaction(engine, work)


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt gave: the status (None: no answer) or the error, and its time."""

    at: datetime
    status: int | None
    error: str
    duration_ms: int


def finish(engine: Engine, job: Job, outcome: Outcome, now: datetime, rand: Callable[[], float]) -> str:
    """Log the attempt and, if the lease is still this job's, record its result: `delivered`
    on a 2xx, else `pending` with the next attempt's time (`models.webhooks.after_failure`) or
    `dead`. Returns the delivery's status, or `lost` when the lease had passed to another
    dispatcher (the attempt is logged all the same: it was made)."""

    def work(session: Session) -> str:
        hold_write_lock(session)
        session.add(
            WebhookAttempt(
                delivery_id=job.delivery_id,
                attempt=job.attempt,
                at=outcome.at,
                status_code=outcome.status,
                error=outcome.error,
                duration_ms=outcome.duration_ms,
            )
        )
        row = session.exec(
            select(WebhookDelivery)
            .where(WebhookDelivery.id == job.delivery_id, WebhookDelivery.lease_token == job.token)
            .with_for_update()
        ).first()
        if row is None or row.status != "pending":
            return "lost"
        if delivered(outcome.status):
            row.status, row.delivered_at = "delivered", now
        else:
            row.status, next_at = after_failure(row.attempts, row.created_at, now, rand())
            row.next_attempt_at = next_at or row.next_attempt_at
        row.last_status, row.last_error = outcome.status, outcome.error
        row.leased_until, row.lease_token = None, ""
        session.add(row)
        return row.status

    return in_transaction(engine, work)


# ------------------------------------------------------------------ the delivery log


def deliveries(
    engine: Engine,
    *,
    subscriber_id: str | None = None,
    event_id: str | None = None,
    loan_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Deliveries, newest first, each with its attempts (oldest first)."""
    query = select(WebhookDelivery).order_by(col(WebhookDelivery.id).desc()).limit(limit)
    if subscriber_id is not None:
        query = query.where(WebhookDelivery.subscriber_id == subscriber_id)
    if event_id is not None:
        query = query.where(WebhookDelivery.event_id == event_id)
    if loan_id is not None:
        query = query.where(WebhookDelivery.loan_id == loan_id)
    with Session(engine) as session:
        rows = session.exec(query).all()
        ids = [row.id for row in rows]
        log: dict[int, list[dict[str, Any]]] = {}
        attempts = select(WebhookAttempt).where(col(WebhookAttempt.delivery_id).in_(ids))
        for a in session.exec(attempts.order_by(col(WebhookAttempt.delivery_id), col(WebhookAttempt.attempt))).all():
            log.setdefault(a.delivery_id, []).append(
                {
                    "attempt": a.attempt,
                    "at": a.at.isoformat(),
                    "status": a.status_code,
                    "error": a.error,
                    "duration_ms": a.duration_ms,
                }
            )
        return [_delivery_dict(row, log.get(int(row.id or 0), [])) for row in rows]


def _delivery_dict(row: WebhookDelivery, attempts: list[dict[str, Any]]) -> dict[str, Any]:
    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at else None

    return {
        "id": row.id,
        "event_id": row.event_id,
        "event_type": row.event_type,
        "loan_id": row.loan_id,
        "seq": row.seq,
        "subscriber_id": row.subscriber_id,
        "status": row.status,
        "attempt_count": row.attempts,
        "next_attempt_at": iso(row.next_attempt_at) if row.status == "pending" else None,
        "last_status": row.last_status,
        "last_error": row.last_error,
        "created_at": iso(row.created_at),
        "delivered_at": iso(row.delivered_at),
        "attempts": attempts,
    }
