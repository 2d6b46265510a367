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

from sqlalchemy import Engine, Table, delete, insert, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

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


_RECORDS: Table = IdempotencyRecord.__table__  # type: ignore[attr-defined]
"""The table itself: the writes on every payment's path (the INSERT before, the UPDATE after)
are plain statements on a connection, not ORM units of work. A session's flush, and its bulk
UPDATE's synchronisation with the objects it holds (none here), cost more CPU than the
statements, and that CPU is taken under the GIL the API's event loop needs: plain statements
took 2.5-3 ms off the API process's CPU per payment (bench/api_payments.py)."""


def claim(engine: Engine, scope: str, key: str, fp: str, principal: str) -> Claim:
    now = datetime.now(UTC)
    try:
        with engine.begin() as conn:
            conn.execute(
                insert(_RECORDS).values(
                    scope=scope, key=key, fingerprint=fp, principal=principal, body="", created_at=now
                )
            )
        return Claim("new")
    except IntegrityError:
        pass  # the key is taken: by this request before (an answer, or in flight) or by another body
    with Session(engine) as session:
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
    with engine.begin() as conn:
        conn.execute(
            update(_RECORDS)
            .where(_RECORDS.c.scope == scope, _RECORDS.c.key == key)
            .values(status_code=status, body=body, completed_at=datetime.now(UTC))
        )


def release(engine: Engine, scope: str, key: str) -> None:
    """Forget a request that got no final answer (no such loan, no answer in time, Temporal
    down): the next try runs it afresh."""
    with engine.begin() as conn:
        conn.execute(
            delete(_RECORDS).where(_RECORDS.c.scope == scope, _RECORDS.c.key == key, _RECORDS.c.status_code.is_(None))
        )
