"""Engine set-up, the one write primitive every side effect uses (insert-once by key) and the
one way an audit entry is appended (chained onto its loan's hash chain, `models.audit`, and
captured as a webhook event when subscribers are told of it, `db.webhooks`)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, event, inspect
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session, SQLModel, col, create_engine, select

from db.tables import AuditRow
from db.webhooks import EVENT_SEQ_CONSTRAINT, capture_events
from models.audit import GENESIS, entry_hash

Row = TypeVar("Row", bound=SQLModel)
T = TypeVar("T")

CHAIN_ATTEMPTS = 8
"""How often a transaction that lost a race for a loan's next audit seq is run again."""

_CHAIN_CONSTRAINT = "uq_audit_loan_seq"
_SEQ_CONSTRAINTS = {
    _CHAIN_CONSTRAINT: "audit.loan_id, audit.seq",
    EVENT_SEQ_CONSTRAINT: "webhook_events.loan_id, webhook_events.seq",
}
"""The per-loan sequences a transaction takes the next number of (constraint: SQLite's words)."""

_RETRY_SQLSTATES = {"40001", "40P01"}
"""PostgreSQL's serialization failure and deadlock: the transaction can simply run again."""


def make_engine(
    url: str, pool_size: int = 10, max_overflow: int = 10, *, sqlite_connections: int | None = None
) -> Engine:
    """An engine for `url`. It changes no schema: `db.migrate.upgrade` (run by the worker at
    start) brings the database to the current one first.

    SQLite gets WAL and a busy timeout so the worker's activity threads can write side by side;
    `sqlite_connections` caps its pool (None: SQLAlchemy's default). The worker uses one: SQLite
    takes one writer at a time anyway, and a thread queued for the pool's connection is woken the
    moment it is free, where writers on connections of their own wait in SQLite's busy handler,
    which polls with sleeps of up to 100 ms (under load, most of an activity's time).
    Other databases get a pool of `pool_size` connections kept open plus up to `max_overflow`
    opened under load (DATABASE_POOL_SIZE, DATABASE_MAX_OVERFLOW), checked before use so a
    connection the server dropped is replaced instead of failing an activity."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pool: dict[str, Any] = (
            {}
            if sqlite_connections is None
            else {"pool_size": sqlite_connections, "max_overflow": 0, "pool_timeout": 30}
        )
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **pool)
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    connect_args = {"options": _PG_TIMEOUTS} if url.startswith("postgresql") else {}
    return create_engine(
        url, pool_size=pool_size, max_overflow=max_overflow, pool_pre_ping=True, connect_args=connect_args
    )


_PG_TIMEOUTS = "-c lock_timeout=30s -c idle_in_transaction_session_timeout=60s"
"""A safety net: a transaction left open ends after a minute, and a lock wait fails after 30 s
instead of hanging (the activity gets an OperationalError, and the guard and Temporal's activity
retries run it again). Seen once in a full test run: a guard decision's transaction idle after
reading the audit table, holding a person's lock row, every later decision for that person
waiting on it. The cause, temporalio's cancellation exception raised inside the database code
of a synchronous activity, is gone (`worker.Uninterrupted`, tests/db/test_thread_cancel.py)."""


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def audit_row(
    key: str,
    loan_id: str,
    action: str,
    actor: str,
    stage: str,
    at: Any,
    *,
    rule_id: str = "",
    evidence_ref: str = "",
    **detail: Any,
) -> AuditRow:
    """An audit entry (not chained yet: that happens when it is appended); detail values are
    stored as JSON text."""
    return AuditRow(
        key=key,
        loan_id=loan_id,
        action=action,
        actor=actor,
        stage=stage,
        at=at,
        rule_id=rule_id,
        evidence_ref=evidence_ref,
        detail=json.dumps({k: str(v) for k, v in detail.items()}, ensure_ascii=False, sort_keys=True),
    )


# --- the audit chain ----------------------------------------------------------------------


def append_audit(session: Session, row: AuditRow) -> AuditRow:
    """Append `row` to its loan's chain inside the caller's transaction: read the loan's last
    entry, set seq / prev_hash / hash, insert (flushed at once, so a lost race shows here).

    On SQLite the transaction takes the database's write lock before the last entry is read,
    so appends are serialised. Elsewhere a concurrent append of the same seq hits the unique
    (loan_id, seq) constraint: the append is rolled back to a savepoint and tried again on
    the new last entry (read committed sees it), up to CHAIN_ATTEMPTS times.
    """
    session.flush()  # the business row's change first
    hold_write_lock(session)
    for attempt in range(CHAIN_ATTEMPTS):
        try:
            with session.begin_nested():  # flushed on leaving: chained by chain_new_entries
                session.add(row)
            return row
        except IntegrityError as exc:
            if not is_chain_conflict(exc) or attempt == CHAIN_ATTEMPTS - 1:
                raise
            _unchain(row)
            _backoff(attempt)
    raise AssertionError("unreachable")


def chain_new_entries(session: OrmSession) -> None:
    """Chain every new, not yet chained AuditRow in `session`, in the order added: the one
    place where seq, prev_hash and hash are set. Runs before each flush (so an entry added
    with a plain `session.add` is chained too). The webhook event of each entry that makes
    one joins the same flush (`db.webhooks.capture_events`): written with its effect or not
    at all."""
    pending = [obj for obj in session.new if isinstance(obj, AuditRow) and not obj.hash]
    if not pending:
        return
    pending.sort(key=lambda obj: inspect(obj).insert_order or 0)
    hold_write_lock(session)
    heads: dict[str, tuple[int, str]] = {}
    for row in pending:
        if row.loan_id not in heads:
            heads[row.loan_id] = _last_entry(session, row.loan_id)
        seq, prev_hash = heads[row.loan_id]
        row.seq, row.prev_hash = seq + 1, prev_hash
        row.hash = entry_hash(prev_hash, row)
        heads[row.loan_id] = (row.seq, row.hash)
    capture_events(session, pending)


def _last_entry(session: OrmSession, loan_id: str) -> tuple[int, str]:
    """(seq, hash) of the loan's newest entry, or (0, GENESIS) for a loan with none."""
    last = session.execute(
        select(AuditRow.seq, AuditRow.hash)
        .where(AuditRow.loan_id == loan_id)
        .order_by(col(AuditRow.seq).desc())
        .limit(1)
    ).first()
    return (0, GENESIS) if last is None else (int(last[0]), str(last[1]))


