"""The simulated Messaging API sends (push, multicast) and what the simulated users received.

LINE's behaviour reproduced (the LINE Messaging API reference):
- bodies validated against LINE's messaging-api.yml (validation.py): 400
  ``The request body has N error(s)`` with ``details``; unparsable JSON 400; not JSON 415;
  over 2 MB 413;
- ``to`` not a user LINE knows (any id the simulator never issued): 400
  ``Failed to send messages`` (multicast: if any of its ids is unknown);
- a user who blocked the account (or never followed it): 200, nothing delivered, not counted;
- ``X-Line-Retry-Key``: must be a UUID (400 otherwise); a key already accepted by the channel in
  the last 24 hours answers 409 ``The retry key is already accepted`` with the header
  ``x-line-accepted-request-id`` (the request id of the accepted call) and, for push, the
  ``sentMessages`` of the accepted call; a request that failed (4xx, 5xx before acceptance)
  does not consume its key;
- every response carries ``x-line-request-id``; rate limits and quota (faults.py).

Every delivered message is kept in the user's inbox (``GET /_admin/users/{id}/messages``);
a user can open it (``POST /_admin/users/{id}/open``: the images are fetched like a LINE
client fetches them) and click a link in it (``POST /_admin/users/{id}/click``).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import secrets
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from openmaac.simulators.line import faults, validation, webhooks
from openmaac.simulators.line.common import LineError, authenticated_channel, channel_or_404, state_of
from openmaac.simulators.line.state import Channel, Fault, SharedDelivery, SimulatorState, User

MAX_BODY = 2 * 1024 * 1024
RETRY_KEY_TTL = 24 * 3600.0
FAILED_TO_SEND = "Failed to send messages"
RETRY_KEY_ACCEPTED = "The retry key is already accepted"
RETRY_KEY_INVALID = "The value of the X-Line-Retry-Key header is invalid. It must be a UUID."
# what a LINE app on a phone sends when it loads an image or follows a link
LINE_CLIENT_UA = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
                  "(KHTML, like Gecko) Mobile/15E148 Safari Line/14.9.0")

router = APIRouter()
admin_router = APIRouter(prefix="/_admin")


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "line_request_id", None)
    if rid is None:
        rid = request.state.line_request_id = str(uuid.uuid4())
    return str(rid)


_ids = random.Random(secrets.randbits(64))


def new_message_id() -> str:
    """A message id like LINE's (18 digits); unique enough for a simulator, and cheap."""
    return str(_ids.randrange(10**17, 10**18))


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ----------------------------------------------------------------------------------------------
# the pipeline every send shares (push, multicast, pnp)
# ----------------------------------------------------------------------------------------------


async def read_json(request: Request) -> Any:
    content_type = request.headers.get("content-type", "")
    if content_type.split(";")[0].strip().lower() != "application/json":
        raise LineError(415, f"The content type, {content_type or 'none'}, is not supported")
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise LineError(413, "Request Entity Too Large")
    try:
        # orjson parses what it accepts as json does, several times faster (a multicast's 500
        # ids); what it refuses (beyond 64-bit integers, NaN, UTF-16...) json judges, as before
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw)
    except ValueError as exc:
        line, column = getattr(exc, "lineno", 1), getattr(exc, "colno", 1)
        raise LineError(400, f"The request body could not be parsed as JSON (line: {line}, column: {column})") \
            from None


def validate_body(schema: str, body: Any) -> None:
    to = body.get("to") if isinstance(body, dict) else None
    if (schema == "MulticastRequest" and isinstance(to, list) and 1 < len(to) <= 500
            and all(type(uid) is str for uid in to)):
        # The schema asks of ``to`` only "1 to 500 strings", which holds here: judge the rest
        # with one id in place of up to 500 (the same answer, without 500 item checks).
        body = {**body, "to": to[:1]}
    details = validation.validate(schema, body)
    if details:
        raise LineError(400, f"The request body has {len(details)} error(s)", details)


