"""The policy clock: business time for test and demo policies that compress days into seconds.

Policies count in days (ladder DPDs, fee periods, agency periods) and hours (call retries,
outcome timeouts), and contact windows are local hours. On the dev server time is real, so a
180-day ladder takes 180 days. A test or demo policy may set

    [clock]
    scale = 28800                       # virtual seconds per real second (1 = production)
    anchor = 2026-11-28T23:00:00Z       # the instant where virtual and real time agree

and the workflow then reads business time as `anchor + (real_now - anchor) * scale` and sleeps
a virtual delay for `delay / scale` of real time. With `scale = 1` (the default) virtual time IS
real time and delays are unchanged: production behaviour is exactly what it was.

Why one anchor in the policy, not one per loan (e.g. the loan's start): the per-person contact
budget compares contacts across all of a person's loans (`activities.guard`), and dates on the
timeline, in the ledger and in the audit record are compared across loans too. With a shared
anchor every loan of the policy lives on one virtual clock, so "three calls in 24 hours"
means the same 24 hours on every loan. Per-loan anchors would give each loan its own calendar
and the guard would compare instants from different clocks. (A borrower with loans under a
scaled policy and under a production policy would still mix two clocks: scaled policies are
for tests and demos only.)

The arithmetic is exact (integer microseconds and a rational scale): virtual time is rounded
down and real delays are rounded up, so a timer set for a virtual instant never wakes before it.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal
from fractions import Fraction

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator


class PolicyClock(BaseModel):
    """How a policy's business time relates to real time (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scale: Decimal = Field(default=Decimal(1), ge=1, le=1_000_000)
    anchor: AwareDatetime | None = None

    @model_validator(mode="after")
    def _anchored(self) -> PolicyClock:
        if self.scale != 1 and self.anchor is None:
            raise ValueError("a clock with scale other than 1 needs 'anchor' (shared by every loan of the policy)")
        return self

    @property
    def real(self) -> bool:
        """True for production time (scale 1): virtual and real time are the same."""
        return self.scale == 1


def _micros(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def virtual_now(real_now: datetime, clock: PolicyClock) -> datetime:
    """Business time at real instant `real_now`: `real_now` itself at scale 1, else
    `anchor + (real_now - anchor) * scale`, rounded down to the microsecond."""
    if clock.real or clock.anchor is None:
        return real_now
    elapsed = Fraction(_micros(real_now - clock.anchor)) * Fraction(clock.scale)
    return (clock.anchor + timedelta(microseconds=math.floor(elapsed))).astimezone(real_now.tzinfo)


def real_delay(virtual_delay: timedelta, clock: PolicyClock) -> timedelta:
    """Real time to sleep for `virtual_delay` of business time: unchanged at scale 1, else
    `virtual_delay / scale` rounded up to the microsecond (never early)."""
    if clock.real:
        return virtual_delay
    return timedelta(microseconds=math.ceil(Fraction(_micros(virtual_delay)) / Fraction(clock.scale)))


def real_time(virtual: datetime, clock: PolicyClock) -> datetime:
    """The real instant at which business time reaches `virtual` (rounded up): the inverse of
    `virtual_now`, for drivers and tests that must act at a virtual moment."""
    if clock.real or clock.anchor is None:
        return virtual
    return (clock.anchor + real_delay(virtual - clock.anchor, clock)).astimezone(virtual.tzinfo)
