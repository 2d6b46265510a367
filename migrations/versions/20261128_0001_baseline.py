"""Baseline: every table of the project as it stood when migrations were introduced.

Also brings a database written by an older version of the project (tables created by
`SQLModel.metadata.create_all`, no alembic_version table) to this schema: tables it lacks are
created, existing ones are kept with their rows, and an audit table from before the hash chain
gets its chain columns and has its entries chained per loan in the order they were written
(only the chain columns are set, no content changes). Alembic then stamps the database.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

MONEY = sa.Numeric(20, 6).with_variant(sa.String(40), "sqlite")  # db.types.Money: text on SQLite
UTC = sa.DateTime(timezone=True)  # db.types.UtcDateTime


def _id() -> sa.Column:
    return sa.Column("id", sa.Integer(), nullable=False)


def _str(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.String(), nullable=nullable)


def _indexes(table: str, *columns: str) -> None:
    for column in columns:
        op.create_index(f"ix_{table}_{column}", table, [column], unique=False)


def create_borrowers() -> None:
    op.create_table(
        "borrowers",
        _str("borrower_id"),
        _str("name"),
        _str("phone"),
        _str("email"),
        _str("address"),
        _str("timezone"),
        _str("language"),
        sa.PrimaryKeyConstraint("borrower_id"),
    )


def create_loans() -> None:
    op.create_table(
        "loans",
        _str("loan_id"),
        _str("borrower_id"),
        _str("currency"),
        sa.Column("principal", MONEY, nullable=False),
        sa.Column("interest", MONEY, nullable=False),
        sa.Column("fees", MONEY, nullable=False),
        sa.Column("penalties", MONEY, nullable=False),
        sa.Column("due_date", sa.Date(), nullable=False),
        _str("product"),
        _str("policy"),
        _str("workflow_id", nullable=True),
        _str("stage"),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.ForeignKeyConstraint(["borrower_id"], ["borrowers.borrower_id"]),
        sa.PrimaryKeyConstraint("loan_id"),
    )
    _indexes("loans", "borrower_id", "due_date")


def create_ledger() -> None:
    op.create_table(
        "ledger",
        _id(),
        _str("key"),
        _str("loan_id"),
        _str("kind"),
        _str("component"),
        sa.Column("amount", MONEY, nullable=False),
        _str("currency"),
        sa.Column("at", UTC, nullable=False),
        _str("reference"),
        sa.Column("created_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    _indexes("ledger", "loan_id")


def create_outbox() -> None:
    op.create_table(
        "outbox",
        _id(),
        _str("key"),
        _str("loan_id"),
        _str("channel"),
        _str("template"),
        _str("language"),
        _str("recipient"),
        _str("subject"),
        sa.Column("body", sa.Text(), nullable=False),
        _str("status"),
        _str("provider_ref"),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    _indexes("outbox", "loan_id")


def create_tasks() -> None:
    op.create_table(
        "tasks",
        _id(),
        _str("task_id"),
        _str("loan_id"),
        _str("workflow_id"),
        _str("kind"),
        _str("queue"),
        _str("template"),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("brief", sa.Text(), nullable=False),
        _str("status"),
        _str("outcome"),
        _str("note"),
        _str("recording_ref"),
        sa.Column("due_by", UTC, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("closed_at", UTC, nullable=True),
        _str("closed_by"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("task_id"),
    )
    _indexes("tasks", "loan_id", "queue")


def create_placements() -> None:
    op.create_table(
        "placements",
        _id(),
        _str("placement_id"),
        _str("loan_id"),
        _str("agency"),
        sa.Column("amount", MONEY, nullable=False),
        _str("currency"),
        sa.Column("placed_at", UTC, nullable=False),
        sa.Column("recall_at", UTC, nullable=False),
        sa.Column("recalled_at", UTC, nullable=True),
        _str("recall_reason"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("placement_id"),
    )
    _indexes("placements", "loan_id")


def create_cases() -> None:
    op.create_table(
        "cases",
        _id(),
        _str("case_id"),
        _str("loan_id"),
        sa.Column("amount", MONEY, nullable=False),
        _str("currency"),
        sa.Column("document", sa.Text(), nullable=False),
        _str("status"),
        sa.Column("filed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("case_id"),
    )
    _indexes("cases", "loan_id")


def create_audit() -> None:
    op.create_table(
        "audit",
        _id(),
        _str("key"),
        _str("loan_id"),
        sa.Column("at", UTC, nullable=False),
        _str("actor"),
        _str("action"),
        _str("stage"),
        _str("rule_id"),
        _str("evidence_ref"),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        _str("prev_hash"),
        _str("hash"),
        sa.Column("recorded_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
        sa.UniqueConstraint("loan_id", "seq", name="uq_audit_loan_seq"),
    )
    _indexes("audit", "loan_id")


def create_contacts() -> None:
    op.create_table(
        "contacts",
        _id(),
        _str("key"),
        _str("borrower_id"),
        _str("loan_id"),
        _str("channel"),
        _str("purpose"),
        sa.Column("at", UTC, nullable=False),
        sa.Column("connected", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("key"),
    )
    _indexes("contacts", "at", "borrower_id", "loan_id")


def create_person_locks() -> None:
    op.create_table(
        "person_locks",
        _str("borrower_id"),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("borrower_id"),
    )


TABLES: dict[str, Callable[[], None]] = {  # in dependency order (loans refers to borrowers)
    "borrowers": create_borrowers,
    "loans": create_loans,
    "ledger": create_ledger,
    "outbox": create_outbox,
    "tasks": create_tasks,
    "placements": create_placements,
    "cases": create_cases,
    "audit": create_audit,
    "contacts": create_contacts,
    "person_locks": create_person_locks,
}


def upgrade() -> None:
    # Offline (`alembic upgrade head --sql`) there is no database to look at: the SQL is for an empty one.
    existing = set() if context.is_offline_mode() else set(sa.inspect(op.get_bind()).get_table_names())
    for name, create in TABLES.items():
        if name not in existing:
            create()
    if "audit" in existing:
        chain_legacy_audit()


def downgrade() -> None:
    for name in reversed(TABLES):
        op.drop_table(name)


# --- an audit table from before the hash chain ----------------------------------------------

CHAIN_COLUMNS = ("rule_id", "evidence_ref", "seq", "prev_hash", "hash")
CHAIN_CONSTRAINT = "uq_audit_loan_seq"


def chain_legacy_audit() -> None:
    """Add the chain columns to a pre-chain audit table and chain its entries per loan, in the
    order they were written (id order), then add the unique (loan_id, seq) constraint. A table
    that has the columns is left alone, except that a unique INDEX uq_audit_loan_seq (what the
    pre-migration upgrade step made) becomes the constraint the table classes declare."""
    bind = op.get_bind()
    present = {c["name"] for c in sa.inspect(bind).get_columns("audit")}
    missing = [name for name in CHAIN_COLUMNS if name not in present]
    for name in missing:
        op.add_column(
            "audit",
            sa.Column(
                name,
                sa.Integer() if name == "seq" else sa.String(),
                nullable=False,
                server_default="0" if name == "seq" else "",
            ),
        )
    if missing:
        chain_entries(bind)
    ensure_chain_constraint(bind, defaults_to_drop=missing)


def chain_entries(bind: sa.Connection) -> None:
    from db.types import UtcDateTime  # reads `at` back exactly as the application does
    from models.audit import GENESIS, entry_hash  # the chain's definition (models/audit.py)

    audit = sa.table(
        "audit",
        sa.column("id", sa.Integer()),
        sa.column("key", sa.String()),
        sa.column("loan_id", sa.String()),
        sa.column("at", UtcDateTime()),
        sa.column("actor", sa.String()),
        sa.column("action", sa.String()),
        sa.column("stage", sa.String()),
        sa.column("rule_id", sa.String()),
        sa.column("evidence_ref", sa.String()),
        sa.column("detail", sa.Text()),
        sa.column("seq", sa.Integer()),
        sa.column("prev_hash", sa.String()),
        sa.column("hash", sa.String()),
    )
    heads: dict[str, tuple[int, str]] = {}
    for entry in bind.execute(sa.select(audit).order_by(audit.c.loan_id, audit.c.id)).mappings().all():
        seq, prev_hash = heads.get(entry["loan_id"], (0, GENESIS))
        digest = entry_hash(prev_hash, {**entry, "seq": seq + 1})
        bind.execute(
            audit.update().where(audit.c.id == entry["id"]).values(seq=seq + 1, prev_hash=prev_hash, hash=digest)
        )
        heads[entry["loan_id"]] = (seq + 1, digest)


def ensure_chain_constraint(bind: sa.Connection, defaults_to_drop: Sequence[str]) -> None:
    inspector = sa.inspect(bind)
    if CHAIN_CONSTRAINT in {c["name"] for c in inspector.get_unique_constraints("audit")}:
        return
    has_index = CHAIN_CONSTRAINT in {i["name"] for i in inspector.get_indexes("audit")}
    if bind.dialect.name == "sqlite":  # no ALTER TABLE ... ADD CONSTRAINT: the table is rebuilt
        if has_index:
            op.drop_index(CHAIN_CONSTRAINT, table_name="audit")
        with op.batch_alter_table("audit", recreate="always") as batch:
            for name in defaults_to_drop:  # the defaults only filled the existing rows
                batch.alter_column(name, server_default=None)
            batch.create_unique_constraint(CHAIN_CONSTRAINT, ["loan_id", "seq"])
        return
    for name in defaults_to_drop:
        op.alter_column("audit", name, server_default=None)
    if has_index and bind.dialect.name == "postgresql":
        op.execute(f"ALTER TABLE audit ADD CONSTRAINT {CHAIN_CONSTRAINT} UNIQUE USING INDEX {CHAIN_CONSTRAINT}")
    else:
        if has_index:
            op.drop_index(CHAIN_CONSTRAINT, table_name="audit")
        op.create_unique_constraint(CHAIN_CONSTRAINT, "audit", ["loan_id", "seq"])
