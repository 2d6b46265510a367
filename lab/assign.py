"""Strategies for simulated loans (placeholder until the screening lands)."""

from __future__ import annotations

from pathlib import Path

from lab.simulate import Assigner, default_strategy


def assigner_for(experiment: Path | None) -> Assigner:
    return default_strategy
