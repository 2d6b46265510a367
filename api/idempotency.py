"""Idempotent writes: a request sent with an `Idempotency-Key` is done once; the same key with
the same body again gets the first answer (and changes nothing), the same key with another body
is a conflict. The record is taken before the request is sent to the loan (a unique constraint
settles two copies racing each other), and holds the answer once there is one.

What happens when an API process dies between sending and recording: the record stays "in
flight"; after IN_FLIGHT_SECONDS another try takes it over and sends the request again under the
same request id, and the loan, which keeps its latest answers by request id, answers it with the
first answer instead of applying it twice (`client.protocol.ask`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete, select

from db.access import IdempotencyRecord

IN_FLIGHT_SECONDS = 120
"""How long a request in flight holds its key before another try may take it over (longer than
the API waits for a loan's answer)."""

KEY_PATTERN = r"^[A-Za-z0-9._:/+=-]{1,128}$"
"""What an Idempotency-Key may be: a UUID, a payment reference..."""


def fingerprint(body: dict[str, Any]) -> str:
    """SHA-256 of the body in canonical JSON (key order and spacing do not matter)."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Claim:
    """What taking a key found: `new` (go ahead), `done` (answer with `status`/`body`),
    `conflict` (another body under this key) or `busy` (the same request is in flight)."""

    outcome: str
    status: int | None = None
    body: str = ""


def claim(engine: Engine, scope: str, key: str, fp: str, principal: str) -> Claim:
    now = datetime.now(UTC)
    with Session(engine) as session:
        session.add(IdempotencyRecord(scope=scope, key=key, fingerprint=fp, principal=principal, created_at=now))
        try:
            session.commit()
            return Claim("new")
        except IntegrityError:
            session.rollback()
        found = session.exec(
            select(IdempotencyRecord).where(IdempotencyRecord.scope == scope, IdempotencyRecord.key == key)
        ).first()
        if found is None:  # released between our insert and our read: try once more
            return claim(engine, scope, key, fp, principal)
        if found.fingerprint != fp:
            return Claim("conflict")
        if found.status_code is not None:
            return Claim("done", found.status_code, found.body)
        stale = now - timedelta(seconds=IN_FLIGHT_SECONDS)
        taken = session.execute(
            update(IdempotencyRecord)
            .where(col(IdempotencyRecord.id) == found.id, col(IdempotencyRecord.status_code).is_(None))
            .where(col(IdempotencyRecord.created_at) < stale)
            .values(created_at=now, principal=principal)
        )
        session.commit()
        return Claim("new") if taken.rowcount == 1 else Claim("busy")  # type: ignore[attr-defined]


def complete(engine: Engine, scope: str, key: str, status: int, body: str) -> None:
    """Keep the answer: the same request again gets it."""
    with Session(engine) as session:
        session.execute(
            update(IdempotencyRecord)
            .where(col(IdempotencyRecord.scope) == scope, col(IdempotencyRecord.key) == key)
            .values(status_code=status, body=body, completed_at=datetime.now(UTC))
        )
        session.commit()


def release(engine: Engine, scope: str, key: str) -> None:
    """Forget a request that got no final answer (no such loan, no answer in time, Temporal
    down): the next try runs it afresh."""
    with Session(engine) as session:
        session.execute(
            delete(IdempotencyRecord).where(
                col(IdempotencyRecord.scope) == scope,
                col(IdempotencyRecord.key) == key,
                col(IdempotencyRecord.status_code).is_(None),
            )
        )
        session.commit()
