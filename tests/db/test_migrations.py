"""Migrations (Alembic, migrations/), on SQLite and PostgreSQL: a database at head has exactly
the schema of the table classes; an empty database, or one written by a version of the project
from before migrations, is brought to head (rows kept, audit entries chained) and stamped; the
worker migrates at start; workers starting together migrate once; `alembic` by hand works."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import bindparam, create_engine, inspect, text
from sqlalchemy.pool import NullPool
from sqlmodel import Session, SQLModel, col, select
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment

from activities.ledger import LedgerActivities
from db import migrate
from db.store import make_engine
from db.tables import AuditRow, LedgerEntry, LoanRow
from db.types import UtcDateTime
from infra.settings import ROOT
from models.audit import GENESIS, verify_chain
from models.requests import FeeRequest
from tests import pg
from tests.helpers import LEGACY_SCHEMAS
from worker import create_worker

LEGACY = LEGACY_SCHEMAS
BASELINE = "0001"


def as_left_before_migrations(url: str) -> None:
    """The schema the worker's `create_all` made when migrations came (the baseline revision's,
    identical as the compare tests show), without an alembic_version table. Later revisions
    are not applied: their changes must come from the upgrade under test."""
    engine = migrate.migration_engine(url)
    with migrate.locked(engine) as conn:
        command.upgrade(migrate.alembic_config(conn), BASELINE)
        conn.execute(text("DROP TABLE alembic_version"))
    engine.dispose()


@pytest.fixture
def empty_url(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database with no tables at all, on `backend`."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    databases: pg.TestDatabases = request.getfixturevalue("postgres")
    url = databases.create_empty()
    yield url
    databases.drop(url)


def schema_differences(url: str) -> list[Any]:
    """What alembic's autogenerate would put in a new revision: differences between the
    database and every table class the application (and these tests) import."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, SQLModel.metadata))
    finally:
        engine.dispose()


def revision(url: str) -> str | None:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return migrate.current(conn)
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def execute(url: str, *statements: str, **params: Any) -> None:
    """Run SQL; datetime parameters are bound as the application binds them (UtcDateTime)."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            for statement in statements:
                typed = [
                    bindparam(name, type_=UtcDateTime())
                    for name, value in params.items()
                    if isinstance(value, datetime) and f":{name}" in statement
                ]
                conn.execute(text(statement).bindparams(*typed), params)
    finally:
        engine.dispose()


# ------------------------------------------------------------------------- the schema at head


def test_a_database_at_head_has_exactly_the_schema_of_the_table_classes(db_url: str) -> None:
    """Also what fails when a table or column is added to the classes without a revision:
    write one with `alembic revision --autogenerate -m "..."` (docs/database.md, "Migrations")."""
    assert revision(db_url) == migrate.head()
    assert schema_differences(db_url) == []


def test_an_empty_database_is_migrated_and_a_second_upgrade_changes_nothing(empty_url: str) -> None:
    assert tables(empty_url) == set()
    assert migrate.upgrade(empty_url) is True
    assert revision(empty_url) == migrate.head() and schema_differences(empty_url) == []
    assert migrate.upgrade(empty_url) is False


async def test_the_worker_brings_its_database_to_head_at_start(env: WorkflowEnvironment, empty_url: str) -> None:
    async with create_worker(env.client, task_queue=f"test-{uuid.uuid4()}", database_url=empty_url):
        assert revision(empty_url) == migrate.head()
    assert schema_differences(empty_url) == []


def test_workers_starting_together_migrate_once(empty_url: str) -> None:
    """Six upgrades at once on an empty database: one migrates, the others wait for its lock
    and then find the database at head (nothing fails, nothing is created twice)."""
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda _: migrate.upgrade(empty_url), range(6)))
    assert sorted(results) == [False] * 5 + [True]
    assert revision(empty_url) == migrate.head() and schema_differences(empty_url) == []


def alembic_cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The `alembic` command as a person runs it: DATABASE_URL from the environment."""
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_alembic_by_hand_upgrades_checks_and_downgrades_the_configured_database(empty_url: str) -> None:
    done = alembic_cli(empty_url, "upgrade", "head", "--sql")  # the SQL for a DBA, nothing applied
    assert done.returncode == 0, done.stderr
    assert "CREATE TABLE audit" in done.stdout and tables(empty_url) == set()
    done = alembic_cli(empty_url, "upgrade", "head")
    assert done.returncode == 0, done.stderr
    assert revision(empty_url) == migrate.head()
    done = alembic_cli(empty_url, "check")  # what CI-minded people run: no revision is missing
    assert done.returncode == 0 and "No new upgrade operations detected" in done.stdout + done.stderr
    done = alembic_cli(empty_url, "downgrade", "base")
    assert done.returncode == 0, done.stderr
    assert tables(empty_url) == {"alembic_version"} and revision(empty_url) is None
    assert migrate.upgrade(empty_url) is True and schema_differences(empty_url) == []


