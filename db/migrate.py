"""Schema migrations: the Alembic revisions in `migrations/` take any database (empty, from an
older version of the project, or at an older revision) to the schema of the table classes.

The worker calls `upgrade` at start, before it opens its engine; `alembic upgrade head` does
the same by hand. Both run the whole upgrade in ONE transaction that first takes a lock, so
several workers starting together migrate once and the others wait, then find the database
at head and do nothing:

- PostgreSQL: a transaction-scoped advisory lock (`pg_advisory_xact_lock(MIGRATION_LOCK)`);
  DDL is transactional, so a failed upgrade leaves nothing half done.
- SQLite: `BEGIN IMMEDIATE`, the database's write lock (SQLite's DDL is transactional too).
- Other databases: no lock; start one worker first.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, create_engine, event, text
from sqlalchemy.pool import NullPool
from sqlmodel import SQLModel

ROOT = Path(__file__).resolve().parent.parent
ALEMBIC_INI = ROOT / "alembic.ini"
MIGRATIONS = ROOT / "migrations"

MIGRATION_LOCK = 0x6C6F616E5F6D6967  # PostgreSQL advisory lock key of this project's migrations
"""Any fixed 64-bit number works; only processes migrating this schema take it."""


def target_metadata() -> MetaData:
    """Every table the application defines. A module that adds tables must be imported here,
    or autogenerate will not see them (tests/db/test_migrations.py compares against the metadata
    of everything the tests import, so a forgotten migration still fails there)."""
    import db.access
    import db.book
    import db.contacts
    import db.desk_marks
    import db.desk_users
    import db.experiments
    import db.tables
    import db.webhooks  # noqa: F401

    return SQLModel.metadata


def alembic_config(connection: Connection | None = None) -> Config:
    """The project's Alembic configuration; with `connection`, env.py migrates through it
    (inside the caller's transaction) instead of opening its own."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.set_main_option("script_location", str(MIGRATIONS))
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


@functools.cache
def head() -> str:
    """The newest revision (cached: reading the scripts costs more than checking a database)."""
    found = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if found is None:
        raise RuntimeError(f"no migrations in {MIGRATIONS}")
    return found


def current(connection: Connection) -> str | None:
    """The revision the database is at (None: never migrated, perhaps empty, perhaps written
    by a version of the project from before migrations)."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(url: str) -> bool:
    """Bring the database at `url` to head; True if anything was migrated. Idempotent and safe
    for concurrent callers (see the module doc)."""
    engine = migration_engine(url)
    try:
        with locked(engine) as conn:
            if current(conn) == head():
                return False
            command.upgrade(alembic_config(conn), "head")
            return True
    finally:
        engine.dispose()


def migration_engine(url: str) -> Engine:
    """An engine for migrating (no pool: it is used once). SQLite: the driver's own transaction
    handling is switched off and every transaction starts with BEGIN IMMEDIATE, so the DDL runs
    inside it and the write lock is held from the first statement."""
    if not url.startswith("sqlite"):
        return create_engine(url, poolclass=NullPool)
    path = url.removeprefix("sqlite:///")
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": 60})
    event.listen(engine, "connect", _driver_autocommit)
    event.listen(engine, "begin", _begin_immediate)
    return engine


@contextmanager
def locked(engine: Engine) -> Iterator[Connection]:
    """A connection inside a transaction that holds the migration lock; committed on leaving,
    rolled back on an error."""
    with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _driver_autocommit(dbapi_conn: Any, _record: Any) -> None:
    dbapi_conn.isolation_level = None


def _begin_immediate(conn: Connection) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE")
