"""The evidential record: every loan's audit entries form a hash chain; a changed, deleted,
inserted or reordered entry is found and named; concurrent appends never fork the chain; the
`audit` CLI exports the record (JSON or CSV) and verifies it without Temporal."""

from __future__ import annotations

import csv
import hashlib
import inspect
import io
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select
from temporalio.testing import ActivityEnvironment

import db.store
import starter
from activities.handover import HandoverActivities
from activities.ledger import LedgerActivities
from activities.records import RecordActivities
from activities.rendering import Renderer
from activities.tasks import TaskActivities
from db.store import append_audit, audit_row, insert_once, is_chain_conflict
from db.tables import AuditRow
from infra.settings import ROOT, settings
from models import Allocation, Balance, Payment
from models.audit import GENESIS, entry_hash, verify_chain
from models.requests import (
    AuditEvent,
    FeeRequest,
    PaymentRecord,
    PlacementRequest,
    RecallRequest,
    TaskClosure,
    TaskRequest,
)
from tests.helpers import Harness, make_loan, template_context

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
LOAN = "L-AUDIT"
CONTEXT = template_context(LOAN)


# ------------------------------------------------------------------------- pure: hash and verification


def fields(seq: int, key: str | None = None, **overrides: Any) -> dict[str, Any]:
    return {
        "loan_id": LOAN,
        "seq": seq,
        "key": key or f"{LOAN}/e{seq}",
        "at": NOW + timedelta(hours=seq),
        "actor": "system",
        "action": "fee_posted",
        "stage": "early",
        "rule_id": "",
        "evidence_ref": "",
        "detail": json.dumps({"amount": f"{seq}00.00"}),
        **overrides,
    }


def chain(n: int) -> list[dict[str, Any]]:
    """n entries of one loan, chained the way db.store chains them."""
    entries, prev = [], GENESIS
    for seq in range(1, n + 1):
        entry = fields(seq)
        entry["prev_hash"], entry["hash"] = prev, entry_hash(prev, entry)
        prev = entry["hash"]
        entries.append(entry)
    return entries


