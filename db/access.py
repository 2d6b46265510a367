"""Who may call the HTTP API (`api_tokens`) and what it already answered (`idempotency_keys`).

A token is stored only as its SHA-256: the token itself is shown once, when it is made
(`api.tokens.create_token`). Tokens are 256 random bits, so a fast hash is enough (no
dictionary to guess from, unlike a password). An idempotency record holds the answer to a
write sent with an `Idempotency-Key`, so the same request sent again gets the same answer
and changes nothing."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from db.tables import utcnow
from db.types import UtcDateTime


class ApiToken(SQLModel, table=True):
    """A bearer token: its holder's name, role, agency (role `agency`) and queues (collectors)."""

    __tablename__ = "api_tokens"

    id: int | None = Field(default=None, primary_key=True)
    token_id: str = Field(unique=True)
    """The token's public part (its prefix): names it in lists and revocation."""
    token_hash: str = Field(unique=True)
    name: str = Field(index=True)
    role: str
    agency: str = ""
    queues: str = ""
    """Comma-separated task queues a collector works (empty: none)."""
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UtcDateTime)


class IdempotencyRecord(SQLModel, table=True):
    """One write sent with an Idempotency-Key: the request's fingerprint and, once done, the
    answer. `(scope, key)` is unique, so two copies of a request racing each other cannot both
    run: the second finds the first's record."""

    __tablename__ = "idempotency_keys"
    __table_args__ = (UniqueConstraint("scope", "key", name="uq_idempotency_scope_key"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str
    """What the key is unique within: the operation and the loan (`payment:<loan id>`)."""
    key: str
    fingerprint: str
    """SHA-256 of the canonical request body: the same key with another body is a conflict."""
    principal: str
    status_code: int | None = None
    """None while the request is in flight."""
    body: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    completed_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
