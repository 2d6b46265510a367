"""Alembic environment: the project's tables (`db.migrate.target_metadata`) and its database.

Called by `db.migrate.upgrade` (the worker at start) with a connection that already holds the
migration lock, or by the `alembic` command, which migrates the DATABASE_URL setting (infra/settings.py,
so `.env` applies too) unless `-x url=...` names another database. Either way the whole run is
one transaction holding the lock (see db/migrate.py).
"""

from __future__ import annotations

from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection
from sqlmodel.sql.sqltypes import AutoString

from db.migrate import locked, migration_engine, target_metadata
from db.types import Money, UtcDateTime


def render_item(kind: str, obj: object, _autogen: AutogenContext) -> str | Literal[False]:
    """Write the project's column types in new revisions as plain SQLAlchemy types, so a
    revision keeps meaning what it meant when it was written even if db/types.py changes."""
    if kind == "type":
        if isinstance(obj, Money):
            return 'sa.Numeric(20, 6).with_variant(sa.String(40), "sqlite")'
        if isinstance(obj, UtcDateTime):
            return "sa.DateTime(timezone=True)"
        if isinstance(obj, AutoString):
            return "sa.String()"
    return False


def run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        render_item=render_item,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite's ALTER TABLE is limited
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def database_url() -> str:
    given = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option("sqlalchemy.url")
    if given:
        return given
    from infra.settings import settings  # the project's settings: DATABASE_URL from the environment or .env

    return settings().database_url


if context.is_offline_mode():
    context.configure(
        url=database_url(), target_metadata=target_metadata(), render_item=render_item, literal_binds=True
    )
    with context.begin_transaction():
        context.run_migrations()
elif (shared := context.config.attributes.get("connection")) is not None:
    run(shared)
else:
    engine = migration_engine(database_url())
    try:
        with locked(engine) as conn:
            run(conn)
    finally:
        engine.dispose()
