"""The people who sign in to the collectors' desk (`desk_users`): name, password hash (argon2,
never the password), role (`collector` or `supervisor`), the task queues a collector works, the
language of their pages, and the lock-out state (wrong passwords in a row, locked until when).

`session_epoch` is written into every session cookie: raising it (a new password, an unlock by
an operator) ends every session the user holds, although the cookies themselves are stateless."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from db.tables import utcnow
from db.types import UtcDateTime


class DeskUser(SQLModel, table=True):
    """A desk user (`starter.py user add|list|unlock`, `desk.users`)."""

    __tablename__ = "desk_users"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(unique=True)
    password_hash: str
    role: str
    """`collector` or `supervisor` (the roles of `api.auth`)."""
    queues: str = ""
    """Comma-separated task queues a collector works (empty: none)."""
    language: str = "zh"
    """`zh` or `en`: the language of the desk's pages for this user."""
    failures: int = 0
    """Wrong passwords in a row (`models.lockout`)."""
    locked_until: datetime | None = Field(default=None, sa_type=UtcDateTime)
    session_epoch: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    last_sign_in: datetime | None = Field(default=None, sa_type=UtcDateTime)
