"""LINE notification messages (PNP): ``POST /bot/pnp/push`` and the ``delivery`` webhook.

The LINE notification messages reference: the recipient is a phone number, in ``to`` as the lowercase SHA-256 hex of its
E.164 form (``sha256("+886912345678")``; the simulator also takes the E.164 number itself,
with or without "+").  ``X-Line-Delivery-Tag`` (16..100 characters) is optional and comes
back as ``delivery.data`` of the ``delivery`` webhook (the hashed number when no tag was sent).
There is no retry key on PNP (sending one is a 400).

- the number belongs to no simulated user (users get an optional ``phone``), or a
  ``pnp_unreachable`` fault: 422, no webhook;
- the user blocked the account: 200, nothing delivered, no webhook (PNP's silent failure);
- otherwise 200 ``{}``, the message lands in the user's inbox (endpoint "pnp") and a signed
  ``delivery`` webhook goes to the channel's webhook URL after ``pnp_delivery_delay`` seconds.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from openmaac.simulators.line import faults, webhooks
from openmaac.simulators.line.common import LineError, authenticated_channel, channel_or_404, state_of
from openmaac.simulators.line.messaging import (
    RETRY_KEY_UNSUPPORTED,
    after,
    before,
    deliver,
    log,
    read_json,
    request_id_of,
    validate_body,
)
from openmaac.simulators.line.state import Channel, SimulatorState, User

CANNOT_SEND = "Failed to send messages. The phone number is not a LINE user or cannot receive LINE notification messages."
DELIVERY_TAG_INVALID = "The X-Line-Delivery-Tag header must be between 16 and 100 characters"
HASH = re.compile(r"^[0-9a-f]{64}$")
E164 = re.compile(r"^\+?[1-9][0-9]{6,14}$")

router = APIRouter()
_pending: set[asyncio.Task[Any]] = set()


def hashed(phone: str) -> str:
    """sha256 of the E.164 number ("+" and digits), lowercase hex, as PNP's ``to`` is."""
    digits = "".join(ch for ch in phone if ch.isdigit())
    return hashlib.sha256(("+" + digits).encode("ascii")).hexdigest()


_indexes: dict[int, tuple[str | None, int, dict[str, str]]] = {}  # id(state) -> (last user seen, count, index)


def _phone_index(sim: SimulatorState) -> dict[str, str]:
    """Hashed phone -> user id, extended as users are added (a user's phone is set when it is
    created and users are only added, or all cleared by a reset: then the index starts over).
    Call with ``sim.lock`` held."""
    last, seen, index = _indexes.get(id(sim), (None, 0, {}))
    if seen > len(sim.users) or (last is not None and last not in sim.users):
        last, seen, index = None, 0, {}
    if seen < len(sim.users):
        for user in list(sim.users.values())[seen:]:
            if user.phone:
                index.setdefault(hashed(user.phone), user.user_id)
            last = user.user_id
        seen = len(sim.users)
    _indexes[id(sim)] = (last, seen, index)
    return index


def user_by_phone(sim: SimulatorState, to: str) -> User | None:
    if HASH.match(to):
        wanted = to
    elif E164.match(to):
        wanted = hashed(to)
    else:
        return None
    user_id = _phone_index(sim).get(wanted)
    return sim.users.get(user_id) if user_id else None


class PnpUsersIn(BaseModel):
    phones: list[str] = Field(max_length=1_000_000)
    channel_id: str | None = Field(default=None, description="make them all friends of this channel")


@router.post("/_admin/pnp/users", status_code=201, tags=["simulator admin"])
def create_pnp_users(body: PnpUsersIn, request: Request) -> Any:
    """Users with these phone numbers (E.164), friends of ``channel_id`` when given, WITHOUT
    follow webhooks: for volume (PNP to many numbers). Answers their ids in order."""
    sim = state_of(request)
    channel = channel_or_404(sim, body.channel_id) if body.channel_id else None
    with sim.lock:
        ids = []
        for phone in body.phones:
            user = sim.add_user(None, phone=phone)
            ids.append(user.user_id)
            if channel is not None:
                channel.friendships[user.user_id] = "follow"
    return {"user_ids": ids}


