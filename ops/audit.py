"""The audit export: a loan's evidential record read straight from the database (no Temporal
server, no worker), its hash chain verified, and how long it must be kept. The CLI's `audit`
command (`starter.py audit`) prints it."""

from __future__ import annotations

import csv
import io
from datetime import date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from db.store import make_engine
from db.tables import AuditRow, LoanRow
from infra.loaders import load_policy, load_ruleset
from infra.settings import settings
from models.audit import GENESIS, canonical_time, verify_chain

AUDIT_COLUMNS = (
    "seq",
    "key",
    "loan_id",
    "at",
    "actor",
    "action",
    "stage",
    "rule_id",
    "evidence_ref",
    "detail",
    "prev_hash",
    "hash",
    "recorded_at",
)
"""The columns of an exported audit entry (`at` is the canonical UTC time the hash covers,
`detail` the stored JSON text), so an export can be verified on its own with
`models.audit.verify_chain`."""


def export_audit(
    loan_id: str, database_url: str | None = None, *, retention_years: int | None = None
) -> tuple[list[dict[str, Any]], list[str], date | None]:
    """A loan's evidential record: its audit entries in chain order (as dicts with
    AUDIT_COLUMNS), the problems the hash chain shows (empty: intact) and the date until
    which the record must be kept (the last entry's UTC date plus `retention_years`, by
    default the retention of the rule set of the loan's policy; None for a loan with no
    entries). Reads DATABASE_URL unless `database_url` is given; a SQLite file that does not
    exist is an error (FileNotFoundError), not a new empty database."""
    url = database_url or settings().database_url
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else ""
    if path and path != ":memory:" and not Path(path).exists():
        raise FileNotFoundError(f"no database at {path}")
    engine = make_engine(url, pool_size=1, max_overflow=0)
    try:
        return read_audit(engine, loan_id, retention_years=retention_years)
    finally:
        engine.dispose()


def read_audit(
    engine: Engine, loan_id: str, *, retention_years: int | None = None
) -> tuple[list[dict[str, Any]], list[str], date | None]:
    """`export_audit` on an engine the caller holds (the HTTP API's own)."""
    with Session(engine) as session:
        query = select(AuditRow).where(AuditRow.loan_id == loan_id)
        rows = session.exec(query.order_by(col(AuditRow.seq), col(AuditRow.id))).all()
        if retention_years is None:
            retention_years = _retention_years(session, loan_id)
    entries = [
        {
            **{name: getattr(row, name) for name in AUDIT_COLUMNS},
            "at": canonical_time(row.at),
            "recorded_at": canonical_time(row.recorded_at),
        }
        for row in rows
    ]
    retain_until = years_after(rows[-1].at.date(), retention_years) if rows else None
    return entries, verify_chain(entries), retain_until


def _retention_years(session: Session, loan_id: str) -> int:
    """Records are kept as long as the rule set of the loan's policy says (5 years if unknown)."""
    cfg = settings()
    row = session.get(LoanRow, loan_id)
    try:
        policy = load_policy(row.policy if row else "default", cfg.policies_dir)
        return load_ruleset(policy.conduct.ruleset, cfg.rulesets_dir, policy.conduct.overrides).retention_years
    except ValueError:
        return 5


def years_between(at: str, until: date | None) -> int | None:
    """Whole calendar years from the time `at` (ISO text) to `until` (None: None)."""
    return None if until is None else until.year - datetime.fromisoformat(at).year


def years_after(day: date, years: int) -> date:
    """The same day `years` later (28 February for a 29 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:  # 29 February
        return day.replace(year=day.year + years, day=28)


def chain_summary(entries: list[dict[str, Any]], problems: list[str]) -> dict[str, Any]:
    """The chain's verification as an export states it (the CLI's JSON and the API's)."""
    return {
        "algorithm": "sha256",
        "genesis": GENESIS,
        "intact": not problems,
        "entries": len(entries),
        "head": entries[-1]["hash"] if entries else GENESIS,
        "problems": problems,
    }


def to_csv(entries: list[dict[str, Any]]) -> str:
    """The entries as CSV with AUDIT_COLUMNS (verifiable on its own)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=AUDIT_COLUMNS)
    writer.writeheader()
    writer.writerows(entries)
    return buffer.getvalue()
