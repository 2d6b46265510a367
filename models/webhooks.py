"""Webhooks out: which audit entries are events for subscribers, what an event says, how it is
signed, and when a failed delivery is tried again. Pure: the tables, the capture and the
dispatcher are `db.webhooks` and `api.webhooks`; the clock and the randomness of the jitter
come in as arguments.

Why events come from audit entries: every side effect of a loan already writes an audit entry
in the same transaction as the effect, under the effect's business key. An event made from that
entry, in the same flush, exists exactly when the effect does (a rolled-back effect leaves no
event, a retried one finds its entry and makes no second event), with no change to workflow code.

Why payloads are built from a list of named fields and never copied from the entry: an entry's
detail may carry free text written by people (a task's note, an agency's report, a hardship
reason) or rendered documents (an agency handover note with the borrower's name and address).
An event carries ids, amounts as decimal strings with their currency, stages, dates and the
decider's own summaries, nothing else.
"""

from __future__ import annotations

import hashlib
import hmac
import uuid
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

EVENT_TYPES = (
    "loan.started",
    "loan.stage_changed",
    "payment.applied",
    "payment.rejected",
    "arrangement.accepted",
    "arrangement.kept",
    "arrangement.broken",
    "arrangement.lapsed",
    "task.created",
    "task.closed",
    "loan.placed",
    "loan.recalled",
    "loan.closed",
)
"""Every event type a subscriber can ask for (or "*" for all)."""

ALL = "*"

_BY_ACTION = {
    "collection_started": "loan.started",
    "stage_changed": "loan.stage_changed",  # a DPD band of the ladder: early -> middle -> late
    "written_off": "loan.stage_changed",  # charged off: stage written_off, recovery goes on
    "payment_applied": "payment.applied",
    "payment_rejected": "payment.rejected",  # a bank-feed payment the loan refused
    "agency_placed": "loan.placed",
    "agency_recalled": "loan.recalled",
    "collection_closed": "loan.closed",
}

ARRANGEMENTS: dict[str, tuple[str, str]] = {
    # audit action: (event type, arrangement kind)
    "promise_accepted": ("arrangement.accepted", "promise"),
    "plan_accepted": ("arrangement.accepted", "plan"),
    "plan_renegotiated": ("arrangement.accepted", "plan"),
    "settlement_offered": ("arrangement.accepted", "settlement"),
    "promise_kept": ("arrangement.kept", "promise"),
    "plan_completed": ("arrangement.kept", "plan"),
    "settlement_paid": ("arrangement.kept", "settlement"),
    "promise_broken": ("arrangement.broken", "promise"),
    "plan_broken": ("arrangement.broken", "plan"),
    "settlement_lapsed": ("arrangement.lapsed", "settlement"),
}
"""Arrangement outcomes as a whole (an instalment kept or missed is not an event: the plan's
completion or breach is)."""

_TASK_CREATED, _TASK_CLOSED = "_task_created", "_task_closed"


def event_type(action: str) -> str | None:
    """The event type of an audit action, or None if subscribers are not told of it."""
    if action in _BY_ACTION:
        return _BY_ACTION[action]
    if action in ARRANGEMENTS:
        return ARRANGEMENTS[action][0]
    if action.endswith(_TASK_CREATED):
        return "task.created"
    if action.endswith(_TASK_CLOSED):
        return "task.closed"
    return None


def arrangement_kind(action: str) -> str | None:
    """promise, plan or settlement for an arrangement action (None otherwise)."""
    found = ARRANGEMENTS.get(action)
    return found[1] if found else None


_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:loan-collections:webhook-event")


def event_id(key: str) -> str:
    """The event's id, derived from its business key (an audit entry's key, or the key the API
    records an event under): the same effect always has the same event id, so a receiver can
    deduplicate by it across redeliveries and even across a rebuilt outbox."""
    return str(uuid.uuid5(_NAMESPACE, key))


# ------------------------------------------------------------------ payloads


def event_data(
    action: str, key: str, loan_id: str, stage: str, detail: Mapping[str, str], facts: Mapping[str, str]
) -> dict[str, str]:
    """The `data` of the event an audit entry makes: named fields only (module docstring).

    `detail` is the entry's detail; `facts` what the database adds that the entry lacks (the
    loan's amounts for `loan.started`, the placed amount, the arrangement an outcome belongs to).
    Raises ValueError for an action that makes no event."""
    kind = event_type(action)
    if kind is None:
        raise ValueError(f"audit action {action!r} makes no event")
    local = _local(key, loan_id)
    data: dict[str, str] = {"stage": stage} if stage else {}
    if kind == "loan.started":
        data |= _pick(detail, "policy", "policy_version")
        data |= _pick(facts, "currency", "principal", "interest", "fees", "penalties", "total", "due_date")
    elif kind == "payment.applied":
        data |= _pick(detail, "payment_id", "amount", "currency", "balance_after")
        data["source"] = facts.get("actor", "")
    elif kind == "payment.rejected":
        # key: <loan>/payment-rejected/<payment id>/<n>; the reason is on the timeline only
        data["payment_id"] = local.removeprefix("payment-rejected/").rsplit("/", 1)[0]
    elif kind.startswith("arrangement."):
        data |= _arrangement(action, local, detail, facts)
    elif kind == "task.created":
        data |= {"task_id": key.removesuffix("#created"), "kind": action.removesuffix(_TASK_CREATED)}
        data |= _pick(detail, "queue", "attempt")
    elif kind == "task.closed":
        data |= {"task_id": key.removesuffix("#closed"), "kind": action.removesuffix(_TASK_CLOSED)}
        data |= _pick(detail, "outcome")
    elif kind == "loan.placed":
        data["placement_id"] = key.removesuffix("#placed")
        data |= _pick(detail, "agency", "recall_at") | _pick(facts, "amount", "currency")
    elif kind == "loan.recalled":
        data["placement_id"] = key.removesuffix("#recalled")
        data |= _pick(detail, "agency", "reason")
    return data


