"""Moving webhook time forward in tests without faking the clock.

Retries wait minutes to days and an endpoint is deactivated after days of failures. Tests
do not wait, and do not patch time either (the server runs in the same process, on real
clocks): they move the stored times instead, the way the jobs tests move a job's ``run_at``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update


def make_retries_due(database: Any, webhook_id: int) -> int:
    """Every delivery of the endpoint waiting for a retry is due now, and its dispatcher is
    woken: as if the waits had passed. Deliveries being sent are left alone. Returns how many."""
    from openmaac.db.base import utcnow
    from openmaac.webhooks.models import WebhookDelivery, WebhookEndpoint
    from openmaac.webhooks.service import kick

    with database.write() as session:
        # Share-lock the endpoint as emit() does, so a dispatcher deciding to sleep until the
        # old due time (it locks the endpoint) either sees these rows due or finds our job.
        endpoint = select(WebhookEndpoint.organization_id).where(WebhookEndpoint.id == webhook_id)
        if session.get_bind().dialect.name == "postgresql":
            endpoint = endpoint.with_for_update(read=True)
        organization_id = session.scalar(endpoint)
        now = utcnow()
        result = session.execute(
            update(WebhookDelivery).where(
                WebhookDelivery.endpoint_id == webhook_id, WebhookDelivery.status.in_(("pending", "waiting")),
                WebhookDelivery.next_attempt_at > now,
                or_(WebhookDelivery.locked_until.is_(None), WebhookDelivery.locked_until <= now),
            ).values(next_attempt_at=now).execution_options(synchronize_session=False)
        )
        if organization_id is not None:
            kick(session, webhook_id, int(organization_id))
        return int(result.rowcount or 0)


def backdate_failures(database: Any, webhook_id: int, by: timedelta) -> None:
    """The endpoint has been failing ``by`` longer than it has (from now if it was healthy)."""
    from openmaac.db.base import utcnow
    from openmaac.webhooks.models import WebhookEndpoint

    with database.write() as session:
        endpoint = session.get(WebhookEndpoint, webhook_id)
        endpoint.failing_since = (endpoint.failing_since or utcnow()) - by