@event.listens_for(OrmSession, "before_flush")
def _before_flush(session: OrmSession, _context: Any, _instances: Any) -> None:
    for obj in session.deleted:
        if isinstance(obj, AuditRow):
            raise PermissionError(f"audit entry {obj.key} cannot be deleted: the audit record is append-only")
    for obj in session.dirty:
        if isinstance(obj, AuditRow) and session.is_modified(obj):
            raise PermissionError(f"audit entry {obj.key} cannot be changed: the audit record is append-only")
    chain_new_entries(session)


def is_chain_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a lost race for a loan's next audit seq or webhook event seq (to be
    retried), as opposed to a duplicate business key (which means "already done").

    PostgreSQL (psycopg) names the violated constraint; SQLite only says which columns.
    A deadlock or serialization failure (PostgreSQL) or a busy SQLite database is retried too.
    """
    orig = getattr(exc, "orig", None)
    if isinstance(exc, IntegrityError):
        constraint = getattr(getattr(orig, "diag", None), "constraint_name", None)
        if constraint:
            return constraint in _SEQ_CONSTRAINTS
        message = str(orig)
        return any(name in message or columns in message for name, columns in _SEQ_CONSTRAINTS.items())
    if isinstance(exc, DBAPIError):
        if getattr(orig, "sqlstate", None) in _RETRY_SQLSTATES:
            return True
        message = str(orig).lower()
        return any(s in message for s in ("database is locked", "deadlock detected", "could not serialize"))
    return False


def _is_sqlite(session: OrmSession) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "sqlite"


def hold_write_lock(session: OrmSession) -> None:
    """SQLite: make sure the transaction holds the database's write lock before it reads what
    it is about to decide on (the driver starts transactions only at the first write, so a
    transaction whose first write is the audit entry would read the chain's head outside it).
    Other databases: nothing (they lock rows: the unique constraint settles the chain,
    `db.contacts.lock_person` the guard)."""
    if not _is_sqlite(session):
        return
    dbapi = session.connection().connection.dbapi_connection
    if dbapi is not None and not dbapi.in_transaction:
        dbapi.execute("BEGIN IMMEDIATE")


def _unchain(obj: SQLModel) -> None:
    """Forget what a rolled-back attempt set on a row, so the next attempt inserts it afresh."""
    if "id" in type(obj).model_fields and isinstance(getattr(obj, "id", None), int):
        obj.id = None
    if isinstance(obj, AuditRow):
        obj.seq, obj.prev_hash, obj.hash = 0, "", ""


def _backoff(attempt: int) -> None:
    time.sleep(random.uniform(0, 0.01 * 2**attempt))


# --- insert once --------------------------------------------------------------------------


def insert_once(engine: Engine, row: Row, key_field: str, extra: Sequence[SQLModel] = ()) -> tuple[Row, bool]:
    """Insert `row` (and `extra` rows, in the same transaction) unless a row with the same
    business key exists. Returns the stored row and whether it was already there. Audit
    entries among them (`row` or in `extra`) are appended to their loans' chains in the
    same transaction.

    The pre-check makes the common retry cheap; the unique constraint settles races between
    two attempts that both passed it. A transaction that lost the race for a loan's next
    audit seq (and whose business key is still free) is run again, up to CHAIN_ATTEMPTS times.
    """
    model = type(row)
    key = getattr(row, key_field)
    for attempt in range(CHAIN_ATTEMPTS):
        with Session(engine, expire_on_commit=False) as session:
            found = _find(session, model, key_field, key)
            if found is not None:
                return found, True
            session.add(row)
            session.add_all(extra)  # audit entries are chained by the flush, after `row`
            try:
                session.commit()
            except (IntegrityError, OperationalError) as exc:
                session.rollback()
                found = _find(session, model, key_field, key)
                if found is not None:
                    return found, True
                if not is_chain_conflict(exc) or attempt == CHAIN_ATTEMPTS - 1:
                    raise
            else:
                session.refresh(row)
                return row, False
        _unchain(row)
        for obj in extra:
            _unchain(obj)
        _backoff(attempt)
    raise AssertionError("unreachable")


def _find(session: Session, model: type[Row], key_field: str, key: object) -> Row | None:
    return session.exec(select(model).where(getattr(model, key_field) == key)).first()


# --- several writes in one transaction ----------------------------------------------------


def write_once(session: Session, row: Row, key_field: str, extra: Sequence[SQLModel] = ()) -> tuple[Row, bool]:
    """`insert_once` inside the caller's transaction (`in_transaction`): insert `row` and
    `extra` unless a row with `row`'s business key exists; the stored row and whether it was
    already there. Flushed at once, so a lost race shows here and the transaction runs again."""
    found = _find(session, type(row), key_field, getattr(row, key_field))
    if found is not None:
        return found, True
    session.add(row)
    session.add_all(extra)  # audit entries are chained by the flush, after `row`
    session.flush()
    return row, False


def in_transaction(engine: Engine, work: Callable[[Session], T]) -> T:
    """Run `work` in one transaction and commit it. Why one: the effects of a loan's step (a
    payment's ledger rows, the confirmation's outbox row, the audit entries, the loan's stage)
    cost one commit instead of one each, and on SQLite one turn of the single writer. A
    transaction the database turned back (a lost race for a business key or a loan's next audit
    seq, a deadlock, a busy SQLite) is run again from the start, up to CHAIN_ATTEMPTS times:
    `work` builds its rows afresh each time, and `write_once` then finds what a racing attempt
    wrote."""
    for attempt in range(CHAIN_ATTEMPTS):
        with Session(engine, expire_on_commit=False) as session:
            try:
                result = work(session)
                session.commit()
            except (IntegrityError, OperationalError):
                session.rollback()
                if attempt == CHAIN_ATTEMPTS - 1:
                    raise
            else:
                return result
        _backoff(attempt)
    raise AssertionError("unreachable")
