"""File loading for the pure rules in `models`: a policy's TOML file, a conduct rule set, a
holiday calendar, and the strategies folder (scorecard, strategy map, experiments). `models`
validates text (`parse_policy`, `parse_ruleset`, `parse_holidays`, `parse_segmentation`,
`parse_strategy_map`, `parse_experiment`); this module finds and reads the files. Used by the
start activity (`activities.records`, `activities.screening`), the experiment tools
(`ops.experiments`) and the audit export's retention (`ops.audit`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from models.conduct import RuleSet, parse_holidays, parse_ruleset
from models.experiment import (
    Experiment,
    ExperimentError,
    StrategyMap,
    check_covers,
    parse_experiment,
    parse_strategy_map,
)
from models.policy import Policy, PolicyError, parse_policy, policy_path
from models.segmentation import Scorecard, SegmentationError, parse_segmentation

STRATEGY_MAP = "map"
"""`strategies/map.toml`: each segment's champion when no experiment applies."""
EXPERIMENTS = "experiments"
"""`strategies/experiments/`: the experiment files shipped with the project."""


def load_policy(name: str, folder: Path) -> Policy:
    """Read and validate policy `name` from `folder`."""
    path = policy_path(name, folder)
    if not path.is_file():
        raise PolicyError(f"{path}: no such policy file")
    return parse_policy(path.read_text(encoding="utf-8"), str(path))


def load_ruleset(name: str, folder: Path, overrides: dict[str, Any] | None = None) -> RuleSet:
    """Read `folder/<name>.toml`, apply `overrides` (merged into the file's tables) and validate."""
    path = folder / f"{name}.toml"
    if not name.isalnum() or not path.is_file():
        raise ValueError(f"no rule set {name!r} in {folder}")
    return parse_ruleset(path.read_text(encoding="utf-8"), str(path), overrides)


def load_holidays(name: str | None, folder: Path) -> frozenset[date]:
    """Holiday dates from `folder/holidays/<name>.toml` (`dates = [...]`)."""
    if not name:
        return frozenset()
    return parse_holidays((folder / "holidays" / f"{name}.toml").read_text(encoding="utf-8"))


def _plain_name(name: str, what: str) -> str:
    """Names are plain words so no path escapes the folder."""
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"{what} name {name!r} must be letters, digits, '-' or '_'")
    return name


def load_segmentation(name: str, folder: Path) -> Scorecard:
    """Read and validate the scorecard `folder/<name>.toml` (`SegmentationError` naming the file)."""
    try:
        path = folder / f"{_plain_name(name, 'segmentation')}.toml"
    except ValueError as exc:
        raise SegmentationError(str(exc)) from exc
    if not path.is_file():
        raise SegmentationError(f"{path}: no such segmentation file")
    return parse_segmentation(path.read_text(encoding="utf-8"), str(path))


def load_strategy_map(folder: Path) -> tuple[StrategyMap, Scorecard]:
    """The strategy map `folder/map.toml` and its scorecard, checked to cover each other."""
    path = folder / f"{STRATEGY_MAP}.toml"
    if not path.is_file():
        raise ExperimentError(f"{path}: no such strategy map")
    strategy = parse_strategy_map(path.read_text(encoding="utf-8"), str(path))
    card = load_segmentation(strategy.segmentation, folder)
    check_covers(strategy, card, str(path))
    return strategy, card


def experiment_file(name: str, folder: Path) -> Path:
    """The shipped experiment file `folder/experiments/<name>.toml` (`name` may end in .toml)."""
    stem = _plain_name(name.removesuffix(".toml"), "experiment file")
    return folder / EXPERIMENTS / f"{stem}.toml"


def check_experiment(text: str, source: str, strategies_dir: Path, policies_dir: Path) -> tuple[Experiment, Scorecard]:
    """Parse an experiment and check everything a loan would meet: its scorecard loads and
    covers the same segments, and every policy it names loads and validates. Raises
    `ExperimentError`, `SegmentationError` or `PolicyError`, each naming the file and field."""
    experiment = parse_experiment(text, source)
    card = load_segmentation(experiment.segmentation, strategies_dir)
    check_covers(experiment, card, source)
    for policy in sorted(experiment.policies()):
        load_policy(policy, policies_dir)
    return experiment, card