async def before(sim: SimulatorState, channel: Channel, endpoint: str) -> Fault | None:
    """Rate limit and the faults that strike before LINE accepts anything; the fault left."""
    faults.check_rate(sim, channel, endpoint)
    fault = faults.take_fault(sim, channel, endpoint)
    if fault is None:
        return None
    if fault.kind == "latency":
        await asyncio.sleep(fault.seconds)
        return None
    if fault.kind == "500":
        raise LineError(500, faults.INTERNAL_ERROR)
    if fault.kind == "timeout":
        await asyncio.sleep(fault.seconds)
        raise LineError(500, faults.INTERNAL_ERROR)
    if fault.kind == "rate_limit":
        raise LineError(429, faults.RATE_LIMITED)
    if fault.kind == "quota":
        raise LineError(429, faults.MONTHLY_LIMIT)
    return fault  # acts after acceptance (or pnp_unreachable, handled by pnp.py)


async def after(fault: Fault | None) -> None:
    """The faults that strike once LINE has accepted the request."""
    if fault is None:
        return
    if fault.kind == "500_after_accept":
        raise LineError(500, faults.INTERNAL_ERROR)
    if fault.kind == "timeout_after_accept":
        await asyncio.sleep(fault.seconds)


def deliver(sim: SimulatorState, channel: Channel, user: User, message: dict[str, Any], *, endpoint: str,
            request_id: str, retry_key: str | None, message_id: str | None = None,
            delivery_tag: str | None = None, received_at: str | None = None) -> dict[str, Any]:
    """Put one message in the user's inbox (call under the lock)."""
    entry: dict[str, Any] = {
        "message_id": message_id or new_message_id(),
        "channel_id": channel.channel_id,
        "endpoint": endpoint,
        "request_id": request_id,
        "retry_key": retry_key,
        "delivery_tag": delivery_tag,
        "message": message,
        "received_at": received_at or now_iso(),
        "opens": [],
        "clicks": [],
    }
    user.inbox.append(entry)
    return entry


def log(sim: SimulatorState, request: Request, channel: Channel, endpoint: str, status: int, *,
        retry_key: str | None = None, recipients: int = 0, delivered: int = 0, message: str | None = None,
        **extra: Any) -> None:
    with sim.lock:
        counters = channel.counters
        name = f"{endpoint} {status}"
        counters[name] = counters.get(name, 0) + 1
        counters["delivered"] = counters.get("delivered", 0) + delivered
        sim.request_log.append({
            "request_id": request_id_of(request), "channel_id": channel.channel_id, "endpoint": endpoint,
            "status": status, "retry_key": retry_key, "recipients": recipients, "delivered": delivered,
            "message": message, "at": now_iso(), **extra,
        })


def retry_key_of(request: Request) -> str | None:
    value = request.headers.get("x-line-retry-key")
    if value is None:
        return None
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise LineError(400, RETRY_KEY_INVALID) from None
    return str(parsed)


def accepted_before(channel: Channel, retry_key: str | None, with_sent: bool) -> LineError | None:
    """The 409 for a retry key this channel accepted in the last 24 hours (call under the lock)."""
    if retry_key is None:
        return None
    accepted = channel.retry_keys.get(retry_key)
    if accepted is None:
        return None
    request_id, sent, at = accepted
    if time.monotonic() - at > RETRY_KEY_TTL:
        del channel.retry_keys[retry_key]
        return None
    return LineError(409, RETRY_KEY_ACCEPTED, headers={"x-line-accepted-request-id": request_id},
                     extra={"sentMessages": sent} if with_sent else None)


