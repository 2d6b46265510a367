"""Champion/challenger experiments for operators: start one from its TOML (checked against the
scorecard and the policies before anything is written), pause, resume, end it with a winner,
list and show. The CLI (`starter.py experiment ...`) and the HTTP API
(`api/routes/experiments.py`) both call these, so they refuse the same things the same way.

Errors: `ExperimentError`, `SegmentationError`, `PolicyError` (a bad definition, naming the
file and field), `db.experiments.ExperimentNotFound`, `db.experiments.ExperimentConflict`
(the state does not allow it). What each status means for new loans: `models.experiment`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from db import experiments
from db.experiments import ExperimentConflict, ExperimentNotFound
from infra.loaders import check_experiment, experiment_file, load_policy
from infra.settings import settings
from models.experiment import ExperimentError, parse_experiment, resolve_winners
from models.policy import PolicyError
from models.segmentation import SegmentationError

DEFINITION_ERRORS = (ExperimentError, SegmentationError, PolicyError)
"""A definition (or a winner) that cannot be used: the caller's input is wrong."""


def start(
    engine: Engine,
    definition: str,
    source: str = "experiment",
    *,
    strategies_dir: Path | None = None,
    policies_dir: Path | None = None,
) -> dict[str, Any]:
    """Check `definition` (TOML) as a loan would meet it, then start it."""
    cfg = settings()
    experiment, _ = check_experiment(
        definition, source, strategies_dir or cfg.strategies_dir, policies_dir or cfg.policies_dir
    )
    return experiments.start(engine, experiment, definition)


def read_definition(file: str, strategies_dir: Path | None = None) -> tuple[str, str]:
    """The text and name of an experiment file: a path, or a name under strategies/experiments/."""
    path = Path(file)
    if not path.is_file():
        path = experiment_file(file, strategies_dir or settings().strategies_dir)
    if not path.is_file():
        raise ExperimentError(f"{file}: no such experiment file (nor {path})")
    return path.read_text(encoding="utf-8"), str(path)


def end(
    engine: Engine, name: str, winner: str, segment: str | None = None, *, policies_dir: Path | None = None
) -> dict[str, Any]:
    """End experiment `name` with `winner` (an arm's name or a policy) in `segment` or every
    segment; ending an ended one changes the winners named. Every winning policy must load."""
    row = experiments.get(engine, name)
    experiment = parse_experiment(row["definition"], f"experiment {name}")
    winners = resolve_winners(experiment, winner, segment)
    if not winners:
        raise ExperimentError(f"{winner!r} is not an arm of segment {segment!r} in experiment {name}")
    for policy in sorted(set(winners.values())):
        load_policy(policy, policies_dir or settings().policies_dir)
    return experiments.end(engine, name, winners)


pause = experiments.pause
resume = experiments.resume
get = experiments.get
list_all = experiments.list_all

__all__ = [
    "DEFINITION_ERRORS",
    "ExperimentConflict",
    "ExperimentNotFound",
    "end",
    "get",
    "list_all",
    "pause",
    "read_definition",
    "resume",
    "start",
]
