"""A database of its own for each migration test: a SQLite file, or a new PostgreSQL database
when OPENMAAC_TEST_DATABASE_URL names a server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import own_postgres_database
from openmaac.db.engine import reset_database


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    with own_postgres_database("mig") as url:
        if url is None:
            yield f"sqlite:///{tmp_path / 'openmaac.sqlite3'}"
            return
        try:
            yield url.replace("postgresql://", "postgresql+psycopg://")
        finally:
            reset_database()
