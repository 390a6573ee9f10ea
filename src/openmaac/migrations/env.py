from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import Connection, text

from openmaac.db.engine import get_database
from openmaac.models import metadata

MIGRATION_LOCK_ID = 7_362_001  # arbitrary constant for pg_advisory_lock


def _driver(connection: Connection) -> Any:
    """The DBAPI connection itself: pragmas sent through it run outside SQLAlchemy's transaction."""
    return connection.connection.driver_connection


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    database = get_database(url)
    with database.write_engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        if sqlite:
            # Batch mode rebuilds a table (copy, DROP, rename) for changes SQLite's ALTER cannot
            # make; with foreign keys on, that DROP deletes every row pointing at the table
            # through ON DELETE CASCADE. Off for the migration (outside any transaction, where
            # SQLite honours the pragma), checked after, back on before the pool reuses it.
            _driver(connection).execute("PRAGMA foreign_keys=OFF")
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"migration left rows with dangling foreign keys: {broken[:5]}")
            connection.commit()
        finally:
            if sqlite:
                connection.rollback()
                _driver(connection).execute("PRAGMA foreign_keys=ON")
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()


run_migrations_online()
