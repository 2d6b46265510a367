"""The strategy lab's simulator: a synthetic portfolio through the decider, no Temporal.

    python bench/lab_simulate.py [--loans 100000] [--days 180] [--seed 7] [--processes N]
                                 [--scenario strategies/scenarios/sample.toml] [--experiment FILE]
                                 [--profile-loans 2000]

Times each phase (drawing the portfolio, screening and assigning, simulating) and reads the
peak memory of the main process and of each worker process (forked: they share the portfolio's
pages with the main process until they write). Then profiles a sample of --profile-loans loans
in one process and says where the time goes: the decider's rules, the guard's rules, pydantic's
validation of the models they build, the simulator's shell and the borrower model.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import time
from collections import Counter

import _common

ISSUE_LOANS = 100_000


def _families(stats: pstats.Stats) -> list[tuple[str, float]]:
    """Own time (tottime) by part of the code, largest first."""
    parts: Counter[str] = Counter()
    for (path, _, name), (_, _, tottime, _, _) in stats.stats.items():  # type: ignore[attr-defined]  # pstats' table
        parts[_family(path if path != "~" else name)] += tottime  # "~": a built-in, named after its type
    total = sum(parts.values()) or 1.0
    return [(name, seconds / total) for name, seconds in parts.most_common()]


def _family(path: str) -> str:
    for marker, name in (
        ("/models/lifecycle/", "decider (models/lifecycle)"),
        ("/models/conduct", "guard rules (models/conduct.py)"),
        ("/models/", "other pure rules (models/: schedule, money, arrangements, context)"),
        ("pydantic", "pydantic (validating, building and copying the models)"),
        ("/lab/engine", "simulator shell (lab/engine.py)"),
        ("/lab/behaviour", "borrower model (lab/behaviour.py)"),
        ("/lab/", "portfolio, assignment, results (lab/)"),
        ("zoneinfo", "time zones"),
        ("datetime", "time zones"),
    ):
        if marker in path:
            return name
    return "Python built-ins and the standard library"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loans", type=int, default=ISSUE_LOANS)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--processes", type=int, default=None, help="default: one per core")
    parser.add_argument("--scenario", default="strategies/scenarios/sample.toml")
    parser.add_argument("--experiment", default="strategies/experiments/sample.toml", help="an experiment file")
    parser.add_argument("--profile-loans", type=int, default=2000)
    args = parser.parse_args()

    from lab.assign import assigner_for
    from lab.portfolio import plan_portfolio
    from lab.scenario import load_scenario
    from lab.simulate import default_processes, simulate

    processes = args.processes or default_processes()
    scenario = load_scenario(_common.ROOT / args.scenario)
    experiment = _common.ROOT / args.experiment
    t0 = time.perf_counter()
    plan = plan_portfolio(scenario, args.loans, args.seed)
    t1 = time.perf_counter()
    assign = assigner_for(experiment)
    t2 = time.perf_counter()
    cpu0 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    _common.progress(f"{len(plan):,} borrowers planned; simulating {args.days} days in {processes} processes")
    run = simulate(scenario, loans=args.loans, days=args.days, seed=args.seed, assign=assign, processes=processes)
    t3 = time.perf_counter()
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (me.ru_utime + me.ru_stime - cpu0[0].ru_utime - cpu0[0].ru_stime) + (
        kids.ru_utime + kids.ru_stime - cpu0[1].ru_utime - cpu0[1].ru_stime
    )
    results = run.results
    outcomes = Counter(r.outcome for r in results)
    arms = Counter(f"{r.policy}/{r.arm}" for r in results)
    handed = sum(r.handover_balance for r in results)
    recovered = sum(r.recovered for r in results)
    total = t3 - t0

    _common.progress(f"profiling {args.profile_loans:,} loans in one process")
    profiler = cProfile.Profile()
    profiler.enable()
    simulate(scenario, loans=args.profile_loans, days=args.days, seed=args.seed, assign=assign, processes=1)
    profiler.disable()
    where = _families(pstats.Stats(profiler))

    figures = [
        ("loans", f"{len(results):,} ({', '.join(f'{k} {v:,}' for k, v in sorted(arms.items()))})"),
        ("days", str(args.days)),
        ("wall time, all phases", f"{total:.1f} s (target < 60 s)"),
        ("  planning the portfolio (who has two loans)", f"{t1 - t0:.1f} s"),
        ("  reading the experiment", f"{t2 - t1:.1f} s"),
        (
            "  simulating",
            f"{t3 - t2:.1f} s in {processes} processes ({cpu:.1f} s of CPU, {cpu / len(results) * 1000:.2f} ms/loan)",
        ),
        (
            "peak memory",
            (
                f"main {me.ru_maxrss / 1024:.0f} MiB, largest worker {kids.ru_maxrss / 1024:.0f} MiB "
                f"(sum at most {(me.ru_maxrss + processes * kids.ru_maxrss) / 1024:.0f} MiB; target < 2 GB)"
            ),
        ),
        ("outcomes", ", ".join(f"{k} {v:,}" for k, v in sorted(outcomes.items()))),
        ("recovered", f"{recovered / handed:.1%} of the hand-over balance"),
        ("", ""),
        (f"where the time goes ({args.profile_loans:,} loans, one process, own time)", ""),
        *((f"  {name}", f"{share:.0%}") for name, share in where),
    ]
    _common.report("Strategy lab: simulating a portfolio", parser, args, figures)


if __name__ == "__main__":
    main()