# ------------------------------------------------------------------------- databases from before migrations


def legacy_schema(url: str, backend: str) -> None:
    """The tables an older version of the project created (commit 4692e0a: no hash chain, no
    contact budget), with a few rows as it wrote them."""
    lines = (LEGACY / f"schema-4692e0a.{backend}.sql").read_text(encoding="utf-8").splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    execute(url, *[statement for statement in ddl.split(";") if statement.strip()])
    execute(
        url,
        "INSERT INTO borrowers VALUES ('B-1', '李明', '+8613800000000', '', '', 'Asia/Shanghai', 'zh')",
        "INSERT INTO loans (loan_id, borrower_id, currency, principal, interest, fees, penalties, due_date, product,"
        " policy, workflow_id, stage, created_at, updated_at) VALUES ('L-1', 'B-1', 'CNY', '10000.00', '500.00',"
        " '100.00', '0', '2026-11-20', 'consumer', 'default', 'collection-L-1', 'early', :at, :at)",
        "INSERT INTO ledger (key, loan_id, kind, component, amount, currency, at, reference, created_at)"
        " VALUES ('L-1/fee/1', 'L-1', 'fee', '', '525.00', 'CNY', :at, '', :at)",
        at=datetime(2026, 12, 1, 2, 0, tzinfo=UTC),
    )
    for n, loan_id in enumerate(["L-1", "L-2", "L-1"]):
        execute(
            url,
            "INSERT INTO audit (key, loan_id, at, actor, action, stage, detail, recorded_at)"
            " VALUES (:key, :loan, :at, 'system', 'fee_posted', 'early', :detail, :at)",
            key=f"k{n}",
            loan=loan_id,
            at=datetime(2026, 12, 1, 2, n, tzinfo=UTC),
            detail=json.dumps({"n": str(n)}),
        )


def audit_entries(url: str, loan_id: str) -> list[AuditRow]:
    engine = make_engine(url)
    try:
        with Session(engine) as session:
            return list(
                session.exec(select(AuditRow).where(AuditRow.loan_id == loan_id).order_by(col(AuditRow.seq))).all()
            )
    finally:
        engine.dispose()


def test_a_database_from_before_migrations_is_upgraded_and_stamped(backend: str, empty_url: str) -> None:
    legacy_schema(empty_url, backend)
    assert "alembic_version" not in tables(empty_url)

    assert migrate.upgrade(empty_url) is True
    assert revision(empty_url) == migrate.head()
    assert {"contacts", "person_locks"} <= tables(empty_url)  # what the old version lacked
    assert schema_differences(empty_url) == []

    first, second = audit_entries(empty_url, "L-1")  # chained per loan in the order written
    assert [(first.key, first.seq, first.prev_hash), (second.key, second.seq)] == [("k0", 1, GENESIS), ("k2", 2)]
    assert second.prev_hash == first.hash and verify_chain([first, second]) == []
    assert [(e.key, e.seq) for e in audit_entries(empty_url, "L-2")] == [("k1", 1)]

    engine = make_engine(empty_url)  # the application carries on where the old version stopped
    try:
        fee = FeeRequest(
            key="L-1/fee/2",
            loan_id="L-1",
            at=datetime(2026, 12, 31, 2, 0, tzinfo=UTC),
            period=2,
            amount=Decimal("525.00"),
            currency="CNY",
        )
        assert not ActivityEnvironment().run(LedgerActivities(engine).post_fee, fee).duplicate
        with Session(engine) as session:
            loan = session.get(LoanRow, "L-1")
            assert loan is not None and loan.principal == Decimal("10000.00")
            fees = session.exec(select(LedgerEntry.key).order_by(col(LedgerEntry.id))).all()
        assert fees == ["L-1/fee/1", "L-1/fee/2"]
    finally:
        engine.dispose()
    entries = audit_entries(empty_url, "L-1")
    assert [e.seq for e in entries] == [1, 2, 3] and verify_chain(entries) == []

    assert migrate.upgrade(empty_url) is False  # a second start changes nothing
    assert verify_chain(audit_entries(empty_url, "L-1")) == []