def test_entry_hash_is_sha256_of_the_canonical_json() -> None:
    entry = fields(1, rule_id="UK-CAP-1", evidence_ref="DOC-1", detail='{"note": "李明"}')
    canonical = json.dumps(
        {
            "loan_id": LOAN,
            "seq": 1,
            "key": f"{LOAN}/e1",
            "at": "2026-12-01T03:00:00.000000+00:00",
            "actor": "system",
            "action": "fee_posted",
            "stage": "early",
            "rule_id": "UK-CAP-1",
            "evidence_ref": "DOC-1",
            "detail": '{"note": "李明"}',
            "prev_hash": GENESIS,
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    assert entry_hash(GENESIS, entry) == hashlib.sha256(canonical).hexdigest()
    assert GENESIS == "0" * 64


def test_entry_hash_covers_every_field_and_the_previous_hash() -> None:
    base = fields(2)
    digest = entry_hash("a" * 64, base)
    assert entry_hash("a" * 64, dict(base)) == digest
    assert entry_hash("b" * 64, base) != digest
    changes = {
        "loan_id": "L-2",
        "seq": 3,
        "key": "k",
        "at": NOW,
        "actor": "cli",
        "action": "x",
        "stage": "late",
        "rule_id": "R",
        "evidence_ref": "E",
        "detail": "{}",
    }
    for name, value in changes.items():
        assert entry_hash("a" * 64, {**base, name: value}) != digest, name


def test_entry_hash_uses_the_instant_in_utc() -> None:
    utc = fields(1)
    shanghai = {**utc, "at": utc["at"].astimezone(ZoneInfo("Asia/Shanghai"))}
    as_text = {**utc, "at": "2026-12-01T03:00:00Z", "seq": "1"}  # an export's CSV row
    assert entry_hash(GENESIS, utc) == entry_hash(GENESIS, shanghai) == entry_hash(GENESIS, as_text)
    with pytest.raises(ValueError, match="naive"):
        entry_hash(GENESIS, {**utc, "at": datetime(2026, 12, 1, 3, 0)})


def test_an_intact_chain_has_no_problems() -> None:
    assert verify_chain(chain(5)) == []
    assert verify_chain([]) == []


def test_a_changed_entry_is_named() -> None:
    entries = chain(5)
    entries[2]["detail"] = json.dumps({"amount": "1.00"})
    problems = verify_chain(entries)
    assert len(problems) == 1
    assert "seq 3" in problems[0] and f"{LOAN}/e3" in problems[0] and "changed" in problems[0]


def test_a_changed_entry_with_a_recomputed_hash_breaks_the_next_link() -> None:
    entries = chain(5)
    entries[2]["actor"] = "someone"
    entries[2]["hash"] = entry_hash(entries[2]["prev_hash"], entries[2])
    problems = verify_chain(entries)
    assert len(problems) == 1 and "seq 4" in problems[0] and "seq 3" in problems[0] and "prev_hash" in problems[0]


def test_a_deleted_entry_is_a_gap() -> None:
    entries = chain(5)
    del entries[2]
    problems = verify_chain(entries)
    assert len(problems) == 1
    assert "seq 3 missing" in problems[0] and f"entry seq 4 (key {LOAN}/e4)" in problems[0]
    assert f"after entry seq 2 (key {LOAN}/e2)" in problems[0]


def test_deleted_first_entries_are_found() -> None:
    problems = verify_chain(chain(4)[2:])
    assert len(problems) == 1 and "seq 1..2 missing" in problems[0] and "at the start" in problems[0]


def test_reordered_entries_are_found() -> None:
    entries = chain(5)
    entries[1], entries[2] = entries[2], entries[1]
    problems = verify_chain(entries)
    assert any("seq 3" in p and "missing" in p for p in problems)
    assert any("seq 2" in p and "out of order" in p for p in problems)


def test_renumbered_entries_are_found() -> None:
    """Swapping two rows' seq (so they sort the other way) changes both hashes."""
    entries = chain(4)
    entries[1]["seq"], entries[2]["seq"] = 3, 2
    entries.sort(key=lambda e: e["seq"])
    problems = verify_chain(entries)
    assert any(f"key {LOAN}/e3" in p and "changed" in p for p in problems)
    assert any(f"key {LOAN}/e2" in p and "changed" in p for p in problems)


def test_an_inserted_entry_is_found() -> None:
    entries = chain(4)
    forged = fields(2, key="forged")
    forged["prev_hash"] = entries[0]["hash"]
    forged["hash"] = entry_hash(forged["prev_hash"], forged)  # a well-formed entry of its own
    entries.insert(2, forged)
    problems = verify_chain(entries)
    assert any("key forged" in p and "also used by key" in p for p in problems)


def test_a_foreign_or_unchained_entry_is_found() -> None:
    entries = chain(3)
    entries[1]["loan_id"] = "L-OTHER"
    entries[2]["hash"] = ""
    problems = verify_chain(entries)
    assert any("seq 2" in p and "L-OTHER" in p for p in problems)
    assert any("seq 3" in p and "not chained" in p for p in problems)


# ------------------------------------------------------------------------- the database


def ledger(engine: Engine) -> LedgerActivities:
    return LedgerActivities(engine)


def record_activities(engine: Engine) -> RecordActivities:
    """RecordActivities with whichever directories its constructor takes (`policies_dir`,
    `templates_dir` ...: the setting of that name, else the project folder)."""
    cfg = settings()
    wanted = [
        p
        for p in inspect.signature(RecordActivities.__init__).parameters.values()
        if p.name not in ("self", "engine") and p.default is inspect.Parameter.empty
    ]
    dirs = {p.name: getattr(cfg, p.name, ROOT / p.name.removesuffix("_dir")) for p in wanted}
    return RecordActivities(engine, **dirs)


def fee(period: int, loan_id: str = LOAN) -> FeeRequest:
    return FeeRequest(
        key=f"{loan_id}/fee/{period}",
        loan_id=loan_id,
        at=NOW + timedelta(days=period),
        period=period,
        amount=Decimal("525.00"),
        currency="CNY",
    )


def audit_rows(engine: Engine, loan_id: str = LOAN) -> list[AuditRow]:
    with Session(engine) as session:
        query = select(AuditRow).where(AuditRow.loan_id == loan_id)
        return list(session.exec(query.order_by(col(AuditRow.seq), col(AuditRow.id))).all())


def record_a_loan(engine: Engine) -> list[AuditRow]:
    """A loan's life through the real activities: fees, a payment, a call task opened and
    closed, an agency placement and recall, a decision; each retried once (no new entry)."""
    env = ActivityEnvironment()
    renderer = Renderer(settings().templates_dir)
    led, tasks, handover = ledger(engine), TaskActivities(engine, renderer), HandoverActivities(engine, renderer)
    records = record_activities(engine)
    pay = Payment(payment_id="P-1", amount=Decimal("700.00"), currency="CNY", paid_at=NOW + timedelta(days=3))
    task = TaskRequest(
        key=f"{LOAN}/call@5/1",
        loan_id=LOAN,
        at=NOW,
        workflow_id=f"collection-{LOAN}",
        kind="call",
        queue="collectors",
        template="call_first_round",
        language="en",
        attempt=1,
        due_by=NOW + timedelta(days=1),
        context=CONTEXT,
    )
    placement = PlacementRequest(
        key=f"{LOAN}/agency@60",
        loan_id=LOAN,
        at=NOW + timedelta(days=5),
        template="agency_handover",
        language="en",
        context=CONTEXT,
        agency="Acme",
        recall_at=NOW + timedelta(days=65),
        balance=Balance(principal=Decimal("10000.00")),
        currency="CNY",
    )
    steps: list[tuple[Callable[..., Any], Any]] = [
        (led.post_fee, fee(1)),
        (
            led.record_payment,
            PaymentRecord(
                key=f"{LOAN}/payment/P-1",
                loan_id=LOAN,
                at=pay.paid_at,
                payment=pay,
                allocation=Allocation(penalties=Decimal("525.00"), fees=Decimal("100.00"), interest=Decimal("75.00")),
                balance_after=Balance(principal=Decimal("10000.00"), interest=Decimal("425.00")),
            ),
        ),
        (tasks.create_task, task),
        (
            tasks.close_task,
            TaskClosure(
                task_id=task.key,
                loan_id=LOAN,
                at=NOW + timedelta(hours=3),
                outcome="promised",
                note="pays Friday",
                recording_ref="REC-1",
                closed_by="agent-7",
            ),
        ),
        (
            records.record_event,
            AuditEvent(
                key=f"{LOAN}/promise/1",
                loan_id=LOAN,
                action="promise_accepted",
                actor="cli",
                stage="early",
                at=NOW + timedelta(hours=4),
                detail={"amount": "500.00"},
            ),
        ),
        (handover.place_with_agency, placement),
        (
            handover.recall_from_agency,
            RecallRequest(placement_id=placement.key, loan_id=LOAN, at=NOW + timedelta(days=6), reason="hardship"),
        ),
        (led.post_fee, fee(2)),
    ]
    for method, request in steps:
        env.run(method, request)
        env.run(method, request)  # a retry writes nothing
    return audit_rows(engine)


def test_entries_written_by_the_activities_form_one_chain(engine: Engine) -> None:
    rows = record_a_loan(engine)
    assert [r.action for r in rows] == [
        "fee_posted",
        "payment_applied",
        "call_task_created",
        "call_task_closed",
        "promise_accepted",
        "agency_placed",
        "agency_recalled",
        "fee_posted",
    ]
    assert [r.seq for r in rows] == list(range(1, 9))
    assert rows[0].prev_hash == GENESIS
    assert all(r.prev_hash == before.hash for before, r in pairwise(rows))
    assert verify_chain(rows) == []
    entries, problems, _ = starter.export_audit(LOAN, engine.url.render_as_string(hide_password=False))
    assert problems == [] and [e["key"] for e in entries] == [r.key for r in rows]


def test_loans_have_separate_chains(engine: Engine) -> None:
    env = ActivityEnvironment()
    for period in (1, 2):
        env.run(ledger(engine).post_fee, fee(period, "L-A"))
        env.run(ledger(engine).post_fee, fee(period, "L-B"))
    for loan_id in ("L-A", "L-B"):
        rows = audit_rows(engine, loan_id)
        assert [r.seq for r in rows] == [1, 2] and rows[0].prev_hash == GENESIS and verify_chain(rows) == []


def test_audit_row_takes_the_rule_and_the_evidence(engine: Engine) -> None:
    row = audit_row(
        f"{LOAN}/stop",
        LOAN,
        "collection_stopped",
        "cli",
        "late",
        NOW,
        rule_id="UK-BANKRUPTCY",
        evidence_ref="COURT-9",
        reason="bankruptcy",
    )
    stored, duplicate = insert_once(engine, row, "key")
    assert not duplicate and (stored.rule_id, stored.evidence_ref, stored.seq) == ("UK-BANKRUPTCY", "COURT-9", 1)
    assert json.loads(stored.detail) == {"reason": "bankruptcy"}
    other = audit_rows(engine)[0]
    other.rule_id = "X"
    assert entry_hash(other.prev_hash, other) != stored.hash  # the rule is covered by the hash


def tamper(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as conn:
        assert conn.execute(text(sql), params).rowcount == 1


@pytest.mark.parametrize(
    "column, value",
    [
        ("detail", '{"amount": "5.00", "currency": "CNY", "period": "1"}'),
        ("actor", "agent-13"),
        ("at", "2026-11-01 00:00:00.000000"),
    ],
)
def test_a_changed_row_fails_verification_and_is_named(engine: Engine, column: str, value: str) -> None:
    rows = record_a_loan(engine)
    target = rows[0]  # the first fee: its amount, actor or time
    tamper(engine, f"UPDATE audit SET {column} = :value WHERE key = :key", value=value, key=target.key)
    _, problems, _ = starter.export_audit(LOAN, engine.url.render_as_string(hide_password=False))
    assert len(problems) == 1
    assert f"entry seq {target.seq} (key {target.key})" in problems[0] and "changed" in problems[0]


def test_a_changed_amount_in_a_payment_is_named(engine: Engine) -> None:
    rows = record_a_loan(engine)
    payment = next(r for r in rows if r.action == "payment_applied")
    tamper(engine, "UPDATE audit SET detail = replace(detail, '700.00', '7000.00') WHERE key = :key", key=payment.key)
    _, problems, _ = starter.export_audit(LOAN, engine.url.render_as_string(hide_password=False))
    assert problems == [f"entry seq {payment.seq} (key {payment.key}): changed: its content does not match its hash"]


def test_a_deleted_middle_row_fails_verification_and_names_the_gap(engine: Engine) -> None:
    rows = record_a_loan(engine)
    gone, after = rows[3], rows[4]
    tamper(engine, "DELETE FROM audit WHERE key = :key", key=gone.key)
    _, problems, _ = starter.export_audit(LOAN, engine.url.render_as_string(hide_password=False))
    assert len(problems) == 1
    assert f"seq {gone.seq} missing" in problems[0]
    assert f"entry seq {after.seq} (key {after.key})" in problems[0]
    assert f"after entry seq {rows[2].seq} (key {rows[2].key})" in problems[0]


def test_the_orm_refuses_to_change_or_delete_an_entry(engine: Engine) -> None:
    record_a_loan(engine)
    with Session(engine) as session:
        row = session.exec(select(AuditRow)).first()
        assert row is not None
        row.actor = "someone"
        session.add(row)
        with pytest.raises(PermissionError, match="append-only"):
            session.commit()
    with Session(engine) as session:
        session.delete(session.exec(select(AuditRow)).first())
        with pytest.raises(PermissionError, match="append-only"):
            session.commit()
    assert verify_chain(audit_rows(engine)) == []


def test_an_entry_added_with_a_plain_session_add_is_chained(engine: Engine) -> None:
    """Code that adds an AuditRow to its own session (without append_audit) still chains it."""
    env = ActivityEnvironment()
    env.run(ledger(engine).post_fee, fee(1))
    with Session(engine) as session:
        session.add(audit_row(f"{LOAN}/guard/1", LOAN, "guard_allowed", "guard", "", NOW, rule_id="GEN-ALLOWED"))
        session.add(audit_row(f"{LOAN}/guard/2", LOAN, "guard_denied", "guard", "", NOW, rule_id="UK-CAP"))
        session.commit()
    rows = audit_rows(engine)
    assert [r.seq for r in rows] == [1, 2, 3] and verify_chain(rows) == []


def test_append_audit_chains_inside_the_callers_transaction(engine: Engine) -> None:
    env = ActivityEnvironment()
    env.run(ledger(engine).post_fee, fee(1))
    with Session(engine) as session:
        first = append_audit(session, audit_row(f"{LOAN}/a", LOAN, "a", "system", "", NOW))
        second = append_audit(session, audit_row(f"{LOAN}/b", LOAN, "b", "system", "", NOW))
        assert (first.seq, second.seq, second.prev_hash) == (2, 3, first.hash)
        session.rollback()  # nothing of a rolled-back transaction stays
    assert [r.seq for r in audit_rows(engine)] == [1]
    env.run(ledger(engine).post_fee, fee(2))
    assert [r.seq for r in audit_rows(engine)] == [1, 2] and verify_chain(audit_rows(engine)) == []


def concurrent_appends(engine: Engine, threads: int) -> None:
    """Fees, decisions and task closures for one loan from many threads at once."""
    env = ActivityEnvironment()
    renderer = Renderer(settings().templates_dir)
    led, tasks = ledger(engine), TaskActivities(engine, renderer)
    records = record_activities(engine)
    task_ids = [f"{LOAN}/call@5/{n}" for n in range(threads)]
    for n, task_id in enumerate(task_ids):
        env.run(
            tasks.create_task,
            TaskRequest(
                key=task_id,
                loan_id=LOAN,
                at=NOW,
                workflow_id=f"collection-{LOAN}",
                kind="call",
                queue="q",
                template="call_first_round",
                language="en",
                attempt=n + 1,
                due_by=NOW + timedelta(days=1),
                context=CONTEXT,
            ),
        )
    start = threading.Barrier(threads)

    def work(n: int) -> None:
        start.wait()
        env.run(led.post_fee, fee(n + 1))
        env.run(
            records.record_event,
            AuditEvent(
                key=f"{LOAN}/decision/{n}",
                loan_id=LOAN,
                action="decided",
                actor="cli",
                stage="early",
                at=NOW,
                detail={"n": str(n)},
            ),
        )
        env.run(tasks.close_task, TaskClosure(task_id=task_ids[n], loan_id=LOAN, at=NOW, outcome="no_answer"))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))


def assert_one_unbroken_chain(engine: Engine, expected: int) -> None:
    rows = audit_rows(engine)
    assert len(rows) == expected
    assert [r.seq for r in rows] == list(range(1, expected + 1))
    assert len({r.prev_hash for r in rows}) == expected  # no two entries chained onto the same one
    assert verify_chain(rows) == []


def test_concurrent_appends_for_one_loan_keep_one_chain(engine: Engine) -> None:
    concurrent_appends(engine, 12)
    assert_one_unbroken_chain(engine, 12 * 4)


def test_concurrent_appends_that_race_for_a_seq_are_retried(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without SQLite's write lock the threads race for the same seq, as on PostgreSQL: the
    unique (loan_id, seq) constraint turns the loser back and its transaction runs again."""
    retries: list[int] = []
    backoff, last_entry = db.store._backoff, db.store._last_entry
    together, first_read = threading.Barrier(4), threading.local()

    def counted(attempt: int) -> None:
        retries.append(attempt)
        backoff(attempt)

    def read_together(session: Any, loan_id: str) -> tuple[int, str]:
        head = last_entry(session, loan_id)
        if threading.current_thread() is not threading.main_thread() and not getattr(first_read, "done", False):
            first_read.done = True  # every thread's first append reads the same head
            together.wait(timeout=10)
        return head

    monkeypatch.setattr(db.store, "hold_write_lock", lambda session: None)
    monkeypatch.setattr(db.store, "_last_entry", read_together)
    monkeypatch.setattr(db.store, "_backoff", counted)
    concurrent_appends(engine, 4)
    assert_one_unbroken_chain(engine, 4 * 4)
    assert retries, "the threads never raced: the retry path was not exercised"


def stale_head_once(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The first read of a chain's head misses the newest entry, as if a concurrent append
    committed right after it."""
    real = db.store._last_entry
    stale: list[int] = []

    def last_entry(session: Any, loan_id: str) -> tuple[int, str]:
        seq, digest = real(session, loan_id)
        if not stale and seq >= 1:
            stale.append(seq)
            before = session.execute(
                text("SELECT hash FROM audit WHERE loan_id = :l AND seq = :s"), {"l": loan_id, "s": seq - 1}
            ).scalar()
            return seq - 1, before or GENESIS
        return seq, digest

    monkeypatch.setattr(db.store, "_last_entry", last_entry)
    return stale


def test_insert_once_reruns_a_transaction_that_lost_the_race(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    env = ActivityEnvironment()
    env.run(ledger(engine).post_fee, fee(1))
    stale = stale_head_once(monkeypatch)
    result = env.run(ledger(engine).post_fee, fee(2))
    assert stale == [1] and not result.duplicate
    assert [r.seq for r in audit_rows(engine)] == [1, 2] and verify_chain(audit_rows(engine)) == []
    with Session(engine) as session:  # the fee row was written once, by the second attempt
        assert session.execute(text("SELECT count(*) FROM ledger WHERE key = :k"), {"k": fee(2).key}).scalar() == 1


def test_append_audit_retries_a_lost_race_inside_the_transaction(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = ActivityEnvironment()
    renderer = Renderer(settings().templates_dir)
    tasks = TaskActivities(engine, renderer)
    task = TaskRequest(
        key=f"{LOAN}/call@5/1",
        loan_id=LOAN,
        at=NOW,
        workflow_id="w",
        kind="call",
        queue="q",
        template="call_first_round",
        language="en",
        attempt=1,
        due_by=NOW,
        context=CONTEXT,
    )
    env.run(tasks.create_task, task)
    env.run(ledger(engine).post_fee, fee(1))
    stale = stale_head_once(monkeypatch)
    env.run(tasks.close_task, TaskClosure(task_id=task.key, loan_id=LOAN, at=NOW, outcome="answered"))
    rows = audit_rows(engine)
    assert stale == [2] and [r.action for r in rows] == ["call_task_created", "fee_posted", "call_task_closed"]
    assert verify_chain(rows) == []


def test_a_duplicate_business_key_is_already_done_not_a_chain_conflict(engine: Engine) -> None:
    env = ActivityEnvironment()
    env.run(ledger(engine).post_fee, fee(1))
    with Session(engine) as session, pytest.raises(Exception) as raised:
        session.add(audit_row(f"{LOAN}/fee/1#audit", LOAN, "fee_posted", "system", "", NOW))
        session.commit()
    assert not is_chain_conflict(raised.value)
    with Session(engine) as session, pytest.raises(Exception) as raised:
        session.add(
            AuditRow(key="other", loan_id=LOAN, at=NOW, actor="x", action="x", seq=1, prev_hash=GENESIS, hash="f" * 64)
        )  # pre-chained onto a seq that is taken
        session.commit()
    assert is_chain_conflict(raised.value)
    assert env.run(ledger(engine).post_fee, fee(1)).duplicate


async def test_a_loan_walked_through_the_ladder_has_an_intact_chain(harness: Harness, db_url: str) -> None:
    """Every entry the workflow writes (messages, guard decisions, tasks, fees, placement,
    case, write-off, closure) lands on the loan's one chain."""
    loan = make_loan(dpd=0, now=await harness.now())
    await harness.start(loan)
    await harness.at_dpd(loan, 185)
    entries, problems, retain_until = starter.export_audit(loan.loan_id, db_url)
    actions = [e["action"] for e in entries]
    assert actions[0] == "collection_started" and "charged_off" in actions and "case_filed" in actions
    assert [e["seq"] for e in entries] == list(range(1, len(entries) + 1))
    assert problems == [] and retain_until is not None


# ------------------------------------------------------------------------- export and CLI


def test_export_has_the_entries_and_the_retention_date(engine: Engine) -> None:
    rows = record_a_loan(engine)
    entries, problems, retain_until = starter.export_audit(LOAN, engine.url.render_as_string(hide_password=False))
    assert problems == [] and len(entries) == len(rows)
    assert list(entries[0]) == list(starter.AUDIT_COLUMNS)
    assert entries[0]["at"] == "2026-12-02T02:00:00.000000+00:00" and entries[0]["seq"] == 1
    last_day = rows[-1].at.astimezone(UTC).date()
    assert retain_until == date(last_day.year + 5, last_day.month, last_day.day)
    exported = starter.export_audit(LOAN, engine.url.render_as_string(hide_password=False), retention_years=7)
    assert exported[2] == date(last_day.year + 7, 12, 3)
    assert starter.export_audit("L-NONE", engine.url.render_as_string(hide_password=False)) == ([], [], None)


def test_export_reads_the_database_url_setting(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    record_a_loan(engine)
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    settings.cache_clear()
    try:
        entries, problems, _ = starter.export_audit(LOAN)
    finally:
        settings.cache_clear()
    assert len(entries) == 8 and problems == []


def run_cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": db_url, "TEMPORAL_ADDRESS": "127.0.0.1:1"}  # no Temporal needed
    return subprocess.run(
        [sys.executable, "starter.py", "audit", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_exports_csv_and_json_and_exits_3_on_a_tampered_chain(engine: Engine, db_url: str, tmp_path: Path) -> None:
    rows = record_a_loan(engine)

    done = run_cli(db_url, LOAN, "--format", "csv")
    assert done.returncode == 0, done.stderr
    exported = list(csv.DictReader(io.StringIO(done.stdout)))
    assert [e["key"] for e in exported] == [r.key for r in rows]
    assert verify_chain(exported) == []  # the export verifies on its own
    assert done.stderr.strip() == f"chain intact ({len(rows)} entries)"

    out = tmp_path / "record.json"
    done = run_cli(db_url, LOAN, "--out", str(out), "--retention-years", "7")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and "chain intact (8 entries)" in done.stderr
    document = json.loads(out.read_text(encoding="utf-8"))
    assert document["retain_until"] == "2033-12-03" and document["retention_years"] == 7
    assert document["chain"]["intact"] and document["chain"]["head"] == rows[-1].hash
    assert verify_chain(document["entries"]) == []

    changed = rows[1]
    tamper(engine, "UPDATE audit SET detail = replace(detail, '700.00', '70.00') WHERE key = :key", key=changed.key)
    done = run_cli(db_url, LOAN, "--format", "csv")
    assert done.returncode == 3
    assert len(list(csv.DictReader(io.StringIO(done.stdout)))) == len(rows)  # still exported
    assert f"entry seq {changed.seq} (key {changed.key})" in done.stderr and "chain broken" in done.stderr

    done = run_cli(db_url, LOAN, "--format", "json")
    assert done.returncode == 3
    assert not json.loads(done.stdout)["chain"]["intact"]

    done = run_cli(db_url, "L-NONE")
    assert done.returncode == 2 and "no audit entries" in done.stderr
