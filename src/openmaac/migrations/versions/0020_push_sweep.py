"""direct_message_sends: a partial index of the pushes in flight, for the push sweep.

A push used to write a recovery job of its own before calling LINE, and delete it when LINE's
answer was recorded: an insert and a delete in ``jobs`` (with its three indexes) per push. The
pushes accepted within five seconds now share one sweep job, which queues the send job of each
push whose call is still pending after its lease (its caller died). The sweep finds them in
this index, which holds only the pending push calls.

Recovery jobs written by an older version before the upgrade still run as before.

Revision ID: 0020
Revises: 0019
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0020"
down_revision = "0019"
branch_labels = None
depends_on = None

_PENDING_PUSHES = "status = 'pending' AND method = 'push'"


def upgrade() -> None:
    op.create_index("ix_direct_message_sends_pending_pushes", "direct_message_sends", ["locked_until"],
                    postgresql_where=sa.text(_PENDING_PUSHES), sqlite_where=sa.text(_PENDING_PUSHES))


def downgrade() -> None:
    op.drop_index("ix_direct_message_sends_pending_pushes", table_name="direct_message_sends")
