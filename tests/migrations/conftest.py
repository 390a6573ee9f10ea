"""A database of its own for each migration test: a SQLite file, or a new PostgreSQL database
when OPENMAAC_TEST_DATABASE_URL names a server."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from openmaac.db.engine import reset_database


@pytest.fixture
def database_url(tmp_path: Path) -> Iterator[str]:
    admin = os.environ.get("OPENMAAC_TEST_DATABASE_URL")
    if not admin:
        yield f"sqlite:///{tmp_path / 'openmaac.sqlite3'}"
        return
    import psycopg

    admin = admin.replace("postgresql+psycopg://", "postgresql://")
    name = f"openmaac_mig_{secrets.token_hex(4)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + "/" + name
    finally:
        reset_database()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