DELIVERY_BATCH = 100  # delivery events in one webhook request at most
DELIVERY_SENDERS = 4  # webhook requests in flight per channel at most


class _DeliveryQueue:
    """A channel's delivery events that came due, sent as LINE sends webhooks: one request
    carries every event waiting at that moment (LINE batches events in ``events``), so a quiet
    channel gets one event per request at once and a busy one gets fewer, fuller requests."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel  # the latest state of the channel (a reset replaces it)
        self.events: list[tuple[str, dict[str, Any]]] = []
        self.senders = 0


_queues: dict[tuple[int, str], _DeliveryQueue] = {}


def _due(sim: SimulatorState, channel: Channel, user_id: str, data: str) -> None:
    queue = _queues.setdefault((id(sim), channel.channel_id), _DeliveryQueue(channel))
    queue.channel = channel
    queue.events.append((data, webhooks.delivery_event(user_id, data)))
    if queue.senders < DELIVERY_SENDERS:
        queue.senders += 1
        task = asyncio.get_running_loop().create_task(_send_due(sim, queue))
        _pending.add(task)
        task.add_done_callback(_pending.discard)


async def _send_due(sim: SimulatorState, queue: _DeliveryQueue) -> None:
    try:
        while queue.events:
            batch, queue.events = queue.events[:DELIVERY_BATCH], queue.events[DELIVERY_BATCH:]
            channel = queue.channel
            outcome = await webhooks.send(channel, [event for _data, event in batch])
            with sim.lock:
                for data, event in batch:
                    sim.webhook_log.append({"channel_id": channel.channel_id, "type": "delivery",
                                            "webhookEventId": event["webhookEventId"], "data": data, **outcome})
    finally:
        queue.senders -= 1


def _schedule_delivery(sim: SimulatorState, channel: Channel, user_id: str, data: str, delay: float) -> None:
    asyncio.get_running_loop().call_later(delay, _due, sim, channel, user_id, data)


@router.post("/bot/pnp/push")
async def pnp_push(request: Request, channel: Channel = Depends(authenticated_channel)) -> Any:
    sim = state_of(request)
    rid = request_id_of(request)
    tag = request.headers.get("x-line-delivery-tag")
    accepted = delivered = False
    try:
        if request.headers.get("x-line-retry-key") is not None:
            raise LineError(400, RETRY_KEY_UNSUPPORTED)
        if tag is not None and not 16 <= len(tag) <= 100:
            raise LineError(400, DELIVERY_TAG_INVALID)
        fault = await before(sim, channel, "pnp")
        body = await read_json(request)
        validate_body("PnpMessagesRequest", body)
        if fault is not None and fault.kind == "pnp_unreachable":
            raise LineError(422, CANNOT_SEND)
        with sim.lock:
            user = user_by_phone(sim, body["to"])
            if user is None:
                raise LineError(422, CANNOT_SEND)
            delivered = channel.friendships.get(user.user_id) != "blocked"
            if delivered:
                faults.reserve_quota(channel, 1)
                for message in body["messages"]:
                    deliver(sim, channel, user, message, endpoint="pnp", request_id=rid, retry_key=None,
                            delivery_tag=tag)
                delay = channel.pnp_delivery_delay
        accepted = True
        if delivered:
            data = tag if tag is not None else hashed(user.phone or "")
            _schedule_delivery(sim, channel, user.user_id, data, delay)
        if fault is not None and fault.kind != "pnp_unreachable":
            await after(fault)
        log(sim, request, channel, "pnp", 200, recipients=1, delivered=int(delivered), accepted=True,
            delivery_tag=tag)
    except LineError as error:
        log(sim, request, channel, "pnp", error.status_code, recipients=1, message=error.message, delivery_tag=tag,
            accepted=accepted, delivered=int(accepted and delivered))
        raise
    return JSONResponse({})
