"""The live report's records (`lab.live.live_results`) read from a database with rows written
directly (SQLite and PostgreSQL): hand-over balance, payments by day, buckets every 30 days,
outcome, contacts by channel, call minutes, guard decisions, promises, contacts after an
opt-out, costs (agency commission on what was paid while placed, a court filing), the
period's end, and loans of other experiments left out.

The screening's columns (segment, score, experiment, arm on `loans`) come with migration 0006
of the screening work; until that is merged, `screening_columns` adds them here, in the test
only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session

import starter
from db.contacts import ContactRow
from db.store import audit_row
from db.tables import BorrowerRow, CaseRow, LedgerEntry, LoanRow, PlacementRow, TaskRow
from infra.settings import settings
from lab.costs import CostTable
from lab.live import has_experiments, live_results

T0 = datetime(2026, 6, 1, tzinfo=UTC)
NOW = T0 + timedelta(days=100)


def day(n: float) -> datetime:
    return T0 + timedelta(days=n)


def screening_columns(engine: Engine) -> None:
    """A stand-in for migration 0006, in tests only (skipped once the real one has run)."""
    if has_experiments(engine):
        return
    with engine.begin() as c:
        for name, kind in (
            ("segment", "VARCHAR(64)"),
            ("score", "NUMERIC(10, 4)"),
            ("experiment", "VARCHAR(64)"),
            ("arm", "VARCHAR(64)"),
        ):
            c.execute(text(f"ALTER TABLE loans ADD COLUMN {name} {kind} NULL"))


def add_loan(s: Session, loan_id: str, principal: str, stage: str, created: datetime) -> None:
    s.add(BorrowerRow(borrower_id=f"B-{loan_id}", name="x", timezone="Asia/Shanghai", language="zh"))
    s.add(
        LoanRow(
            loan_id=loan_id,
            borrower_id=f"B-{loan_id}",
            currency="CNY",
            principal=Decimal(principal),
            interest=Decimal("100.00"),
            fees=Decimal(0),
            penalties=Decimal(0),
            due_date=(created - timedelta(days=5)).date(),
            policy="default",
            stage=stage,
            created_at=created,
        )
    )


def pay(s: Session, loan_id: str, n: int, at: datetime, amount: str) -> None:
    s.add(
        LedgerEntry(
            key=f"{loan_id}/pay/{n}", loan_id=loan_id, kind="payment", amount=Decimal(amount), currency="CNY", at=at
        )
    )


def contact(s: Session, loan_id: str, n: int, channel: str, at: datetime, purpose: str = "escalation") -> None:
    s.add(
        ContactRow(
            key=f"{loan_id}/c/{n}", borrower_id=f"B-{loan_id}", loan_id=loan_id, channel=channel, purpose=purpose, at=at
        )
    )


def task(s: Session, loan_id: str, n: int, outcome: str, at: datetime) -> None:
    s.add(
        TaskRow(
            task_id=f"{loan_id}/call/{n}",
            loan_id=loan_id,
            workflow_id=f"collection-{loan_id}",
            kind="call",
            queue="collectors",
            template="call",
            attempt=n,
            brief="",
            status="closed",
            outcome=outcome,
            due_by=at,
            created_at=at,
            closed_at=at,
        )
    )


def audit(s: Session, loan_id: str, n: int, action: str, at: datetime, rule_id: str = "", **detail: str) -> None:
    s.add(audit_row(f"{loan_id}/a/{n}", loan_id, action, "workflow", "", at, rule_id=rule_id, **detail))
    s.flush()


def seed(engine: Engine) -> None:
    screening_columns(engine)
    with Session(engine) as s:
        add_loan(s, "L1", "1000.00", "paid", T0)
        add_loan(s, "L2", "2000.00", "written_off", T0)
        add_loan(s, "L3", "500.00", "early", T0)
        add_loan(s, "L4", "500.00", "early", day(60))
        s.flush()
        # L1, champion: paid in two payments, the second on day 40, which closes it
        pay(s, "L1", 1, day(10), "500.00")
        pay(s, "L1", 2, day(40), "600.00")
        contact(s, "L1", 1, "sms", day(1))
        contact(s, "L1", 2, "email", day(3))
        contact(s, "L1", 3, "sms", day(5))  # after the opt-out of day 2: must not happen
        contact(s, "L1", 4, "sms", day(40), purpose="transactional")  # a confirmation may
        contact(s, "L1", 5, "phone", day(6))
        task(s, "L1", 1, "answered", day(6))
        task(s, "L1", 2, "no_answer", day(7))
        audit(s, "L1", 1, "guard_deferred", day(1), rule_id="CN-HOURS")
        audit(s, "L1", 2, "opt_out", day(2), channel="sms")
        audit(s, "L1", 3, "promise_accepted", day(6))
        audit(s, "L1", 4, "promise_kept", day(10))
        audit(s, "L1", 5, "collection_closed", day(40))
        # L2, challenger: a fee, placed with an agency that collects 100, a court case, charged off on day 70
        s.add(
            LedgerEntry(
                key="L2/fee/1",
                loan_id="L2",
                kind="fee",
                component="penalties",
                amount=Decimal("50.00"),
                currency="CNY",
                at=day(20),
            )
        )
        s.add(
            PlacementRow(
                placement_id="L2/agency/1",
                loan_id="L2",
                agency="acme",
                amount=Decimal("2100.00"),
                currency="CNY",
                placed_at=day(61),
                recall_at=day(120),
            )
        )
        pay(s, "L2", 1, day(65), "100.00")
        s.add(
            CaseRow(
                case_id="L2/case/1",
                loan_id="L2",
                amount=Decimal("2000.00"),
                currency="CNY",
                document="x",
                filed_at=day(66),
            )
        )
        s.add(
            LedgerEntry(
                key="L2/charge-off",
                loan_id="L2",
                kind="charge_off",
                amount=Decimal("2050.00"),
                currency="CNY",
                at=day(70),
            )
        )
        audit(s, "L2", 1, "dispute_open", day(30))
        audit(s, "L2", 2, "guard_refused", day(31), rule_id="GEN-HOLD")
        s.commit()
    with engine.begin() as c:
        for loan_id, experiment, arm, segment in (
            ("L1", "early", "champion", "prime"),
            ("L2", "early", "early-call", "prime"),
            ("L3", "other", "champion", "prime"),
            ("L4", "early", "champion", "prime"),
        ):
            c.execute(
                text("UPDATE loans SET experiment = :e, arm = :a, segment = :s WHERE loan_id = :id"),
                {"e": experiment, "a": arm, "s": segment, "id": loan_id},
            )


def test_live_results_read_every_figure(engine: Engine) -> None:
    seed(engine)
    results = {r.loan_id: r for r in live_results(engine, "early", start=None, end=None, costs=CostTable(), now=NOW)}
    assert sorted(results) == ["L1", "L2", "L4"]
    one, two = results["L1"], results["L2"]
    assert (one.arm, one.segment, one.experiment, one.policy) == ("champion", "prime", "early", "default")
    assert one.handover_balance == Decimal("1100.00") and one.handover_dpd == 5 and one.days == 100
    assert one.payments == [(10, Decimal("500.00")), (40, Decimal("600.00"))]
    assert (one.outcome, one.closed_day) == ("paid", 40)
    assert one.buckets == ["1-30", "31-60", "paid", "paid"]
    assert one.contacts == {"sms": 3, "email": 1, "phone": 2}
    assert one.call_minutes == Decimal(7)  # 6 answered + 1 not
    assert one.guard == {"deferred:CN-HOURS": 1}
    assert (one.promises_made, one.promises_kept) == (1, 1)
    assert one.contacts_after_refusal == 1
    assert one.costs == {"sms": Decimal("0.15"), "email": Decimal("0.01"), "call_minutes": Decimal("8.40")}

    assert (two.arm, two.outcome, two.closed_day) == ("early-call", "written_off", 70)
    assert two.buckets == ["1-30", "31-60", "61-90", "written_off"]
    assert two.fees_posted == Decimal("50.00") and two.charged_off == Decimal("2050.00")
    assert two.contacts == {"agency": 1} and two.disputes == 1 and two.guard == {"refused:GEN-HOLD": 1}
    assert two.costs == {"agency_commission": Decimal("20.0000"), "court": Decimal("800.00")}

    four = results["L4"]
    assert four.days == 40 and four.buckets == ["1-30", "31-60"] and four.outcome == "open"


def test_the_period_ends_the_record(engine: Engine) -> None:
    seed(engine)
    end = day(50).date()
    results = {
        r.loan_id: r for r in live_results(engine, "early", start=T0.date(), end=end, costs=CostTable(), now=NOW)
    }
    assert sorted(results) == ["L1", "L2"]  # L4 was handed over after the period
    two = results["L2"]
    assert two.days == 51 and two.outcome == "open" and two.payments == [] and two.charged_off == 0
    assert results["L1"].outcome == "paid"


def test_other_currencies_are_not_costed_and_unknown_experiments_are_empty(engine: Engine) -> None:
    seed(engine)
    results = live_results(engine, "early", start=None, end=None, costs=CostTable(currency="USD"), now=NOW)
    assert all(r.costs == {} for r in results)
    assert live_results(engine, "nope", start=None, end=None, costs=CostTable(), now=NOW) == []


def test_the_report_command_writes_the_report(
    engine: Engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    seed(engine)
    costs = tmp_path / "costs.toml"
    costs.write_text('[costs]\ncurrency = "CNY"\nsms = "0.10"\n', encoding="utf-8")
    monkeypatch.setenv("DATABASE_URL", engine.url.render_as_string(hide_password=False))
    settings.cache_clear()
    try:
        code = starter.main(["report", "--experiment", "early", "--costs", str(costs), "--out", str(tmp_path / "r")])
        missing = starter.main(["report", "--experiment", "nope", "--out", str(tmp_path / "n")])
    finally:
        settings.cache_clear()
    out, err = capsys.readouterr()
    assert code == 0 and missing == 2
    assert "too few loans to say anything" in out and f"report: {tmp_path / 'r' / 'report.html'}" in out
    assert "no loans of experiment 'nope'" in err
    html = (tmp_path / "r" / "report.html").read_text(encoding="utf-8")
    assert "Experiment early: live results" in html and "costs.toml" in html
    assert (tmp_path / "r" / "summary.csv").is_file()
