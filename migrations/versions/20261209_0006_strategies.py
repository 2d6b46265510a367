"""Screening and champion/challenger experiments: the `experiments` table (definition, status,
winners; `active` unique while running or paused, so at most one experiment is active) and the
screening on each loan row (`segment`, `score`, `experiment`, `arm`; NULL for loans started
before screening).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = sa.DateTime(timezone=True)  # db.types.UtcDateTime


def upgrade() -> None:
    op.create_table(
        "experiments",
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("definition", sa.Text(), nullable=False),
        sa.Column("segmentation", sa.String(), nullable=False),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("winners", sa.Text(), nullable=False),
        sa.Column("active", sa.String(), nullable=True),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("paused_at", UTC, nullable=True),
        sa.Column("ended_at", UTC, nullable=True),
        sa.Column("updated_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("active"),
    )
    with op.batch_alter_table("loans") as batch:  # SQLite cannot alter a table in place
        batch.add_column(sa.Column("segment", sa.String(), nullable=True))
        batch.add_column(sa.Column("score", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("experiment", sa.String(), nullable=True))
        batch.add_column(sa.Column("arm", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("loans") as batch:
        batch.drop_column("arm")
        batch.drop_column("experiment")
        batch.drop_column("score")
        batch.drop_column("segment")
    op.drop_table("experiments")
