from __future__ import annotations

from alembic import context
from sqlalchemy import text

from openmaac.db.engine import get_database
from openmaac.models import metadata

MIGRATION_LOCK_ID = 7_362_001  # arbitrary constant for pg_advisory_lock


def run_migrations_online() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    database = get_database(url)
    with database.write_engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:id)"), {"id": MIGRATION_LOCK_ID})
            connection.commit()
        try:
            context.configure(
                connection=connection,
                target_metadata=metadata,
                render_as_batch=connection.dialect.name == "sqlite",
                compare_type=True,
            )
            with context.begin_transaction():
                context.run_migrations()
            connection.commit()
        finally:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:id)"), {"id": MIGRATION_LOCK_ID})
                connection.commit()


run_migrations_online()
