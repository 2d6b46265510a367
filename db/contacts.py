"""The contact budget: every contact made to a person, across all their loans and agencies.

One table, one row per allowed contact. The guard activity reads a person's recent rows and
inserts the new one in a single transaction that first takes a per-person lock row, so two
loans (or an agency) asking at the same moment are decided one after the other against the
same history: three loans never mean three times the calls.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from db.types import UtcDateTime


class ContactRow(SQLModel, table=True):
    __tablename__ = "contacts"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)
    borrower_id: str = Field(index=True)
    loan_id: str = Field(index=True)
    channel: str
    purpose: str
    at: datetime = Field(sa_type=UtcDateTime, index=True)
    connected: bool = False


class PersonLock(SQLModel, table=True):
    """A row per person, updated at the start of every guard transaction: the row lock (or,
    on SQLite, the database write lock) serialises decisions for the same person."""

    __tablename__ = "person_locks"

    borrower_id: str = Field(primary_key=True)
    version: int = 0
