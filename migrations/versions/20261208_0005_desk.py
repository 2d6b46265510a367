"""The collectors' desk: the people who sign in (`desk_users`: password hash, role, queues,
language, lock-out state) and what the desk last read of each loan (`desk_loan_marks`: balance,
next arrangement date, situation) to order the work queue in one query.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)  # db.types.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "desk_users",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("password_hash", sa.String(), nullable=False),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("queues", sa.String(), nullable=False),
        sa.Column("language", sa.String(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("locked_until", UTC, nullable=True),
        sa.Column("session_epoch", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("last_sign_in", UTC, nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.create_table(
        "desk_loan_marks",
        sa.Column("loan_id", sa.String(), nullable=False),
        sa.Column("outstanding", sa.Numeric(20, 6).with_variant(sa.String(40), "sqlite"), nullable=False),
        sa.Column("currency", sa.String(), nullable=False),
        sa.Column("next_due", sa.Date(), nullable=True),
        sa.Column("stopped", sa.Boolean(), nullable=False),
        sa.Column("held", sa.Boolean(), nullable=False),
        sa.Column("paused", sa.Boolean(), nullable=False),
        sa.Column("opted_out", sa.String(), nullable=False),
        sa.Column("refreshed_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("loan_id"),
    )
    op.create_index(op.f("ix_desk_loan_marks_next_due"), "desk_loan_marks", ["next_due"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_desk_loan_marks_next_due"), table_name="desk_loan_marks")
    op.drop_table("desk_loan_marks")
    op.drop_table("desk_users")
