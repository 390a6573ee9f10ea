"""``POST /line/webhook/{channel_id}``: where LINE (or the simulator) delivers events."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Header, Request
from sqlalchemy import bindparam, select
from starlette.concurrency import run_in_threadpool

from openmaac.channels.models import LineChannel
from openmaac.channels.signature import verify_line_signature
from openmaac.db.driver import DriverStatement
from openmaac.db.engine import get_database
from openmaac.db.group_commit import REQUEST_WRITES, group_commit
from openmaac.line_inbound.events import accept_events
from openmaac.line_inbound.service import handle_delivery_requests, handle_events
from openmaac.web.errors import APIError, not_found
from openmaac.web.input import LaneRoute, plain_lane
from openmaac.web.responses import OrjsonResponse

router = APIRouter(tags=["LINE webhook"], route_class=LaneRoute)
CHANNEL_ID_MAX_LENGTH = 64  # the column's width; LINE's channel ids are 10 digits
# what a delivery needs of its channel: one prebuilt Core read (every webhook request makes it)
# (on the driver's cursor: db/driver.py)
_CHANNEL = DriverStatement(select(LineChannel.__table__.c.organization_id, LineChannel.__table__.c.channel_secret)
                           .where(LineChannel.__table__.c.channel_id == bindparam("channel_id")).limit(1))


@router.post(
    "/line/webhook/{channel_id}",
    summary="Receive LINE webhook events",
    description=(
        "Set this URL as the channel's webhook URL in the LINE Developers console. The body is "
        "verified with `X-Line-Signature` (base64 HMAC-SHA256 of the raw body with the channel "
        "secret); a bad or malformed signature answers 401 and nothing is stored. Each event is checked "
        "on its own against the shapes LINE documents: one that does not fit is skipped (and logged), "
        "the others are stored, and the answer is still 200 so that LINE does not redeliver them."
    ),
    responses={401: {"description": "Bad or missing signature"}, 404: {"description": "Unknown channel"}},
)
@plain_lane
async def line_webhook(
    channel_id: str,
    request: Request,
    x_line_signature: str | None = Header(default=None),
) -> Any:
    body = await request.body()
    await run_in_threadpool(receive, channel_id, body, x_line_signature)
    return OrjsonResponse({})


def receive(channel_id: str, body: bytes, signature: str | None) -> int:
    database = get_database()
    if len(channel_id) > CHANNEL_ID_MAX_LENGTH or not channel_id.isprintable():
        raise not_found()  # no channel has such an id (and PostgreSQL refuses a NUL in a query)
    with database.lookup() as conn:
        channel = _CHANNEL.execute(conn, {"channel_id": channel_id}).first()
    if channel is None:
        raise not_found()
    organization_id, channel_secret = channel
    if not verify_line_signature(channel_secret, body, signature):
        raise APIError(401, {"detail": "Invalid signature."})
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, {"detail": f"JSON parse error - {exc}"}) from exc
    events = payload.get("events") if isinstance(payload, dict) else None
    if events is None:
        raise APIError(400, {"events": ["This field is required."]})
    if not isinstance(events, list):
        raise APIError(400, {"events": [f'Expected a list of items but got type "{type(events).__name__}".']})
    accepted = accept_events(events)
    if not accepted:
        return 0
    if all(item.event.type == "delivery" for item in accepted):
        # LINE's PNP delivery reports (SMS+; LINE sends several requests at once under load):
        # written together with the other such requests of the moment, one transaction per
        # batch (db/group_commit.py) and one set of statements for all of them, each request
        # answered after its own write is committed
        return group_commit(database, REQUEST_WRITES).run_batched(handle_delivery_requests,
                                                                  (int(organization_id), accepted))
    with database.write() as session:
        return handle_events(session, int(organization_id), accepted)
