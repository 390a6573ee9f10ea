"""``POST /line/webhook/{channel_id}``: where LINE (or the simulator) delivers events."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Header, Request
from starlette.concurrency import run_in_threadpool

from openmaac.channels.service import channel_by_channel_id
from openmaac.channels.signature import verify_line_signature
from openmaac.db.engine import get_database
from openmaac.line_inbound.service import handle_events
from openmaac.web.errors import APIError, not_found
from openmaac.web.responses import OrjsonResponse

router = APIRouter(tags=["LINE webhook"])


@router.post(
    "/line/webhook/{channel_id}",
    summary="Receive LINE webhook events",
    description=(
        "Set this URL as the channel's webhook URL in the LINE Developers console. The body is "
        "verified with `X-Line-Signature` (base64 HMAC-SHA256 of the raw body with the channel "
        "secret); a bad signature answers 401 and nothing is stored."
    ),
    responses={401: {"description": "Bad or missing signature"}, 404: {"description": "Unknown channel"}},
)
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
    with database.read() as session:
        channel = channel_by_channel_id(session, channel_id)
    if channel is None:
        raise not_found()
    if not verify_line_signature(channel.channel_secret, body, signature):
        raise APIError(401, {"detail": "Invalid signature."})
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(400, {"detail": f"JSON parse error - {exc}"}) from exc
    events = payload.get("events") if isinstance(payload, dict) else None
    if not isinstance(events, list):
        raise APIError(400, {"events": ["This field is required."]})
    with database.write() as session:
        return handle_events(session, channel, events)
