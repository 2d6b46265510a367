"""A cancelled database activity leaves no transaction open and no connection checked out
(issue 9, item 6a).

temporalio cancels a synchronous activity (worker shutdown, as at the end of every test here;
an activity timeout; a cancel request) by raising CancelledError asynchronously in its thread,
at whatever bytecode the thread is executing. Injected inside SQLAlchemy or psycopg it left the
connection checked out with its transaction open and no owner, reachable only from the
exception's traceback until the garbage collector freed it: on PostgreSQL a guard decision
"idle in transaction" holding the person's lock row, and the next decision for that person
waiting on it. A worker shut down with such a decision waiting never finished shutting down
(a full test run hung once in tests/workflows/test_payments.py; with `db.store._PG_TIMEOUTS` it took the
60 s of the idle-transaction timeout). The worker now runs every synchronous activity under
temporalio's shield (`worker.Uninterrupted`, `worker.uninterrupted`): a cancellation that comes
while it runs is raised once it has returned, never inside it.

The test injects the cancellation at every POINTS-th part of a guard decision's transaction
(from the connection's checkout to its return to the pool), by Python function call,
deterministically: the activity's thread counts its own calls (sys.settrace, call events only)
and cancels itself at the chosen one, through temporalio's ActivityEnvironment, which raises
exactly as the worker does. After each run it looks for what a lost exception leaves: a
connection still checked out of the pool, a PostgreSQL session not idle (pg_stat_activity), a
SQLite write lock still held. Without the fix the sweep stops at a leak on both databases
(SQLite's write lock still held, a PostgreSQL connection still checked out; scratch sweeps over
every point left sessions idle in transaction after the person's lock, the audit SELECT or
the commit's RELEASE SAVEPOINT, some of them back in the pool with the transaction open).
About 5 s per database here.
"""

from __future__ import annotations

import itertools
import sqlite3
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

from sqlalchemy import Engine, QueuePool, event, text
from sqlmodel import Session, select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.guard import GuardActivities
from db.tables import AuditRow
from models.conduct import GuardDecision
from models.requests import GuardRequest
from tests.helpers import sms
from worker import Uninterrupted, create_worker, uninterrupted

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Shanghai
POINTS = 150
"""Injection points per activity, spread evenly over its transaction."""


class Injector:
    """Runs an activity in a thread of its own and cancels it at its `at`-th function call."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, at: int, fn: Callable[..., Any], *args: Any) -> Any:
        """The activity's result, or the repr of the exception it raised, once its thread has
        ended. Not the exception itself: its traceback would keep the activity's frames, and
        what they hold, alive."""
        env = ActivityEnvironment()
        self.calls = 0

        def count(_frame: FrameType, _event: str, _arg: Any) -> None:
            self.calls += 1  # the tracer gets call events only: it returns no local tracer
            if self.calls == at:
                env.cancel()  # temporalio raises CancelledError in this thread, at the next bytecode

        outcome: list[Any] = []

        def thread() -> None:
            sys.settrace(count)
            try:
                outcome.append(env.run(fn, *args))
            except BaseException as exc:  # the outcome under test
                outcome.append(repr(exc))
            finally:
                sys.settrace(None)

        worker = threading.Thread(target=thread, name="activity")
        worker.start()
        worker.join(120)
        assert not worker.is_alive(), "the activity did not end within 2 minutes"
        return outcome[0]

    def window(self, engine: Engine, fn: Callable[..., Any], *args: Any) -> range:
        """The calls from the connection's checkout to its return, on a warm, uncancelled run."""
        marks: list[int] = []

        def mark(*_args: Any) -> None:
            marks.append(self.calls)

        event.listen(engine, "checkout", mark)
        event.listen(engine, "checkin", mark)
        try:
            self.run(0, fn, *args)
        finally:
            event.remove(engine, "checkout", mark)
            event.remove(engine, "checkin", mark)
        assert len(marks) >= 2, "the activity did not use the database"
        return range(marks[0], marks[-1] + 1, max(1, (marks[-1] - marks[0]) // POINTS))


def left_behind(engine: Engine) -> list[str]:
    """What a finished activity must not leave: a checked-out connection, an open transaction."""
    pool = engine.pool
    assert isinstance(pool, QueuePool)  # make_engine's pool on both backends
    found = [f"{pool.checkedout()} connection(s) still checked out"] if pool.checkedout() else []
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            found += [
                f"a session {state}, last statement {query[:60]!r}"
                for state, query in conn.execute(
                    text(
                        "SELECT state, query FROM pg_stat_activity WHERE datname = current_database()"
                        " AND pid <> pg_backend_pid() AND state <> 'idle' AND backend_type = 'client backend'"
                    )
                )
            ]
    else:
        try:
            with sqlite3.connect(engine.url.database or "", timeout=0) as conn:
                conn.execute("BEGIN IMMEDIATE")
                conn.rollback()
        except sqlite3.OperationalError as exc:
            found.append(f"the write lock still held ({exc})")
    return found


def test_a_guard_decision_cancelled_anywhere_in_its_transaction_leaves_nothing_open(engine: Engine) -> None:
    """The decision runs as the worker runs it (`worker.uninterrupted`); a cancellation at any
    point leaves nothing open, and the decision stands even when the activity then reports the
    cancellation (the retry finds it recorded)."""
    guard, injector, n = GuardActivities(engine), Injector(), itertools.count()
    decide = uninterrupted(guard.request_contact)

    def request() -> GuardRequest:
        i = next(n)
        return sms(f"L-{i}", NOW + timedelta(minutes=i))

    injector.run(0, decide, request())  # a cold first run: connections opened, statements compiled
    points = injector.window(engine, decide, request())
    outcomes = []
    for at in points:
        outcome = injector.run(at, decide, request())
        leaks = left_behind(engine)
        assert not leaks, f"cancelled at call {at} of {points}: {leaks}; the activity returned {outcome!r}"
        outcomes.append(outcome)
    assert {type(o) for o in outcomes} <= {GuardDecision, str}
    assert {o for o in outcomes if isinstance(o, str)} <= {"CancelledError('Cancelled')"}
    with Session(engine) as session:
        decided = session.exec(select(AuditRow.key).where(AuditRow.actor == "guard")).all()
    assert len(decided) == next(n)  # every request decided once, cancelled or not


async def test_the_worker_runs_its_synchronous_activities_uninterrupted(env: WorkflowEnvironment, db_url: str) -> None:
    async with create_worker(env.client, task_queue="uninterrupted", database_url=db_url) as worker:
        assert any(isinstance(i, Uninterrupted) for i in worker.config()["interceptors"])
