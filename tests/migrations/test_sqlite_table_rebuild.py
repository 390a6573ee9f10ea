"""A migration that rebuilds a table on SQLite (Alembic batch mode: copy, DROP, rename) must
not delete the rows that point at it: with foreign keys on, the DROP cascades (env.py turns
them off for the migration and checks them after)."""

from __future__ import annotations

import shutil
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from openmaac import migrations
from openmaac.db.engine import reset_database

REBUILD = '''"""test only: rebuild organizations (a table every organisation-owned row points at)"""
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("organizations", recreate="always") as batch_op:
        batch_op.alter_column("name", comment="rebuilt")


def downgrade() -> None:
    pass
'''


def test_rebuilding_a_parent_table_keeps_its_children(tmp_path: Path) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(Path(migrations.__file__).parent, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    url = f"sqlite:///{tmp_path / 'openmaac.sqlite3'}"
    config = migrations.alembic_config(url)
    config.set_main_option("script_location", str(scripts))
    command.upgrade(config, "head")
    head = ScriptDirectory.from_config(config).get_current_head()
    (scripts / "versions" / "9999_rebuild_organizations.py").write_text(REBUILD.format(head=head))

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
        conn.exec_driver_sql("INSERT INTO organizations (id, name, timezone, region, created_at) "
                             "VALUES (1, 'acme', 'Asia/Taipei', 'tw', '2026-12-01 00:00:00')")
        conn.exec_driver_sql("INSERT INTO contacts (organization_id, line_uid, status, created_at, updated_at) "
                             "VALUES (1, 'U1', 'follow', '2026-12-01 00:00:00', '2026-12-01 00:00:00')")
    engine.dispose()
    reset_database()

    command.upgrade(config, "head")  # runs 9999: organizations rebuilt

    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM organizations").scalar() == 1
        assert conn.exec_driver_sql("SELECT line_uid FROM contacts").scalars().all() == ["U1"]
        # and the pooled connections have their foreign keys back on afterwards
    engine.dispose()
    from openmaac.db.engine import get_database

    with get_database(url).write_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    reset_database()
