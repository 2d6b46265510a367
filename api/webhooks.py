"""Webhooks out: the dispatcher that delivers the outbox's events to subscribers over HTTP, and
the calls the API and the CLI use to manage subscribers, record the events the loan cannot
record itself and read the delivery log.

Events are captured in the database with the effects they report (`db.webhooks`); this module
only moves them: `run_dispatcher` fans new events out to the subscribers that want them and
POSTs each due delivery, signed (`X-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`
with `X-Signature-Timestamp`, `X-Webhook-Id`, `X-Webhook-Event`). A 2xx answer delivers; any
other answer, a timeout or a refused connection is logged and tried again with backoff
(`models.webhooks.retry_delay`) until three days have passed (then the delivery is `dead`).
Several dispatchers (one per API replica) may run against one database: a delivery is leased
before it is sent (`db.webhook_queue`). The database calls run in threads (`asyncio.to_thread`),
so the dispatcher shares an event loop with the API without holding it up.

docs/webhooks.md says what receivers get and how they verify it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from db import webhook_queue as queue
from db.webhook_queue import Job, Outcome, SubscriberExists
from models.webhooks import ALL, SIGNATURE_TOLERANCE, delivered, envelope, sign, verify

__all__ = [
    "SubscriberExists",
    "add_subscriber",
    "deliveries",
    "dispatch_once",
    "list_subscribers",
    "record_event",
    "remove_subscriber",
    "run_dispatcher",
    "verify_signature",
]

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]

USER_AGENT = "loan-collections-webhooks/1"
LEASE = timedelta(seconds=60)
"""How long a dispatcher holds a delivery while it sends: well above the HTTP timeout, so a
live dispatcher never loses a lease mid-request; a dead one's deliveries are sent again after it."""
TIMEOUT_SECONDS = 10.0
BATCH = 50
CONCURRENCY = 16
_ERROR_CHARS = 300


def _utcnow() -> datetime:
    return datetime.now(UTC)


# ------------------------------------------------------------------ management


def add_subscriber(
    engine: Engine, url: str, secret: str | None = None, events: list[str] | str = ALL, *, now: Clock = _utcnow
) -> dict[str, Any]:
    """Register a subscriber; returns it with its secret (a new random one when none is given:
    the only time it is shown). Raises ValueError for a bad URL or event type, SubscriberExists
    for a URL that already receives events."""
    return queue.add_subscriber(engine, url, secret or secrets.token_urlsafe(32), events, now())


def list_subscribers(engine: Engine) -> list[dict[str, Any]]:
    """Every subscriber (removed ones with `active` false), without secrets."""
    return queue.list_subscribers(engine)


def remove_subscriber(engine: Engine, subscriber_id: str, *, now: Clock = _utcnow) -> bool:
    """Stop delivering to a subscriber (its pending deliveries become dead, its log stays)."""
    return queue.remove_subscriber(engine, subscriber_id, now())


def deliveries(
    engine: Engine,
    *,
    subscriber_id: str | None = None,
    event_id: str | None = None,
    loan_id: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The delivery log: deliveries newest first, each with every attempt (time, HTTP status or
    error, duration)."""
    return queue.deliveries(engine, subscriber_id=subscriber_id, event_id=event_id, loan_id=loan_id, limit=limit)


def record_event(
    engine: Engine,
    loan_id: str,
    type_: str,
    payload: Mapping[str, Any],
    key: str,
    *,
    occurred_at: datetime | None = None,
) -> dict[str, Any]:
    """Record an event the loan's audit record does not hold, once per `key` (unique across
    all events; e.g. `<loan>/api/payment-rejected/<payment id>`); returns the event. For the API
    when the loan refuses a payment request (`payment.rejected` with `payment_id`, `amount`,
    `currency`, `reason`): a refused request changes nothing in the loan, so it records nothing.
    `payload` must carry no personal data."""
    event, _ = queue.record_event(engine, loan_id, type_, payload, key, occurred_at or _utcnow())
    return event


def verify_signature(
    secret: str,
    timestamp: str | int,
    body: bytes,
    signature: str,
    *,
    tolerance: int = SIGNATURE_TOLERANCE,
    now: float | None = None,
) -> bool:
    """A receiver's check of a delivery: the signature (`X-Signature`) is the HMAC of
    `<X-Signature-Timestamp>.<raw body>` under the secret, and the timestamp is within
    `tolerance` seconds of `now` (default: this machine's clock), which refuses replays."""
    return verify(secret, timestamp, body, signature, now=time.time() if now is None else now, tolerance=tolerance)


# ------------------------------------------------------------------ the dispatcher


async def run_dispatcher(
    engine: Engine,
    stop: asyncio.Event,
    *,
    http: httpx.AsyncClient | None = None,
    poll_seconds: float = 1.0,
    now: Clock = _utcnow,
    rand: Callable[[], float] = random.random,
    lease: timedelta = LEASE,
    batch: int = BATCH,
) -> None:
    """Deliver until `stop` is set: fan out, send what is due, and when there was nothing to
    do, sleep `poll_seconds` (or until `stop`). A database error is logged and the loop goes
    on at the next poll (an HTTP error is an attempt's outcome, never the loop's end).
    `http` defaults to a client of its own with a TIMEOUT_SECONDS timeout; `now` and `rand`
    are the clock and the jitter's randomness (tests set them)."""
    own = http is None
    client = http or httpx.AsyncClient(timeout=TIMEOUT_SECONDS)
    try:
        while not stop.is_set():
            try:
                done = await dispatch_once(engine, client, now=now, rand=rand, lease=lease, batch=batch)
            except SQLAlchemyError as exc:
                log.warning("webhook dispatcher: database error, retrying at the next poll: %s", type(exc).__name__)
                done = 0
            if done == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), poll_seconds)
    finally:
        if own:
            await client.aclose()


