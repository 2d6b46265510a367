"""Activities: every piece of I/O the collection workflow causes. Each write is keyed by a
business idempotency key from the workflow and guarded by a unique constraint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from temporalio import activity

F = TypeVar("F", bound=Callable[..., Any])


def sync_activity(fn: F) -> F:
    """`@activity.defn` for a synchronous activity (the database ones): it runs to its end,
    temporalio never raises its cancellation exception inside it (`no_thread_cancel_exception`).

    Why: temporalio cancels a synchronous activity running in the worker's thread pool (worker
    shutdown, which the tests do at the end of every test; an activity timeout; a cancel
    request) by raising CancelledError *asynchronously* in its thread
    (PyThreadState_SetAsyncExc), at whatever bytecode the thread is executing. Landing inside
    SQLAlchemy or psycopg (the pool's checkout, a statement's result handling, the commit, the
    rollback on return) it leaves the connection checked out with its transaction open and no
    owner: "idle in transaction", holding the person's lock row after a guard decision's audit
    SELECT, until the garbage collector happens to free it; sometimes back in the pool with the
    transaction still open. Every later decision for that person waited on the lock (issue 9,
    item 6; `tests/test_thread_cancel.py` injects it at each point of a guard decision).

    Nothing is lost by not interrupting them: each is one short transaction (a lock wait is
    ended by the server's lock_timeout, `db.store._PG_TIMEOUTS`), none heartbeats, and all are
    idempotent, so a cancelled or timed-out attempt that commits anyway is harmless; the worker
    reports or drops its result, and `activity.is_cancelled()` still tells it was cancelled.
    `worker.create_worker` refuses a synchronous activity defined without it."""
    return activity.defn(no_thread_cancel_exception=True)(fn)
