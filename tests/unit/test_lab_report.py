"""The strategy report on disk (`lab.report.write_report`): report.html and the CSV files are
written, the page is self-contained (nothing loaded from a URL, the plots are data: PNGs) and
says the summary sentence; money is shown with its currency."""

from __future__ import annotations

import csv
import random
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

from lab.figures import compute
from lab.report import write_report
from lab.results import LoanResult
from lab.tables import ALL_TABLES


def records(n: int = 120) -> list[LoanResult]:
    rnd = random.Random(3)
    out = []
    for i in range(n):
        arm = "champion" if i % 2 else "early-call"
        paid = rnd.random() < (0.3 if arm == "champion" else 0.6)
        out.append(
            LoanResult(
                loan_id=f"L{i}",
                borrower_id=f"B{i}",
                segment="",
                experiment="exp",
                arm=arm,
                policy="default" if arm == "champion" else "early_call",
                currency="CNY",
                handover_at=datetime(2026, 6, 1, tzinfo=UTC),
                handover_dpd=1,
                handover_balance=Decimal("1234.50"),
                days=90,
                payments=[(rnd.randint(0, 90), Decimal("1234.50"))] if paid else [],
                buckets=[
                    "1-30",
                    "paid" if paid else "31-60",
                    "paid" if paid else "61-90",
                    "paid" if paid else "91-180",
                ],
                outcome="paid" if paid else "open",
                contacts={"sms": 3, "phone": 1},
                guard={"deferred:CN-HOURS": 1},
                costs={"sms": Decimal("0.15"), "call_minutes": Decimal("7.20")},
                promises_made=1,
            )
        )
    return out


def test_report_files_are_written_and_the_page_is_self_contained(tmp_path: Path) -> None:
    results = records()
    path = write_report(results, tmp_path / "out", title="Early call", context={"scenario": "test", "seed": "42"})
    assert path == tmp_path / "out" / "report.html"
    for name in ALL_TABLES:
        assert (tmp_path / "out" / name).is_file(), name
    html = path.read_text(encoding="utf-8")
    assert re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.IGNORECASE) is None
    assert "<script" not in html and "@import" not in html and "url(" not in html
    assert html.count('<img alt="') >= 4
    assert re.search(r'<img alt="[^"]*" src="data:image/png;base64,[A-Za-z0-9+/=]{100,}">', html)
    sentence = next(c.sentence for c in compute(results).comparisons if c.metric == "recovery_rate")
    assert sentence.replace("'", "&#39;") in html
    assert "Summary" in html and "scenario" in html and "42" in html
    assert "CNY" in html and "deferred" in html and "CN-HOURS" in html


def test_csv_files_hold_the_figures(tmp_path: Path) -> None:
    write_report(records(), tmp_path, title="t", context={})
    with (tmp_path / "summary.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["arm"] for r in rows] == ["champion", "early-call"]
    assert sum(int(r["loans"]) for r in rows) == 120
    assert Decimal(rows[0]["handover_balance"]) == Decimal("1234.50") * 60
    with (tmp_path / "differences.csv").open(encoding="utf-8") as f:
        diffs = list(csv.DictReader(f))
    assert {d["metric"] for d in diffs} == {"recovery_rate", "cure_rate", "cost_per_unit"}
    assert all(d["significant"] in ("yes", "no", "") for d in diffs)
    with (tmp_path / "recovery_curve.csv").open(encoding="utf-8") as f:
        assert sum(1 for _ in csv.DictReader(f)) == 2 * 91


def test_the_same_records_write_the_same_files(tmp_path: Path) -> None:
    write_report(records(), tmp_path / "a", title="t", context={})
    write_report(records(), tmp_path / "b", title="t", context={})
    for name in [*ALL_TABLES, "report.html"]:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
