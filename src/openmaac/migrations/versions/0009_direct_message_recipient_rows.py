"""direct_messages.recipient_rows: False for an enhanced multicast whose recipients are listed
by its LINE call rows only (no per-recipient row; see messaging/sending.py). Existing messages
keep their rows (True).

Revision ID: 0009
Revises: 0007
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ALTER TABLE ... ADD COLUMN in place, not batch mode: on SQLite a batch rebuild drops the
    # old direct_messages table, which with foreign keys on deletes every child row (sends,
    # recipients, tracked links) through their ON DELETE CASCADE
    op.add_column("direct_messages", sa.Column("recipient_rows", sa.Boolean(), nullable=False,
                                               server_default=sa.true()))


def downgrade() -> None:
    # Messages without recipient rows get them back from their LINE call rows first, so the
    # former code (which reads only recipient rows) still reports them.
    bind = op.get_bind()
    import json

    sends = sa.table("direct_message_sends", sa.column("direct_message_id", sa.BigInteger),
                     sa.column("organization_id", sa.BigInteger), sa.column("to", sa.JSON),
                     sa.column("recipient_ids", sa.JSON), sa.column("status", sa.String),
                     sa.column("outcome", sa.String), sa.column("status_code", sa.Integer),
                     sa.column("response_body", sa.JSON), sa.column("completed_at", sa.DateTime))
    messages = sa.table("direct_messages", sa.column("id", sa.BigInteger), sa.column("recipient_rows", sa.Boolean))
    recipients = sa.table("direct_message_recipients", sa.column("direct_message_id", sa.BigInteger),
                          sa.column("organization_id", sa.BigInteger), sa.column("mark", sa.Integer),
                          sa.column("line_uid", sa.String), sa.column("contact_id", sa.BigInteger),
                          sa.column("status", sa.String), sa.column("response", sa.Text),
                          sa.column("sent_at", sa.DateTime))
    ids = [row[0] for row in bind.execute(sa.select(messages.c.id).where(messages.c.recipient_rows.is_(False)))]
    for dm_id in ids:
        rows = bind.execute(sa.select(sends.c.organization_id, sends.c.to, sends.c.recipient_ids, sends.c.outcome,
                                      sends.c.status_code, sends.c.response_body, sends.c.completed_at)
                            .where(sends.c.direct_message_id == dm_id, sends.c.status == "done",
                                   sends.c.outcome != "split")).all()
        values = []
        for org_id, to, refs, outcome, code, body, at in rows:
            to = json.loads(to) if isinstance(to, str) else to
            refs = json.loads(refs) if isinstance(refs, str) else refs
            ok = outcome == "success"
            if ok:
                response = None
            elif outcome == "timeout":
                response = "timeout"
            elif isinstance(body, dict):
                response = json.dumps(body)
            else:
                response = f"{code}" if code else "error"
            for uid, ref in zip(to, refs, strict=True):
                values.append({"direct_message_id": dm_id, "organization_id": org_id, "mark": ref[0],
                               "line_uid": uid, "contact_id": ref[1], "status": "sent" if ok else "failed",
                               "response": response, "sent_at": at if ok else None})
        if values:
            bind.execute(recipients.insert(), values)
    # in place as well (SQLite >= 3.35 drops a column without rebuilding the table)
    op.drop_column("direct_messages", "recipient_rows")
