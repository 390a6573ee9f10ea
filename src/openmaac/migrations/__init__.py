"""Alembic migrations, applied by ``openmaac migrate`` and at the start of serve/worker."""

from __future__ import annotations

import fcntl
from pathlib import Path
from typing import TYPE_CHECKING

from openmaac.config import get_settings

if TYPE_CHECKING:
    from alembic.config import Config

    from openmaac.db.engine import Database

HERE = Path(__file__).resolve().parent


def alembic_config(url: str) -> Config:
    from alembic.config import Config  # alembic is imported when migrating, not by every CLI start

    config = Config()
    config.set_main_option("script_location", str(HERE))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str | None = None) -> None:
    """Bring the database to the newest schema. Safe when several processes start at once."""
    from alembic import command

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


def migrated_database(data_dir: Path | None = None) -> Database:
    """The configured database (``data_dir`` overriding ``OPENMAAC_DATA_DIR``) at the newest
    schema: what a CLI command works on."""
    import os

    from openmaac.config import reset_settings_cache
    from openmaac.db.engine import get_database

    if data_dir is not None:
        os.environ["OPENMAAC_DATA_DIR"] = str(data_dir)
        reset_settings_cache()
    settings = get_settings()
    upgrade(settings.database_url)
    return get_database(settings.database_url)
