"""The experiments table's rules (`db.experiments`, through `ops.experiments`), on SQLite and
PostgreSQL: one experiment active at a time (enforced by the database too), a name used once,
pause and resume, ending with winners (again: amended), and which experiment a new loan meets."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from db import experiments as table
from db.experiments import ACTIVE, ExperimentConflict, ExperimentNotFound, ExperimentRow
from infra.settings import ROOT
from ops import experiments

SAMPLE = (ROOT / "strategies" / "experiments" / "sample.toml").read_text(encoding="utf-8")
NAME = "early-call-2026-12"


def test_an_experiment_runs_pauses_resumes_and_ends(engine: Engine) -> None:
    assert table.current(engine) is None
    assert experiments.start(engine, SAMPLE)["status"] == "running"
    found = table.current(engine)
    assert found is not None and found[0].name == NAME and found[1] == "running"
    assert experiments.pause(engine, NAME)["status"] == "paused"
    assert experiments.pause(engine, NAME)["status"] == "paused"  # twice: harmless
    assert table.current(engine) is not None and table.current(engine)[1] == "paused"  # type: ignore[index]
    assert experiments.resume(engine, NAME)["status"] == "running"
    ended = experiments.end(engine, NAME, "early-call")
    assert ended["winners"] == {"standard": "early-call", "high-risk": "early-call"} and ended["ended_at"]
    assert table.current(engine) == (found[0], "ended", {"standard": "early-call", "high-risk": "early-call"})
    amended = experiments.end(engine, NAME, "champion", "standard")
    assert amended["winners"] == {"standard": "default", "high-risk": "early-call"}
    assert amended["ended_at"] == ended["ended_at"]
    with pytest.raises(ExperimentConflict, match="has ended"):
        experiments.resume(engine, NAME)
    with pytest.raises(ExperimentConflict, match="never starts again"):
        experiments.start(engine, SAMPLE)


def test_one_experiment_is_active_at_a_time(engine: Engine) -> None:
    experiments.start(engine, SAMPLE)
    second = SAMPLE.replace(f'name = "{NAME}"', 'name = "second"')
    with pytest.raises(ExperimentConflict, match="one experiment at a time"):
        experiments.start(engine, second)
    with Session(engine) as session, pytest.raises(IntegrityError):  # the database holds the rule too
        session.add(ExperimentRow(name="raw", definition=second, segmentation="segmentation", active=ACTIVE))
        session.commit()
    experiments.end(engine, NAME, "champion")
    assert experiments.start(engine, second)["status"] == "running"
    assert [e["name"] for e in experiments.list_all(engine)] == ["second", NAME]
    found = table.current(engine)
    assert found is not None and found[0].name == "second"  # the active one before the last ended


def test_an_unknown_experiment_is_not_found(engine: Engine) -> None:
    for call in (experiments.get, experiments.pause, experiments.resume):
        with pytest.raises(ExperimentNotFound):
            call(engine, "nope")
    with pytest.raises(ExperimentNotFound):
        experiments.end(engine, "nope", "champion")
