"""Webhooks' pure rules (models/webhooks.py): which audit actions are events, what an event
says (named fields only, never free text), the signature and its check, the retry schedule."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from models.webhooks import (
    EVENT_TYPES,
    GIVE_UP_AFTER,
    after_failure,
    arrangement_ref,
    check_event_filter,
    event_data,
    event_id,
    event_type,
    retry_delay,
    sign,
    verify,
    wants,
)

ACTIONS = {
    "collection_started": "loan.started",
    "stage_changed": "loan.stage_changed",
    "written_off": "loan.stage_changed",
    "payment_applied": "payment.applied",
    "payment_rejected": "payment.rejected",
    "promise_accepted": "arrangement.accepted",
    "plan_accepted": "arrangement.accepted",
    "plan_renegotiated": "arrangement.accepted",
    "settlement_offered": "arrangement.accepted",
    "promise_kept": "arrangement.kept",
    "plan_completed": "arrangement.kept",
    "settlement_paid": "arrangement.kept",
    "promise_broken": "arrangement.broken",
    "plan_broken": "arrangement.broken",
    "settlement_lapsed": "arrangement.lapsed",
    "call_task_created": "task.created",
    "field_visit_task_created": "task.created",
    "hardship_review_task_created": "task.created",
    "legal_review_task_closed": "task.closed",
    "call_task_closed": "task.closed",
    "agency_placed": "loan.placed",
    "agency_recalled": "loan.recalled",
    "collection_closed": "loan.closed",
}
NOT_EVENTS = ["guard_allowed", "message_queued", "fee_posted", "charged_off", "instalment_kept", "hardship_ended"]


@pytest.mark.parametrize(("action", "expected"), [*ACTIONS.items(), *((a, None) for a in NOT_EVENTS)])
def test_audit_actions_map_to_event_types(action: str, expected: str | None) -> None:
    assert event_type(action) == expected


def test_every_event_type_has_an_audit_action() -> None:
    assert set(ACTIONS.values()) == set(EVENT_TYPES)


def test_event_ids_are_derived_from_the_key() -> None:
    assert event_id("L-1/payment/P-1#audit") == event_id("L-1/payment/P-1#audit")
    assert event_id("L-1/payment/P-1#audit") != event_id("L-1/payment/P-2#audit")


def test_payloads_carry_named_fields_and_no_free_text() -> None:
    note = "李明 at 上海市浦东新区世纪大道1号, +8613800000000"
    placed = event_data(
        "agency_placed",
        "L-1/agency@60#placed",
        "L-1",
        "middle",
        {"agency": "Acme", "recall_at": "2027-01-01T00:00:00+00:00", "note": note},
        {"amount": "11125.00", "currency": "CNY", "actor": "system"},
    )
    assert placed == {
        "stage": "middle",
        "placement_id": "L-1/agency@60",
        "agency": "Acme",
        "recall_at": "2027-01-01T00:00:00+00:00",
        "amount": "11125.00",
        "currency": "CNY",
    }
    closed = event_data(
        "call_task_closed", "L-1/call@5/1#closed", "L-1", "", {"outcome": "promised", "note": note}, {"actor": "agent"}
    )
    assert closed == {"task_id": "L-1/call@5/1", "kind": "call", "outcome": "promised"}


def test_payment_and_arrangement_payloads() -> None:
    paid = event_data(
        "payment_applied",
        "L-1/payment/P-1#audit",
        "L-1",
        "",
        {"payment_id": "P-1", "amount": "100.00", "currency": "CNY", "balance_after": "900.00"},
        {"actor": "bank"},
    )
    assert paid == {
        "payment_id": "P-1",
        "amount": "100.00",
        "currency": "CNY",
        "balance_after": "900.00",
        "source": "bank",
    }
    rejected = event_data("payment_rejected", "L-1/payment-rejected/P-9/14", "L-1", "early", {}, {})
    assert rejected == {"stage": "early", "payment_id": "P-9"}
    kept = event_data(
        "promise_kept",
        "L-1/payment/P-1/promise-kept",
        "L-1",
        "early",
        {"detail": "500.00 promised for 2026-12-10"},
        {"arrangement_id": "L-1/promise/1"},
    )
    assert kept == {
        "stage": "early",
        "kind": "promise",
        "outcome": "kept",
        "arrangement_id": "L-1/promise/1",
        "payment_id": "P-1",
        "summary": "500.00 promised for 2026-12-10",
    }
    assert arrangement_ref("L-1/promise/1/accepted", "L-1") == "L-1/promise/1"
    assert arrangement_ref("L-1/L-1/plan/2/renegotiated", "L-1") == "L-1/plan/2"  # first workflow version's keys
    with pytest.raises(ValueError, match="makes no event"):
        event_data("fee_posted", "k", "L-1", "", {}, {})


def test_the_signature_is_the_hmac_of_timestamp_dot_body() -> None:
    body = b'{"id":"e"}'
    expected = hmac.new(b"s3cret", b"1796686541." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1796686541, body) == f"sha256={expected}"


def test_verification_refuses_tampering_other_secrets_and_old_or_future_timestamps() -> None:
    body, ts = b'{"id":"e"}', 1796686541
    good = sign("s3cret", ts, body)
    assert verify("s3cret", str(ts), body, good, now=ts + 299, tolerance=300)
    assert verify("s3cret", ts, body, good, now=ts - 300, tolerance=300)
    assert not verify("s3cret", ts, body, good, now=ts + 301, tolerance=300)  # a replay, too late
    assert not verify("s3cret", ts, body, good, now=ts - 301, tolerance=300)
    assert not verify("s3cret", ts, body + b" ", good, now=ts, tolerance=300)
    assert not verify("other", ts, body, good, now=ts, tolerance=300)
    assert not verify("s3cret", ts + 1, body, good, now=ts, tolerance=300)  # the timestamp is signed
    assert not verify("s3cret", "soon", body, good, now=ts, tolerance=300)


def test_retry_delays_double_from_30_seconds_to_an_hour_with_jitter_in_the_upper_half() -> None:
    for failures in range(1, 15):
        ceiling = min(timedelta(hours=1), timedelta(seconds=30) * 2 ** (failures - 1))
        assert retry_delay(failures, 0.0) == ceiling / 2
        assert retry_delay(failures, 0.999999) <= ceiling
        assert ceiling / 2 <= retry_delay(failures, 0.5) <= ceiling
    assert retry_delay(1, 0.0) == timedelta(seconds=15)
    assert retry_delay(8, 1.0) == timedelta(hours=1)
    assert retry_delay(500, 1.0) == timedelta(hours=1)


def test_a_delivery_is_dead_three_days_after_it_was_made() -> None:
    made = datetime(2026, 12, 1, tzinfo=UTC)
    status, at = after_failure(3, made, made + timedelta(hours=2), 0.0)
    assert (status, at) == ("pending", made + timedelta(hours=2, minutes=1))
    assert after_failure(80, made, made + GIVE_UP_AFTER, 0.5) == ("dead", None)


def test_event_filters() -> None:
    assert check_event_filter("*") == ["*"]
    assert check_event_filter("loan.closed, payment.applied") == ["payment.applied", "loan.closed"]
    assert check_event_filter(["task.created", "*"]) == ["*"]
    with pytest.raises(ValueError, match=r"unknown event type\(s\) loan.exploded"):
        check_event_filter("loan.exploded,loan.closed")
    with pytest.raises(ValueError, match="no event types"):
        check_event_filter(" , ")
    assert wants(["*"], "task.closed") and wants(["task.closed"], "task.closed")
    assert not wants(["task.created"], "task.closed")