async def dispatch_once(
    engine: Engine,
    http: httpx.AsyncClient,
    *,
    now: Clock = _utcnow,
    rand: Callable[[], float] = random.random,
    lease: timedelta = LEASE,
    batch: int = BATCH,
) -> int:
    """One round: fan new events out, lease up to `batch` due deliveries, send them side by
    side (at most CONCURRENCY at once) and record each outcome. Returns how many events were
    fanned out plus how many deliveries were attempted (0: nothing to do)."""
    fanned = await asyncio.to_thread(queue.fan_out, engine, now())
    jobs = await claim_due(engine, now=now, lease=lease, batch=batch)
    gate = asyncio.Semaphore(CONCURRENCY)

    async def one(job: Job) -> None:
        async with gate:
            outcome = await attempt(http, job, now=now)
        status = await asyncio.to_thread(queue.finish, engine, job, outcome, now(), rand)
        if status != "delivered":
            log.warning(
                "webhook delivery %s (event %s, %s) attempt %d: %s -> %s",
                job.delivery_id,
                job.event_id,
                job.event_type,
                job.attempt,
                outcome.error or outcome.status,
                status,
            )

    results = await asyncio.gather(*(one(job) for job in jobs), return_exceptions=True)
    for result in results:  # every job has run to its end; a database error then ends the round
        if isinstance(result, BaseException):
            raise result
    return fanned + len(jobs)


async def claim_due(engine: Engine, *, now: Clock = _utcnow, lease: timedelta = LEASE, batch: int = BATCH) -> list[Job]:
    """Lease up to `batch` due deliveries under a token of this call's own."""
    at = now()
    ids = await asyncio.to_thread(queue.due, engine, at, batch)
    if not ids:
        return []
    return await asyncio.to_thread(queue.claim, engine, ids, at, lease, uuid.uuid4().hex)


def body_of(job: Job) -> bytes:
    """The JSON body (`models.webhooks.envelope`): the same bytes on every attempt."""
    message = envelope(job.event_id, job.event_type, job.loan_id, job.seq, job.occurred_at, json.loads(job.payload))
    return json.dumps(message, ensure_ascii=False, sort_keys=True, separators=(",", ":")).encode("utf-8")


async def attempt(http: httpx.AsyncClient, job: Job, *, now: Clock = _utcnow) -> Outcome:
    """POST one delivery, signed with the time of sending; what came of it (never raises for
    an HTTP failure: a timeout, a refused connection or a bad answer is the outcome)."""
    at = now()
    timestamp = int(at.timestamp())
    body = body_of(job)
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "X-Webhook-Id": job.event_id,
        "X-Webhook-Event": job.event_type,
        "X-Signature-Timestamp": str(timestamp),
        "X-Signature": sign(job.secret, timestamp, body),
    }
    started = time.monotonic()
    status: int | None = None
    try:
        response = await http.post(job.url, content=body, headers=headers)
        status = response.status_code
        error = "" if delivered(status) else f"HTTP {status}"
    except httpx.TimeoutException as exc:
        error = f"timeout ({type(exc).__name__})"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:_ERROR_CHARS]
    return Outcome(at=at, status=status, error=error, duration_ms=round((time.monotonic() - started) * 1000))
