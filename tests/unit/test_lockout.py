"""The desk's sign-in lock-out rule (`models.lockout`): five wrong passwords in a row lock the
account for fifteen minutes; the lock ends by itself; after it the count starts afresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from models.lockout import LockoutPolicy, after_failure, locked

NOW = datetime(2026, 12, 8, 9, 0, tzinfo=UTC)
POLICY = LockoutPolicy(max_failures=5, lock_minutes=15)


def test_the_fifth_wrong_password_in_a_row_locks_for_fifteen_minutes() -> None:
    failures, until = 0, None
    for n in range(1, 5):
        failures, until = after_failure(failures, until, NOW, POLICY)
        assert (failures, until) == (n, None)
    failures, until = after_failure(failures, until, NOW, POLICY)
    assert (failures, until) == (5, NOW + timedelta(minutes=15))
    assert locked(until, NOW + timedelta(minutes=14, seconds=59))
    assert not locked(until, NOW + timedelta(minutes=15))


def test_after_a_lock_has_run_out_one_wrong_password_does_not_lock_again() -> None:
    until = NOW - timedelta(seconds=1)
    assert after_failure(5, until, NOW, POLICY) == (1, None)


def test_no_lock_is_never_locked() -> None:
    assert not locked(None, NOW)
