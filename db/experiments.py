"""Champion/challenger experiments as they run (`experiments`): the definition (the TOML text as
started, so what an experiment was stays readable after its file changes), the status and the
winners chosen when it ended. Plain SQL over one table, used by the CLI and the API (through
`ops.experiments`, which validates) and read by the start activity (`activities.screening`).

The rules:
- at most one experiment is active (running or paused) at a time: a new loan gets exactly one
  strategy. The database enforces it (`active` is unique and set only while active), so two
  starts racing cannot both win;
- a name is used once: an ended experiment never starts again (its loans keep its arms, and a
  second run under the same name would put new loans in the same buckets);
- which experiment a new loan meets (`current`): the active one, else the one that ended last
  (its winners), else none (the strategy map's champions).
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Engine, Text
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from db.tables import utcnow
from db.types import UtcDateTime
from models.experiment import Experiment, ExperimentStatus, parse_experiment

ACTIVE = "active"
"""The value of `ExperimentRow.active` while an experiment runs or is paused (NULL after)."""


class ExperimentRow(SQLModel, table=True):
    __tablename__ = "experiments"

    name: str = Field(primary_key=True)
    definition: str = Field(sa_column=Column(Text, nullable=False))
    """The experiment's TOML text as it was started."""
    segmentation: str
    status: str = "running"
    """running | paused | ended"""
    winners: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    """JSON {segment: policy} chosen when it ended (segments left out keep their champion)."""
    active: str | None = Field(default=None, unique=True)
    """"active" while running or paused, NULL once ended: at most one active experiment."""
    started_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)
    paused_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UtcDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UtcDateTime)


class ExperimentNotFound(LookupError):
    """No experiment of that name."""


class ExperimentConflict(ValueError):
    """The request does not fit the experiment's state (or another experiment's)."""


def _get(session: Session, name: str) -> ExperimentRow:
    row = session.get(ExperimentRow, name)
    if row is None:
        raise ExperimentNotFound(f"no experiment {name!r}")
    return row


def _active(session: Session) -> ExperimentRow | None:
    return session.exec(select(ExperimentRow).where(ExperimentRow.active == ACTIVE)).first()


def start(engine: Engine, experiment: Experiment, definition: str, now: datetime | None = None) -> dict[str, Any]:
    """Start `experiment` (already validated; `definition` its TOML text). Refused if the name
    was used before or another experiment is active."""
    with Session(engine) as session:
        old = session.get(ExperimentRow, experiment.name)
        if old is not None:
            if old.status == "ended":
                raise ExperimentConflict(
                    f"experiment {experiment.name!r} has ended; an ended experiment never starts again (use a new name)"
                )
            raise ExperimentConflict(f"experiment {experiment.name!r} is already {old.status}")
        other = _active(session)
        if other is not None:
            raise ExperimentConflict(
                f"experiment {other.name!r} is {other.status}; end it first (one experiment at a time)"
            )
        at = now or utcnow()
        row = ExperimentRow(
            name=experiment.name,
            definition=definition,
            segmentation=experiment.segmentation,
            status="running",
            active=ACTIVE,
            started_at=at,
            updated_at=at,
        )
        session.add(row)
        try:
            session.commit()
        except IntegrityError as exc:  # a start racing this one won
            raise ExperimentConflict("another experiment was started at the same moment; look again") from exc
        return describe(row)


def pause(engine: Engine, name: str, now: datetime | None = None) -> dict[str, Any]:
    """New loans get the champion (not in the test) until it resumes; pausing twice is harmless."""
    return _move(engine, name, "paused", now)


def resume(engine: Engine, name: str, now: datetime | None = None) -> dict[str, Any]:
    """New loans are split between the arms again; resuming a running experiment is harmless."""
    return _move(engine, name, "running", now)


def _move(engine: Engine, name: str, status: ExperimentStatus, now: datetime | None) -> dict[str, Any]:
    with Session(engine) as session:
        row = _get(session, name)
        if row.status == "ended":
            raise ExperimentConflict(f"experiment {name!r} has ended")
        if row.status != status:
            at = now or utcnow()
            row.status, row.updated_at = status, at
            if status == "paused":
                row.paused_at = at
            session.add(row)
            session.commit()
        return describe(row)


def end(engine: Engine, name: str, winners: dict[str, str], now: datetime | None = None) -> dict[str, Any]:
    """End the experiment: new loans get `winners` (policy per segment; the others their
    champion). Ending it again changes the winners of the segments named (loans already
    started keep their arm and policy either way)."""
    with Session(engine) as session:
        row = _get(session, name)
        at = now or utcnow()
        if row.status != "ended":
            row.ended_at = at
        row.status, row.active, row.updated_at = "ended", None, at
        row.winners = json.dumps({**json.loads(row.winners), **winners}, sort_keys=True)
        session.add(row)
        session.commit()
        return describe(row)


def get(engine: Engine, name: str) -> dict[str, Any]:
    with Session(engine) as session:
        return describe(_get(session, name))


def list_all(engine: Engine) -> list[dict[str, Any]]:
    """Every experiment, newest first."""
    with Session(engine) as session:
        rows = session.exec(select(ExperimentRow).order_by(col(ExperimentRow.started_at).desc())).all()
        return [describe(row) for row in rows]


def current(engine: Engine) -> tuple[Experiment, ExperimentStatus, dict[str, str]] | None:
    """The experiment a new loan meets, its status and winners (see the module doc)."""
    with Session(engine) as session:
        row = _active(session)
        if row is None:
            query = select(ExperimentRow).where(ExperimentRow.status == "ended")
            row = session.exec(query.order_by(col(ExperimentRow.ended_at).desc()).limit(1)).first()
        if row is None:
            return None
        experiment = _parsed(row.definition, row.name)
        status: ExperimentStatus = (
            "ended" if row.status == "ended" else "paused" if row.status == "paused" else "running"
        )
        return experiment, status, json.loads(row.winners)


@lru_cache(maxsize=16)
def _parsed(definition: str, name: str) -> Experiment:
    """Parsed once per process and definition (every new loan reads the current experiment)."""
    return parse_experiment(definition, f"experiment {name} (database)")


def describe(row: ExperimentRow) -> dict[str, Any]:
    """The row as the CLI and the API show it (times as ISO text)."""

    def iso(at: datetime | None) -> str | None:
        return at.isoformat() if at is not None else None

    return {
        "name": row.name,
        "status": row.status,
        "segmentation": row.segmentation,
        "winners": json.loads(row.winners),
        "started_at": iso(row.started_at),
        "paused_at": iso(row.paused_at),
        "ended_at": iso(row.ended_at),
        "updated_at": iso(row.updated_at),
        "definition": row.definition,
    }
