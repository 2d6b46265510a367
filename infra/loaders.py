"""File loading for the pure rules in `models`: a policy's TOML file, a conduct rule set and a
holiday calendar. `models` validates text (`parse_policy`, `parse_ruleset`, `parse_holidays`);
this module finds and reads the files. Used by the start activity (`activities.records`) and
the audit export's retention (`ops.audit`)."""

from __future__ import annotations

from datetime import date
from pathlib import Path
from typing import Any

from models.conduct import RuleSet, parse_holidays, parse_ruleset
from models.policy import Policy, PolicyError, parse_policy, policy_path


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
