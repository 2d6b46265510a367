"""Transactions that decide on the same person or change the same row wait for each other, on
PostgreSQL (row locks: SELECT ... FOR UPDATE) as on SQLite (the database write lock).

Each test holds a first transaction open at the critical point, starts a second one, waits
until the second is stuck behind the first (PostgreSQL: its backend waits on a lock in
pg_stat_activity; SQLite, which cannot show a waiting writer: a second in which it does not
get past the lock), and only then lets the first commit. Without the lock the second would
read the state before the first's change and decide wrongly."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, select
from temporalio.testing import ActivityEnvironment

import activities.guard
import activities.tasks
from activities.guard import GuardActivities
from activities.rendering import Renderer
from activities.tasks import TaskActivities
from db.contacts import ContactRow
from db.tables import TaskRow
from infra.settings import settings
from models.conduct import ContactRequest, GuardDecision
from models.requests import TaskClosure, TaskRequest
from tests.helpers import PERSON, sms, template_context

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)  # a Tuesday, 10:00 in Shanghai


def wait_until_blocked(engine: Engine, second: Future[Any], passed: threading.Event) -> None:
    """Return once the second transaction waits for the first; fail if it got past the lock."""
    if engine.dialect.name == "postgresql":
        query = text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        for _ in range(600):
            assert not passed.is_set() and not second.done(), "the second transaction did not wait for the first"
            with engine.connect() as conn:
                if conn.execute(query).scalar():
                    return
            passed.wait(0.05)
        pytest.fail("the second transaction never showed up waiting for a lock")
    assert not passed.wait(1.0) and not second.done(), "the second transaction did not wait for the first"


def test_two_loans_of_one_person_asking_at_once_are_decided_one_after_the_other(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CN allows 3 texts a day per person; two are sent. Two loans ask for the third at the
    same moment: one gets it, the other is deferred, never both."""
    guard, env = GuardActivities(engine), ActivityEnvironment()
    for n in range(2):
        assert env.run(guard.request_contact, sms(f"L-{n}", NOW - timedelta(hours=1, minutes=n))).verdict == "allowed"

    real_decide = activities.guard.judge
    first_inside, first_may_commit, second_passed = threading.Event(), threading.Event(), threading.Event()

    def decide(contact: ContactRequest, history: Any, *args: Any) -> GuardDecision:
        if contact.loan_id == "L-A":
            first_inside.set()
            assert first_may_commit.wait(60)
        else:
            second_passed.set()
        return real_decide(contact, history, *args)

    monkeypatch.setattr(activities.guard, "judge", decide)
    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(env.run, guard.request_contact, sms("L-A", NOW))
        assert first_inside.wait(60)
        second = pool.submit(env.run, guard.request_contact, sms("L-B", NOW))
        try:
            wait_until_blocked(engine, second, second_passed)
        finally:
            first_may_commit.set()
        decisions = sorted((first.result(60).verdict, second.result(60).verdict))

    assert decisions == ["allowed", "deferred"]
    with Session(engine) as session:
        assert len(session.exec(select(ContactRow).where(ContactRow.borrower_id == PERSON)).all()) == 3


def test_a_task_closed_twice_at_once_keeps_the_first_outcome(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A retried close running beside the first attempt waits for it and then finds the task
    closed: it reports a duplicate, it neither overwrites the outcome nor fails."""
    tasks, env = TaskActivities(engine, Renderer(settings().templates_dir)), ActivityEnvironment()
    env.run(
        tasks.create_task,
        TaskRequest(
            key="L-1/call@5/1",
            loan_id="L-1",
            at=NOW,
            workflow_id="collection-L-1",
            kind="call",
            queue="q",
            template="call_first_round",
            language="en",
            attempt=1,
            due_by=NOW + timedelta(days=1),
            context=template_context("L-1"),
        ),
    )

    real_append: Callable[..., Any] = activities.tasks.append_audit
    first_inside, first_may_commit, second_passed = threading.Event(), threading.Event(), threading.Event()

    def append_audit(session: Session, row: Any) -> Any:
        if "answered" in row.detail:
            first_inside.set()
            assert first_may_commit.wait(60)
        else:
            second_passed.set()
        return real_append(session, row)

    monkeypatch.setattr(activities.tasks, "append_audit", append_audit)

    def close(outcome: str) -> Any:
        return env.run(tasks.close_task, TaskClosure(task_id="L-1/call@5/1", loan_id="L-1", at=NOW, outcome=outcome))

    with ThreadPoolExecutor(2) as pool:
        first = pool.submit(close, "answered")
        assert first_inside.wait(60)
        second = pool.submit(close, "no_answer")
        try:
            wait_until_blocked(engine, second, second_passed)
        finally:
            first_may_commit.set()
        results = (first.result(60), second.result(60))

    assert [r.duplicate for r in results] == [False, True]
    with Session(engine) as session:
        row = session.exec(select(TaskRow).where(TaskRow.task_id == "L-1/call@5/1")).one()
    assert (row.status, row.outcome) == ("closed", "answered")
