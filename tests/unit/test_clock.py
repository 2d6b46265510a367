"""The policy clock (`models.clock`): scale 1 is real time exactly, a scaled clock is linear
around its anchor, and a timer set for a virtual instant never wakes before it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infra.loaders import load_policy
from models.clock import PolicyClock, real_delay, real_time, virtual_now
from models.policy import PolicyError, parse_policy
from tests.helpers import ROOT, TEST_POLICIES

ANCHOR = datetime(2026, 11, 28, 23, 0, tzinfo=UTC)

instants = st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC))
delays = st.timedeltas(min_value=timedelta(0), max_value=timedelta(days=400))
scales = st.one_of(
    st.integers(min_value=2, max_value=100_000).map(Decimal),
    st.decimals(min_value=Decimal(1), max_value=Decimal(50_000), places=3).filter(lambda d: d != 1),
)
near = st.timedeltas(min_value=timedelta(days=-2), max_value=timedelta(days=2))


@given(instants, delays)
def test_scale_one_is_real_time_exactly(now: datetime, delay: timedelta) -> None:
    for clock in (PolicyClock(), PolicyClock(scale=Decimal(1), anchor=ANCHOR)):
        assert virtual_now(now, clock) is now
        assert real_delay(delay, clock) is delay
        assert real_time(now, clock) is now


def test_a_scaled_clock_runs_from_its_anchor() -> None:
    clock = PolicyClock(scale=Decimal(86_400), anchor=ANCHOR)  # a day per second
    assert virtual_now(ANCHOR, clock) == ANCHOR
    assert virtual_now(ANCHOR + timedelta(seconds=3), clock) == ANCHOR + timedelta(days=3)
    assert virtual_now(ANCHOR - timedelta(seconds=1), clock) == ANCHOR - timedelta(days=1)
    assert real_delay(timedelta(hours=12), clock) == timedelta(milliseconds=500)
    assert real_time(ANCHOR + timedelta(days=10), clock) == ANCHOR + timedelta(seconds=10)
    # the time zone of the caller's instant is kept
    shanghai = timezone(timedelta(hours=8))
    assert virtual_now((ANCHOR + timedelta(seconds=1)).astimezone(shanghai), clock).tzinfo == shanghai


@given(scales, near, delays)
def test_a_timer_for_a_virtual_instant_never_wakes_early(scale: Decimal, offset: timedelta, delay: timedelta) -> None:
    """What `_sleep_until` relies on: sleeping `real_delay(at - now)` from real instant r puts
    virtual time at or after `at` (by less than one real microsecond's worth)."""
    clock = PolicyClock(scale=scale, anchor=ANCHOR)
    r = ANCHOR + offset
    at = virtual_now(r, clock) + delay
    woke = virtual_now(r + real_delay(at - virtual_now(r, clock), clock), clock)
    assert at <= woke < at + timedelta(microseconds=int(scale) + 2)


@given(scales, near)
def test_round_trips(scale: Decimal, offset: timedelta) -> None:
    clock = PolicyClock(scale=scale, anchor=ANCHOR)
    r = ANCHOR + offset
    assert real_time(virtual_now(r, clock), clock) == r  # real -> virtual -> real is exact
    v = ANCHOR + offset * 1000
    back = virtual_now(real_time(v, clock), clock)  # virtual -> real -> virtual: up to one real µs
    assert v <= back < v + timedelta(microseconds=int(scale) + 2)


def test_monotonic() -> None:
    clock = PolicyClock(scale=Decimal("28800.5"), anchor=ANCHOR)
    seen = [virtual_now(ANCHOR + timedelta(microseconds=n * 37), clock) for n in range(-500, 500)]
    assert seen == sorted(seen)


def test_a_scaled_clock_needs_an_anchor() -> None:
    with pytest.raises(ValueError, match="needs 'anchor'"):
        PolicyClock(scale=Decimal(60))
    with pytest.raises(ValueError):
        PolicyClock(scale=Decimal(0), anchor=ANCHOR)
    with pytest.raises(ValueError):
        PolicyClock(scale=Decimal(60), anchor=datetime(2026, 11, 28))  # naive: which zone?


def test_policies_default_to_real_time_and_take_a_clock_table() -> None:
    assert load_policy("default", ROOT / "policies").clock.real
    text = (ROOT / "policies" / "default.toml").read_text(encoding="utf-8")
    policy = parse_policy(text + "\n[clock]\nscale = 28800\nanchor = 2026-11-28T23:00:00Z\n", "x.toml")
    assert policy.clock == PolicyClock(scale=Decimal(28800), anchor=ANCHOR)
    with pytest.raises(PolicyError, match="field 'clock'"):
        parse_policy(text + "\n[clock]\nscale = 28800\n", "x.toml")


def test_the_crash_test_policy_is_scaled() -> None:
    policy = load_policy("fast", TEST_POLICIES)
    assert not policy.clock.real and policy.clock.anchor is not None
