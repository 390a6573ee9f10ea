"""Alembic migrations, applied by ``openmaac migrate`` and at the start of serve/worker."""

from __future__ import annotations

import fcntl
from pathlib import Path

from alembic import command
from alembic.config import Config

from openmaac.config import get_settings

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None) -> None:
    """Bring the database to the newest schema. Safe when several processes start at once."""
    settings = get_settings()
    url = url or settings.database_url
    if url.startswith("sqlite"):
        # One SQLite file, one machine: a file lock beside the data serialises migrators.
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        lock_path = Path(url.split("///", 1)[-1] + ".migrate.lock")
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with open(lock_path, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            command.upgrade(alembic_config(url), "head")
    else:
        # env.py takes a PostgreSQL advisory lock around the migration.
        command.upgrade(alembic_config(url), "head")