async def send(request: Request, channel: Channel, endpoint: str) -> JSONResponse:
    """push or multicast, from the raw request to LINE's answer."""
    sim = state_of(request)
    rid = request_id_of(request)
    retry_key: str | None = None
    recipients = 0
    delivered: int | None = None  # set once LINE has accepted the request
    try:
        retry_key = retry_key_of(request)
        fault = await before(sim, channel, endpoint)
        body = await read_json(request)
        with sim.lock:
            conflict = accepted_before(channel, retry_key, with_sent=endpoint == "push")
        if conflict is not None:
            raise conflict
        validate_body("PushMessageRequest" if endpoint == "push" else "MulticastRequest", body)
        to = [body["to"]] if endpoint == "push" else list(body["to"])
        recipients = len(to)
        with sim.lock:
            # the check and the acceptance happen under one lock: two concurrent requests with
            # the same key cannot both be accepted
            conflict = accepted_before(channel, retry_key, with_sent=endpoint == "push")
            if conflict is not None:
                raise conflict
            # every id one of a user LINE knows (the users it made have LINE's id form)
            users = list(map(sim.users.get, to))
            if None in users or (sim.unaddressable and not sim.unaddressable.isdisjoint(to)):
                raise LineError(400, FAILED_TO_SEND)
            follows = channel.friendships.get
            friends = [user for uid, user in zip(to, users, strict=True)
                       if user is not None and follows(uid) == "follow"]
            faults.reserve_quota(channel, len(friends))
            sent: list[dict[str, Any]] = []
            received_at = now_iso()
            for message in body["messages"]:
                if endpoint == "push":
                    # push answers the id of each message it sent: the recipient's entry has it
                    message_id = new_message_id()
                    sent.append({"id": message_id, "quoteToken": secrets.token_urlsafe(24)})
                    for user in friends:
                        deliver(sim, channel, user, message, endpoint=endpoint, request_id=rid, retry_key=retry_key,
                                message_id=message_id, received_at=received_at)
                    continue
                # multicast answers no ids: each recipient's entry (and its id) is made when
                # their inbox is read (state.SharedDelivery), the call is recorded once
                shared = SharedDelivery({
                    "channel_id": channel.channel_id, "endpoint": endpoint, "request_id": rid,
                    "retry_key": retry_key, "delivery_tag": None, "message": message, "received_at": received_at})
                for user in friends:
                    user.inbox.append(shared)
            if retry_key is not None:
                channel.retry_keys[retry_key] = (rid, sent if endpoint == "push" else [], time.monotonic())
            delivered = len(friends)
        await after(fault)
        log(sim, request, channel, endpoint, 200, retry_key=retry_key, recipients=recipients,
            delivered=delivered, accepted=True)
    except LineError as error:
        # a failure after acceptance (injected 500) still delivered: the record says so
        log(sim, request, channel, endpoint, error.status_code, retry_key=retry_key, recipients=recipients,
            delivered=delivered or 0, accepted=delivered is not None, message=error.message)
        raise
    return JSONResponse({"sentMessages": sent} if endpoint == "push" else {})


@router.post("/v2/bot/message/push")
async def push(request: Request, channel: Channel = Depends(authenticated_channel)) -> Any:
    return await send(request, channel, "push")


@router.post("/v2/bot/message/multicast")
async def multicast(request: Request, channel: Channel = Depends(authenticated_channel)) -> Any:
    return await send(request, channel, "multicast")


# ----------------------------------------------------------------------------------------------
# validating message objects; the monthly quota
# ----------------------------------------------------------------------------------------------

RETRY_KEY_UNSUPPORTED = "The X-Line-Retry-Key header is not supported by this API"
VALIDATED = ("push", "reply", "multicast", "narrowcast", "broadcast")


async def validate_messages(request: Request, channel: Channel, kind: str) -> JSONResponse:
    """LINE's ``validate/{kind}``: the messages judged as the send would judge them (400 with
    ``details``, 415, 413, unparsable JSON), nothing sent, nothing counted; 200 ``{}``."""
    sim = state_of(request)
    endpoint = f"validate_{kind}"
    try:
        if request.headers.get("x-line-retry-key") is not None:
            raise LineError(400, RETRY_KEY_UNSUPPORTED)  # only the sends take retry keys
        validate_body("ValidateMessageRequest", await read_json(request))
    except LineError as error:
        log(sim, request, channel, endpoint, error.status_code, message=error.message)
        raise
    log(sim, request, channel, endpoint, 200)
    return JSONResponse({})


def _validator_route(kind: str) -> None:
    async def route(request: Request, channel: Channel = Depends(authenticated_channel)) -> Any:
        return await validate_messages(request, channel, kind)

    route.__name__ = f"validate_{kind}"
    router.add_api_route(f"/v2/bot/message/validate/{kind}", route, methods=["POST"],
                         summary=f"Validate message objects of a {kind} message")


for _kind in VALIDATED:
    _validator_route(_kind)


@router.get("/v2/bot/message/quota")
def message_quota(request: Request, channel: Channel = Depends(authenticated_channel)) -> Any:
    """The month's target limit: ``{"type": "none"}`` or ``{"type": "limited", "value": N}``
    (``monthly_quota`` of ``POST /_admin/channels/{id}/limits``)."""
    with state_of(request).lock:
        limit = channel.monthly_quota
    return {"type": "none"} if limit is None else {"type": "limited", "value": limit}


@router.get("/v2/bot/message/quota/consumption")
def message_quota_consumption(request: Request, channel: Channel = Depends(authenticated_channel)) -> Any:
    """Messages delivered this month (Japan time), one per recipient reached, as LINE counts."""
    with state_of(request).lock:
        return {"totalUsage": faults.this_month(channel).quota_used}