def test_a_database_created_just_before_migrations_is_stamped_as_it_is(empty_url: str) -> None:
    """Tables made by `create_all` of the classes (what the worker did until migrations came):
    nothing to change, the rows stay, the database is stamped."""
    as_left_before_migrations(empty_url)
    assert "alembic_version" not in tables(empty_url)
    execute(empty_url, "INSERT INTO person_locks VALUES ('B-1', 4)")
    assert migrate.upgrade(empty_url) is True
    assert revision(empty_url) == migrate.head() and schema_differences(empty_url) == []
    engine = create_engine(empty_url, poolclass=NullPool)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT version FROM person_locks")).scalar() == 4
    engine.dispose()


def test_a_database_upgraded_by_the_old_ad_hoc_step_gets_the_declared_constraint(backend: str, empty_url: str) -> None:
    """Before migrations the worker upgraded an old audit table itself: chain columns with
    defaults and a unique INDEX uq_audit_loan_seq (other tables as `create_all` made them).
    Such a database ends up exactly at head too (the index becomes the declared constraint)."""
    as_left_before_migrations(empty_url)
    lines = (LEGACY / f"schema-4692e0a.{backend}.sql").read_text(encoding="utf-8").split(";")
    old_audit = next(part for part in lines if "CREATE TABLE audit" in part)
    execute(empty_url, "DROP TABLE audit", old_audit.split("\n\n")[-1])
    execute(
        empty_url,
        *[
            f"ALTER TABLE audit ADD COLUMN {name} {kind}"
            for name, kind in (
                ("rule_id", "VARCHAR NOT NULL DEFAULT ''"),
                ("evidence_ref", "VARCHAR NOT NULL DEFAULT ''"),
                ("seq", "INTEGER NOT NULL DEFAULT 0"),
                ("prev_hash", "VARCHAR NOT NULL DEFAULT ''"),
                ("hash", "VARCHAR NOT NULL DEFAULT ''"),
            )
        ],
    )
    execute(
        empty_url,
        "CREATE UNIQUE INDEX uq_audit_loan_seq ON audit (loan_id, seq)",
        "CREATE INDEX ix_audit_loan_id ON audit (loan_id)",
    )

    assert migrate.upgrade(empty_url) is True
    assert revision(empty_url) == migrate.head()
    assert schema_differences(empty_url) == []


def test_revision_0006_adds_experiments_and_the_loans_screening_columns(empty_url: str) -> None:
    """A database at 0005 with a loan keeps it; the loan's screening columns are NULL (not
    screened), the experiments table is new; going back to 0005 removes them again."""
    engine = migrate.migration_engine(empty_url)
    with migrate.locked(engine) as conn:
        command.upgrade(migrate.alembic_config(conn), "0005")
    engine.dispose()
    execute(
        empty_url,
        "INSERT INTO borrowers VALUES ('B-1', '李明', '', '', '', 'Asia/Shanghai', 'zh')",
        "INSERT INTO loans (loan_id, borrower_id, currency, principal, interest, fees, penalties, due_date, product,"
        " policy, workflow_id, stage, created_at, updated_at) VALUES ('L-1', 'B-1', 'CNY', '10000.00', '0', '0', '0',"
        " '2026-11-20', 'consumer', 'default', 'collection-L-1', 'early', :at, :at)",
        at=datetime(2026, 12, 1, 2, 0, tzinfo=UTC),
    )
    assert "experiments" not in tables(empty_url)
    assert migrate.upgrade(empty_url) is True and schema_differences(empty_url) == []
    engine = create_engine(empty_url, poolclass=NullPool)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT principal, segment, score, experiment, arm FROM loans")).one()
    engine.dispose()
    assert Decimal(str(row[0])) == Decimal("10000.00") and tuple(row[1:]) == (None, None, None, None)
    assert "experiments" in tables(empty_url)
    done = alembic_cli(empty_url, "downgrade", "0005")
    assert done.returncode == 0, done.stderr
    assert "experiments" not in tables(empty_url)
    assert "segment" not in {
        c["name"] for c in inspect(create_engine(empty_url, poolclass=NullPool)).get_columns("loans")
    }
