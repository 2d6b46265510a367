"""`starter.py simulate`: a scenario's portfolio through an experiment's strategies, written as
the report a live experiment gets. The CLI only parses and prints; this is the whole command.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from lab.assign import assigner_for
from lab.figures import compute
from lab.report import write_figures
from lab.scenario import load_scenario
from lab.simulate import ROOT, simulate

SCENARIO = ROOT / "strategies" / "scenarios" / "sample.toml"


@dataclass(frozen=True)
class Simulated:
    report: Path
    loans: int
    seconds: float
    sentences: list[str]
    """The summary: which arm is ahead on what, and whether it is significant; then warnings."""


def run_simulation(
    *,
    loans: int,
    days: int,
    seed: int,
    out: Path,
    experiment: Path | None,
    scenario: Path = SCENARIO,
    processes: int = 1,
) -> Simulated:
    """Simulate, compute the figures, write report.html and the CSV files into `out`. Raises
    ValueError (naming the file and field) for a broken scenario, experiment or policy."""
    sc = load_scenario(scenario)
    assign = assigner_for(experiment)
    t0 = time.perf_counter()
    run = simulate(sc, loans=loans, days=days, seed=seed, assign=assign, processes=processes)
    seconds = time.perf_counter() - t0
    figures = compute(run.results)
    context = {
        "source": f"simulation of {loans:,} synthetic loans for {days} days after hand-over (lab/simulate.py)",
        "scenario": f"{sc.name}: {sc.description} ({_shown(scenario)})",
        "experiment": _shown(experiment) if experiment else "none: each segment's champion (strategies/map.toml)",
        "seed": f"{seed} (same seed, same figures to the cent)",
        "costs": f"the scenario's [costs] table, in {sc.costs.currency}",
    }
    name = experiment.stem if experiment else "strategy map"
    path = write_figures(figures, out, title=f"Simulation: {name}", context=context)
    sentences = [c.sentence for c in figures.comparisons if c.segment == "all"] + figures.warnings
    return Simulated(report=path, loans=len(run.results), seconds=seconds, sentences=sentences)


def _shown(path: Path) -> str:
    """A path as the user would type it from the project root."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return str(path)