# ----------------------------------------------------------------------------------------------
# what users received; opening and clicking
# ----------------------------------------------------------------------------------------------


def image_urls(message: dict[str, Any]) -> list[str]:
    """The URLs a LINE client loads to show the message."""
    urls: list[Any] = []  # None where a field is absent; filtered below
    kind = message.get("type")
    if kind == "image":
        urls += [message.get("previewImageUrl"), message.get("originalContentUrl")]
    elif kind == "video":
        urls.append(message.get("previewImageUrl"))
    elif kind == "imagemap":
        base = message.get("baseUrl")
        if isinstance(base, str):
            urls.append(base + "/1040")
        video = message.get("video")
        if isinstance(video, dict):
            urls.append(video.get("previewImageUrl"))
    elif kind == "template":
        template = message.get("template") or {}
        urls.append(template.get("thumbnailImageUrl"))
        for column in template.get("columns") or []:
            if isinstance(column, dict):
                urls += [column.get("thumbnailImageUrl"), column.get("imageUrl")]
    elif kind == "flex":
        def walk(node: Any) -> None:
            if isinstance(node, dict):
                if node.get("type") in ("image", "icon") and isinstance(node.get("url"), str):
                    urls.append(node["url"])
                if node.get("type") == "video" and isinstance(node.get("previewUrl"), str):
                    urls.append(node["previewUrl"])
                for key, value in node.items():
                    if key != "action":
                        walk(value)
            elif isinstance(node, list):
                for item in node:
                    walk(item)

        walk(message.get("contents"))
    sender = message.get("sender")
    if isinstance(sender, dict):
        urls.append(sender.get("iconUrl"))
    seen: list[str] = []
    for url in urls:
        if isinstance(url, str) and url and url not in seen:
            seen.append(url)
    return seen


TEXT_URL = re.compile(r"https?://[^\s<>\"']+")


def links(message: dict[str, Any]) -> list[str]:
    """The links a user can open from the message: URLs in its text, then its URI actions."""
    found: list[str] = []
    if message.get("type") in ("text", "textV2") and isinstance(message.get("text"), str):
        found += TEXT_URL.findall(message["text"])

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "uri":
                for key in ("uri", "linkUri"):
                    if isinstance(node.get(key), str):
                        found.append(node[key])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk({k: v for k, v in message.items() if k != "text"})
    unique: list[str] = []
    for url in found:
        if url not in unique:
            unique.append(url)
    return unique


def _user(sim: SimulatorState, user_id: str) -> User:
    user = sim.users.get(user_id)
    if user is None:
        raise LineError(404, f"user {user_id} does not exist in the simulator")
    return user


def _entry(sim: SimulatorState, user: User, message_id: str | None, channel_id: str | None) -> dict[str, Any]:
    candidates = [e for e in user.entries(new_message_id) if channel_id is None or e["channel_id"] == channel_id]
    if message_id is not None:
        candidates = [e for e in candidates if e["message_id"] == message_id]
    if not candidates:
        raise LineError(404, "no such message in the user's inbox")
    return candidates[-1]


def _latest_message(user: User, channel_id: str | None) -> list[dict[str, Any]]:
    """The message objects of the latest message the user received (of ``channel_id`` when
    given): everything one push, multicast or PNP call delivered to them, in order."""
    candidates = [e for e in user.entries(new_message_id) if channel_id is None or e["channel_id"] == channel_id]
    if not candidates:
        raise LineError(404, "no such message in the user's inbox")
    latest = candidates[-1]
    return [e for e in candidates if e["request_id"] == latest["request_id"]
            and e["channel_id"] == latest["channel_id"]]


def _links_of(entries: list[dict[str, Any]]) -> list[tuple[dict[str, Any], str]]:
    """(message object, link) for every link of the entries, in reading order, each once."""
    found: list[tuple[dict[str, Any], str]] = []
    for entry in entries:
        for url in links(entry["message"]):
            if url not in [seen for _entry, seen in found]:
                found.append((entry, url))
    return found


