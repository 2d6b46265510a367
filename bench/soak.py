"""Soak the crash test (`make soak`): tests/system/test_crash.py several times, bigger and harder than
`make test`'s single run, and the figures of every run in one table.

Default: 5 seeds x (SQLite, PostgreSQL), 250 loans, 8 worker SIGKILLs and 2 dev-server SIGKILLs
per run, one run after the other, each in its own pytest process (so that one run's servers,
workers and leftovers cannot disturb the next). The target: every run with 0 stuck loans, 0
histories that do not replay, 0 duplicate fees, messages or ledger rows, 0 lost payments.

Each run writes its figures through CRASH_SUMMARY; this script prints them as a table with
totals, writes them as JSON to var/soak/<timestamp>.json (the runs' pytest output beside it in
var/soak/<timestamp>/, and a failed run's logs and databases too) and exits 1 if any run had
any problem (or wrote no figures), 0 otherwise. It asserts nothing itself: the crash test does.

Settings (environment, or the matching option):
  SOAK_SEEDS         how many random seeds (5)        --seeds
  SOAK_SEED_LIST     these seeds instead, "11,12,13"  --seed-list
  SOAK_BACKENDS      "sqlite,postgresql"              --backends
  SOAK_LOANS         loans per run (250)              --loans
  SOAK_WORKER_KILLS  worker SIGKILLs per run (8)      --worker-kills
  SOAK_SERVER_KILLS  server SIGKILLs per run (2)      --server-kills
PostgreSQL runs use tests/pg.py: a throwaway cluster per run, or POSTGRES_TEST_URL.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import _common

ROOT = _common.ROOT
# (column, summary key, width); the figures the issue names first
COLUMNS = [
    ("seed", "seed", 7),
    ("db", "backend", 10),
    ("loans", "loans", 5),
    ("time s", "seconds", 6),
    ("stuck", "stuck_loans", 5),
    ("no replay", "non_replaying_histories", 9),
    ("dup fees", "duplicate_fees", 8),
    ("dup msgs", "duplicate_messages", 8),
    ("dup ledger", "duplicate_ledger_rows", 10),
    ("dup tasks", "duplicate_tasks", 9),
    ("lost pay", "lost_payments", 8),
    ("other", "other_problems", 5),
    ("paid ids", "payments_sent", 8),
    ("w starts", "worker_starts", 8),
    ("s starts", "server_starts", 8),
]
PROBLEMS = [
    "stuck_loans",
    "non_replaying_histories",
    "duplicate_fees",
    "duplicate_messages",
    "duplicate_ledger_rows",
    "duplicate_tasks",
    "lost_payments",
    "other_problems",
    "open_loans",
]
SUMMED = [
    *PROBLEMS,
    "loans",
    "seconds",
    "payments_sent",
    "sends",
    "worker_starts",
    "server_starts",
    "worker_kills",
    "server_kills",
    "histories_replayed",
    "recovered_task_failures",
]


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=int(env("SOAK_SEEDS", "5")), help="how many random seeds")
    parser.add_argument(
        "--seed-list", default=env("SOAK_SEED_LIST", ""), help="comma-separated seeds (overrides --seeds)"
    )
    parser.add_argument("--backends", default=env("SOAK_BACKENDS", "sqlite,postgresql"))
    parser.add_argument("--loans", type=int, default=int(env("SOAK_LOANS", "250")))
    parser.add_argument("--worker-kills", type=int, default=int(env("SOAK_WORKER_KILLS", "8")))
    parser.add_argument("--server-kills", type=int, default=int(env("SOAK_SERVER_KILLS", "2")))
    return parser.parse_args()


def seeds_of(args: argparse.Namespace) -> list[int]:
    if args.seed_list.strip():
        return [int(s) for s in args.seed_list.split(",") if s.strip()]
    return [random.randrange(1_000_000) for _ in range(args.seeds)]


def run_one(seed: int, backend: str, args: argparse.Namespace, folder: Path) -> dict[str, Any]:
    """One crash test in its own pytest process; its summary (or a failed row saying why none)."""
    name = f"{backend}-{seed}"
    summary_path, log_path, basetemp = folder / f"{name}.json", folder / f"{name}.log", folder / name
    env = {
        **os.environ,
        "CRASH_SEED": str(seed),
        "CRASH_DB": backend,
        "CRASH_LOANS": str(args.loans),
        "CRASH_WORKER_KILLS": str(args.worker_kills),
        "CRASH_SERVER_KILLS": str(args.server_kills),
        "CRASH_SUMMARY": str(summary_path),
    }
    cap = float(env.get("CRASH_CAP", "1800"))
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "tests/system/test_crash.py",
        "-m",
        "crash",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        f"--basetemp={basetemp}",
    ]
    began = time.monotonic()
    with log_path.open("wb") as log:
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=cap + 600)  # the test's own safety cap, and time for its checks and teardown
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            code = proc.wait()
    row: dict[str, Any] = {"seed": seed, "backend": backend, "loans": args.loans, "logs": str(basetemp)}
    if summary_path.exists():
        row.update(json.loads(summary_path.read_text(encoding="utf-8")))
    else:
        row.update(passed=False, failure=f"no summary written (pytest exit code {code}); see {log_path}")
    row.update(pytest_exit=code, pytest_log=str(log_path), wall_seconds=round(time.monotonic() - began, 1))
    if row.get("passed") and code == 0:
        shutil.rmtree(basetemp, ignore_errors=True)  # a clean run's databases are not worth the disk
    return row


def clean(row: dict[str, Any]) -> bool:
    return bool(row.get("passed")) and row.get("pytest_exit") == 0 and not any(row.get(k, 0) for k in PROBLEMS)


def table(rows: list[dict[str, Any]]) -> str:
    """The runs, one a line, and the totals."""

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) for v, (_, _, w) in zip(values, COLUMNS, strict=False)) + "  " + values[-1]

    head = line([*(c for c, _, _ in COLUMNS), "result"])
    out = [head, "-" * len(head)]
    for r in rows:
        values = [str(round(r[k]) if isinstance(r.get(k), float) else r.get(k, "?")) for _, k, _ in COLUMNS]
        out.append(line([*values, "clean" if clean(r) else "PROBLEM (below)"]))
    totals = totals_of(rows)
    values = ["total", f"{len(rows)} runs", *(str(round(totals[k])) for _, k, _ in COLUMNS[2:])]
    out += ["-" * len(head), line([*values, f"{totals['clean_runs']}/{len(rows)} clean"])]
    return "\n".join(out)


def totals_of(rows: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {k: sum(r.get(k, 0) or 0 for r in rows) for k in SUMMED}
    totals["seconds"] = round(totals["seconds"], 1)
    totals["runs"], totals["clean_runs"] = len(rows), sum(clean(r) for r in rows)
    return totals


def main() -> int:
    args = parse_args()
    seeds, backends = seeds_of(args), [b.strip() for b in args.backends.split(",") if b.strip()]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = ROOT / "var" / "soak" / stamp
    folder.mkdir(parents=True, exist_ok=True)
    runs = [(seed, backend) for seed in seeds for backend in backends]
    _common.progress(
        f"soak: {len(runs)} runs ({len(seeds)} seeds {seeds} x {backends}), {args.loans} loans, "
        f"{args.worker_kills} worker and {args.server_kills} server kills each; output in {folder}"
    )
    rows: list[dict[str, Any]] = []
    began = time.monotonic()
    for n, (seed, backend) in enumerate(runs, 1):
        _common.progress(f"run {n}/{len(runs)}: {backend}, seed {seed}")
        row = run_one(seed, backend, args, folder)
        rows.append(row)
        _common.progress(
            f"run {n}/{len(runs)}: {'clean' if clean(row) else 'PROBLEM'} in {row['wall_seconds']:.0f}s "
            f"(stuck {row.get('stuck_loans', '?')}, "
            f"non-replaying {row.get('non_replaying_histories', '?')})"
        )
    seconds = round(time.monotonic() - began, 1)
    result = {
        "started": stamp,
        "seconds": seconds,
        "settings": {
            "seeds": seeds,
            "backends": backends,
            "loans": args.loans,
            "worker_kills": args.worker_kills,
            "server_kills": args.server_kills,
        },
        "machine": dict(_common.machine_rows()),
        "runs": rows,
        "totals": totals_of(rows),
    }
    out = ROOT / "var" / "soak" / f"{stamp}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"\nCrash-test soak: {len(runs)} runs, {args.loans} loans, {args.worker_kills} worker and "
        f"{args.server_kills} server SIGKILLs each, {seconds / 60:.1f} min\n"
    )
    print(table(rows))
    for r in rows:
        if not clean(r):
            print(
                f"\n{r['backend']} seed {r['seed']}: {r.get('failure', '')[:3000]}\n  pytest output: {r['pytest_log']}"
            )
    print()
    for key, value in _common.machine_rows():
        print(f"{key:>10}  {value}")
    print(f"\nfigures: {out}")
    return 0 if all(clean(r) for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