def _arrangement(action: str, local: str, detail: Mapping[str, str], facts: Mapping[str, str]) -> dict[str, str]:
    kind = arrangement_kind(action)
    assert kind is not None
    data = {"kind": kind, "outcome": action.removeprefix(f"{kind}_")}
    if facts.get("arrangement_id"):
        data["arrangement_id"] = facts["arrangement_id"]
    if local.startswith("payment/"):  # kept by a payment: <loan>/payment/<payment id>/<kind>-<outcome>
        data["payment_id"] = local.removeprefix("payment/").rsplit("/", 1)[0]
    if detail.get("detail"):
        data["summary"] = detail["detail"]  # the decider's own words: amounts and dates
    return data


def _pick(source: Mapping[str, str], *names: str) -> dict[str, str]:
    return {name: str(source[name]) for name in names if source.get(name) not in (None, "")}


def arrangement_ref(key: str, loan_id: str) -> str:
    """The arrangement an acceptance's audit key names: `<loan>/promise/1/accepted` ->
    `<loan>/promise/1` (the reference the negotiation call returned). Loans of the first
    workflow version wrote the loan id twice (`<loan>/<loan>/promise/1/accepted`)."""
    return f"{loan_id}/{_local(key, loan_id).rsplit('/', 1)[0]}"


def _local(key: str, loan_id: str) -> str:
    """A key without its loan id prefix (once or, for the first workflow version, twice)."""
    prefix = f"{loan_id}/"
    while key.startswith(prefix):
        key = key.removeprefix(prefix)
    return key


def envelope(
    event_id: str, type_: str, loan_id: str, seq: int, occurred_at: datetime, data: Mapping[str, Any]
) -> dict[str, Any]:
    """What a subscriber receives as the JSON body."""
    return {
        "id": event_id,
        "type": type_,
        "loan_id": loan_id,
        "seq": seq,
        "occurred_at": occurred_at.isoformat(),
        "data": dict(data),
    }


# ------------------------------------------------------------------ subscriptions


def check_event_filter(events: list[str] | str) -> list[str]:
    """A subscriber's filter as stored: a list of event types, or ["*"] for every type;
    raises ValueError naming an unknown type."""
    names = [events] if isinstance(events, str) else list(events)
    names = [n.strip() for part in names for n in part.split(",") if n.strip()]
    if not names:
        raise ValueError("no event types: give a list of types or '*'")
    if ALL in names:
        return [ALL]
    unknown = sorted(set(names) - set(EVENT_TYPES))
    if unknown:
        raise ValueError(f"unknown event type(s) {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}")
    return sorted(set(names), key=EVENT_TYPES.index)


def wants(events: list[str], type_: str) -> bool:
    """Whether a subscriber with this filter receives events of `type_`."""
    return ALL in events or type_ in events


# ------------------------------------------------------------------ signing

SIGNATURE_TOLERANCE = 300
"""Seconds a receiver accepts between the signature's timestamp and its own clock (replay
protection: a captured request cannot be sent again later)."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Signature header: `sha256=` + hex HMAC-SHA256 of `<timestamp>.<body>` under the
    subscriber's secret. The timestamp is signed too, so it cannot be moved forward to replay."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.".encode("ascii") + body, hashlib.sha256)
    return f"sha256={mac.hexdigest()}"


def verify(secret: str, timestamp: str | int, body: bytes, signature: str, *, now: float, tolerance: int) -> bool:
    """A receiver's check: the timestamp is a whole number within `tolerance` seconds of `now`
    (either way) and the signature matches (compared in constant time)."""
    try:
        ts = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(now - ts) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, ts, body), signature.strip())


# ------------------------------------------------------------------ retries

FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(hours=1)
GIVE_UP_AFTER = timedelta(days=3)


def retry_delay(failures: int, rand: float) -> timedelta:
    """The wait after the `failures`-th failed attempt (1, 2, 3...): 30 s doubled each time,
    capped at an hour, with "equal jitter": a uniform share of the upper half, so the wait lies
    in [d/2, d] for d = min(1 h, 30 s * 2^(failures-1)). `rand` is in [0, 1).

    Why jitter: subscribers that come back after an outage are not hit by every dispatcher's
    retries at the same instant. Why not full jitter: the wait keeps growing, so a subscriber
    that stays down costs at most about one attempt per delivery per half hour."""
    if failures < 1:
        raise ValueError("failures counts from 1")
    ceiling = min(MAX_RETRY, FIRST_RETRY * 2 ** min(failures - 1, 20))
    return ceiling / 2 + ceiling / 2 * min(max(rand, 0.0), 1.0)


def after_failure(failures: int, created_at: datetime, now: datetime, rand: float) -> tuple[str, datetime | None]:
    """A failed attempt's outcome: ("pending", when to try again), or ("dead", None) once the
    delivery is GIVE_UP_AFTER old (counted from when it was made, so a subscriber that stays
    down turns a loan's queued events dead together, not one every three days)."""
    if now - created_at >= GIVE_UP_AFTER:
        return "dead", None
    return "pending", now + retry_delay(failures, rand)


def delivered(status: int | None) -> bool:
    """Only a 2xx answer delivers (a redirect is not followed: the URL is what was registered)."""
    return status is not None and 200 <= status < 300