async def fetch(url: str) -> dict[str, Any]:
    """GET as the LINE app does; redirects are recorded, not followed."""
    try:
        async with httpx.AsyncClient(timeout=10.0, follow_redirects=False, verify=webhooks.ssl_context()) as client:
            response = await client.get(url, headers={"User-Agent": LINE_CLIENT_UA})
    except (httpx.HTTPError, ValueError) as exc:
        return {"url": url, "status": None, "location": None, "error": f"{type(exc).__name__}: {exc}",
                "at": now_iso()}
    return {"url": url, "status": response.status_code, "location": response.headers.get("location"),
            "error": None, "at": now_iso()}


@admin_router.get("/users/{user_id}/messages")
def received(user_id: str, request: Request, channel_id: str | None = None) -> Any:
    sim = state_of(request)
    with sim.lock:
        user = _user(sim, user_id)
        return [e for e in user.entries(new_message_id) if channel_id is None or e["channel_id"] == channel_id]


class OpenIn(BaseModel):
    message_id: str | None = None
    channel_id: str | None = None


class ClickIn(OpenIn):
    url: str | None = None
    index: int = 0


def _clicked_entries(sim: SimulatorState, user: User, message_id: str | None,
                     channel_id: str | None) -> list[dict[str, Any]]:
    """The message object ``message_id``, or without one the latest message's objects."""
    if message_id is not None:
        return [_entry(sim, user, message_id, channel_id)]
    return _latest_message(user, channel_id)


@admin_router.get("/users/{user_id}/links")
def message_links(user_id: str, request: Request, message_id: str | None = None,
                  channel_id: str | None = None) -> Any:
    """The links (what ``click`` chooses from, by ``index``) and images of the message object
    ``message_id``, or without one of the latest message the user received (all its objects)."""
    sim = state_of(request)
    with sim.lock:
        entries = _clicked_entries(sim, _user(sim, user_id), message_id, channel_id)
        images: list[str] = []
        for entry in entries:
            images += [url for url in image_urls(entry["message"]) if url not in images]
        return {"message_id": entries[0]["message_id"], "message_ids": [e["message_id"] for e in entries],
                "links": [url for _entry, url in _links_of(entries)], "images": images}


@admin_router.post("/users/{user_id}/open")
async def open_message(user_id: str, request: Request, body: OpenIn | None = None) -> Any:
    """The user looks at the message: the LINE app loads each of its images."""
    body = body or OpenIn()
    sim = state_of(request)
    with sim.lock:
        entry = _entry(sim, _user(sim, user_id), body.message_id, body.channel_id)
        urls = image_urls(entry["message"])
    fetched = [await fetch(url) for url in urls]
    with sim.lock:
        entry["opens"].append({"at": now_iso(), "fetched": fetched})
    return {"message_id": entry["message_id"], "fetched": fetched}


@admin_router.post("/users/{user_id}/click")
async def click(user_id: str, body: ClickIn, request: Request) -> Any:
    """The user taps a link: ``url``, or the ``index``-th (default: the first) link of the message
    object ``message_id``, or without one of the latest message the user received (its message
    objects' links in order, as ``GET /_admin/users/{id}/links`` lists them)."""
    sim = state_of(request)
    with sim.lock:
        found = _links_of(_clicked_entries(sim, _user(sim, user_id), body.message_id, body.channel_id))
    available = [url for _entry, url in found]
    if body.url is not None:
        if body.url not in available:
            raise LineError(400, f"the message has no link {body.url}; it has {available}")
        entry, url = found[available.index(body.url)]
    else:
        if not 0 <= body.index < len(available):
            raise LineError(400, f"the message has {len(available)} link(s)")
        entry, url = found[body.index]
    outcome = await fetch(url)
    with sim.lock:
        entry["clicks"].append(outcome)
    return {"message_id": entry["message_id"], **outcome}


@admin_router.get("/channels/{channel_id}/stats")
def channel_stats(channel_id: str, request: Request) -> Any:
    """Running totals for a channel: calls answered per endpoint and status (``"multicast 200"``)
    and messages delivered (``"delivered"``); cheap to poll, unlike the full request log."""
    sim = state_of(request)
    channel = channel_or_404(sim, channel_id)
    with sim.lock:
        return dict(channel.counters)


@admin_router.get("/requests")
def requests_log(request: Request, channel_id: str | None = None, endpoint: str | None = None) -> Any:
    sim = state_of(request)
    with sim.lock:
        return [r for r in sim.request_log
                if (channel_id is None or r["channel_id"] == channel_id)
                and (endpoint is None or r["endpoint"] == endpoint)]
