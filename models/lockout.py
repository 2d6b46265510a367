"""Sign-in lock-out, the pure rule: after `max_failures` wrong passwords in a row an account is
locked for `lock_minutes`, so that a password cannot be guessed by trying many (the desk's
sign-in, `desk.users`). A right password resets the count; an expired lock counts afresh."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel, ConfigDict, Field


class LockoutPolicy(BaseModel):
    """How many wrong passwords in a row lock an account, and for how long."""

    model_config = ConfigDict(frozen=True)

    max_failures: int = Field(default=5, ge=1)
    lock_minutes: int = Field(default=15, ge=1)


def locked(locked_until: datetime | None, now: datetime) -> bool:
    """Whether the account is locked at `now` (a lock ends by itself at `locked_until`)."""
    return locked_until is not None and now < locked_until


def after_failure(
    failures: int, locked_until: datetime | None, now: datetime, policy: LockoutPolicy
) -> tuple[int, datetime | None]:
    """The failure count and lock after one more wrong password at `now`. A lock that has run
    out starts the count again from zero, so one wrong password after it does not lock again."""
    if locked_until is not None and now >= locked_until:
        failures = 0
    failures += 1
    if failures >= policy.max_failures:
        return failures, now + timedelta(minutes=policy.lock_minutes)
    return failures, None
