"""Engine set-up and the one write primitive every side effect uses: insert-once by key."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, event
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, SQLModel, create_engine, select

from db.tables import AuditRow

Row = TypeVar("Row", bound=SQLModel)


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """An engine for `url`, with the tables created. SQLite gets WAL and a busy timeout so
    the worker's activity threads can write side by side."""
    if url.startswith("sqlite"):
        path = url.removeprefix("sqlite:///")
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        engine = create_engine(url, pool_size=pool_size, pool_pre_ping=True)
    SQLModel.metadata.create_all(engine)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def audit_row(key: str, loan_id: str, action: str, actor: str, stage: str, at: Any, **detail: Any) -> AuditRow:
    """An audit entry; detail values are stored as JSON text."""
    return AuditRow(
        key=key,
        loan_id=loan_id,
        action=action,
        actor=actor,
        stage=stage,
        at=at,
        detail=json.dumps({k: str(v) for k, v in detail.items()}, ensure_ascii=False, sort_keys=True),
    )


def insert_once(engine: Engine, row: Row, key_field: str, extra: Sequence[SQLModel] = ()) -> tuple[Row, bool]:
    """Insert `row` (and `extra` rows, in the same transaction) unless a row with the same
    business key exists. Returns the stored row and whether it was already there.

    The pre-check makes the common retry cheap; the unique constraint settles races between
    two attempts that both passed it.
    """
    model = type(row)
    key = getattr(row, key_field)
    with Session(engine, expire_on_commit=False) as session:
        found = _find(session, model, key_field, key)
        if found is not None:
            return found, True
        session.add(row)
        session.add_all(extra)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            found = _find(session, model, key_field, key)
            if found is None:
                raise
            return found, True
        session.refresh(row)
        return row, False


def _find(session: Session, model: type[Row], key_field: str, key: object) -> Row | None:
    return session.exec(select(model).where(getattr(model, key_field) == key)).first()
