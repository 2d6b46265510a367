"""The contact budget: every contact made to a person, across all their loans and agencies.

One table, one row per allowed contact. The guard activity reads a person's recent rows and
inserts the new one in a single transaction that first takes a per-person lock
(`lock_person`), so two loans (or an agency) asking at the same moment are decided one after
the other against the same history: three loans never mean three times the calls.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from db.store import hold_write_lock
from db.types import UtcDateTime
from models.conduct import PastContact


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
    """A row per person, locked at the start of every guard transaction (`lock_person`).
    `version` is no longer written (the lock is SELECT ... FOR UPDATE); kept so the schema
    stays as it was."""

    __tablename__ = "person_locks"

    borrower_id: str = Field(primary_key=True)
    version: int = 0


def lock_person(session: Session, borrower_id: str) -> None:
    """Hold the person's lock until the session's transaction ends, before anything about the
    person is read: a second guard transaction for the same person waits here until the
    first commits, then reads a history that includes the first one's contact.

    PostgreSQL: the lock row is created if missing (INSERT ... ON CONFLICT DO NOTHING, which
    waits for a concurrent creator of the same row and then does nothing) and locked with
    SELECT ... FOR UPDATE; read committed gives each later statement a fresh snapshot.
    SQLite has no row locks: BEGIN IMMEDIATE takes the database's write lock, which
    serialises every writer (FOR UPDATE is not rendered there).
    """
    dialect = session.get_bind().dialect.name
    hold_write_lock(session)
    if dialect in ("postgresql", "sqlite"):
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        session.execute(
            insert(PersonLock)
            .values(borrower_id=borrower_id, version=0)
            .on_conflict_do_nothing(index_elements=["borrower_id"])
        )
    else:  # no portable upsert: create it in a savepoint, a duplicate means it exists
        try:
            with session.begin_nested():
                session.add(PersonLock(borrower_id=borrower_id, version=0))
        except IntegrityError:
            pass
    session.execute(select(PersonLock.borrower_id).where(PersonLock.borrower_id == borrower_id).with_for_update())


def recent_contacts(session: Session, borrower_ids: Iterable[str], since: datetime) -> dict[str, list[PastContact]]:
    """Each person's contacts since `since` (any loan, any agency), as the guard reads them: a
    plain read that takes no lock and no slot (the desk previews the guard's answer with it)."""
    ids = sorted(set(borrower_ids))
    found: dict[str, list[PastContact]] = {b: [] for b in ids}
    if not ids:
        return found
    rows = session.exec(
        select(ContactRow).where(col(ContactRow.borrower_id).in_(ids), col(ContactRow.at) > since)
    ).all()
    for r in rows:
        found[r.borrower_id].append(PastContact(channel=r.channel, at=r.at, connected=r.connected))
    return found
