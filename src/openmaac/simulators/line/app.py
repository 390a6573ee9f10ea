"""The LINE simulator: the Messaging API paths openmaac calls, and an admin API to drive users.

Two faces:
- LINE's own API (``/v2/bot/...``), authenticated by the channel access token, answering with
  LINE's status codes and error bodies (the LINE Messaging API reference).
- ``/_admin/...``: register channels (Official Accounts) and their webhook URL, create
  simulated users, make a user follow, block, send a message or tap a postback; each of those
  sends a correctly signed webhook to the channel, as LINE does.

Run alone with ``openmaac simulate`` or mounted by ``openmaac serve`` at ``/_simulators/line``.
"""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from openmaac.simulators.line import faults, messaging, pnp, webhooks
from openmaac.simulators.line.common import (  # noqa: F401 (re-exported)
    AUTH_INVALID,
    AUTH_REQUIRED,
    LineError,
    authenticated_channel,
    channel_or_404,
    channel_or_404_async,
    state_of,
)
from openmaac.simulators.line.state import Channel, ChannelDirectory, SimulatorState, User

# ----------------------------------------------------------------------------------------------
# LINE's API
# ----------------------------------------------------------------------------------------------

line_router = APIRouter()


@line_router.get("/v2/bot/profile/{user_id}")
def get_profile(user_id: str, request: Request, channel: Channel = Depends(authenticated_channel)) -> Any:
    """A friend's profile; 404 ``Not found`` for a user who never followed, blocked, or is unknown."""
    sim = state_of(request)
    with sim.lock:
        user = sim.users.get(user_id)
        if user is None or channel.friendships.get(user_id) != "follow":
            raise LineError(404, "Not found")
        return user.profile()


@line_router.get("/v2/bot/info")
def get_bot_info(channel: Channel = Depends(authenticated_channel)) -> Any:
    return {
        "userId": channel.bot_user_id,
        "basicId": "@" + channel.channel_id[-7:],
        "displayName": channel.display_name,
        "chatMode": "bot",
        "markAsReadMode": "auto",
    }


# ----------------------------------------------------------------------------------------------
# Admin API (the simulator's own; not LINE's)
# ----------------------------------------------------------------------------------------------

admin_router = APIRouter(prefix="/_admin")


class ChannelIn(BaseModel):
    channel_id: str = Field(min_length=1)
    channel_secret: str = Field(min_length=1)
    access_token: str = Field(min_length=1)
    webhook_url: str | None = None


class UserIn(BaseModel):
    display_name: str | None = None
    user_id: str | None = Field(default=None, pattern=r"^U[0-9a-f]{32}$")
    picture_url: str | None = None
    status_message: str | None = None
    language: str = "zh-TW"
    phone: str | None = None


class ChannelRef(BaseModel):
    channel_id: str


class MessageIn(ChannelRef):
    text: str = Field(min_length=1, max_length=5000)


class PostbackIn(ChannelRef):
    data: str = Field(min_length=1, max_length=300)
    params: dict[str, str] | None = None


def _user(sim: SimulatorState, user_id: str) -> User:
    user = sim.users.get(user_id)
    if user is None:
        raise LineError(404, f"user {user_id} does not exist in the simulator")
    return user


async def _deliver(sim: SimulatorState, channel: Channel, event: dict[str, Any]) -> dict[str, Any]:
    outcome = await webhooks.send(channel, [event])
    with sim.lock:
        sim.webhook_log.append({"channel_id": channel.channel_id, "type": event["type"],
                                "webhookEventId": event["webhookEventId"], **outcome})
    return {"event": event, "webhook": outcome}


@admin_router.post("/channels")
def upsert_channel(body: ChannelIn, request: Request) -> Any:
    channel = state_of(request).upsert_channel(body.channel_id, body.channel_secret, body.access_token,
                                               body.webhook_url)
    return channel.public()


@admin_router.get("/channels")
def list_channels(request: Request) -> Any:
    sim = state_of(request)
    sim.sync_directory()
    with sim.lock:
        return [channel.public() for channel in sim.channels.values()]


@admin_router.post("/users", status_code=201)
def create_user(body: UserIn, request: Request) -> Any:
    return state_of(request).add_user(**body.model_dump()).public()


class BulkUsersIn(BaseModel):
    count: int = Field(ge=1, le=1_000_000)
    display_name_prefix: str = "Simulated user "
    channel_id: str | None = Field(default=None, description="make them all friends of this channel")


@admin_router.post("/users/bulk", status_code=201)
def create_users(body: BulkUsersIn, request: Request) -> Any:
    """``count`` users at once, friends of ``channel_id`` when given, WITHOUT follow webhooks
    (for volume: the caller seeds openmaac's contacts itself). Answers their ids in order."""
    sim = state_of(request)
    channel = channel_or_404(sim, body.channel_id) if body.channel_id else None
    with sim.lock:
        ids = []
        for i in range(body.count):
            user = sim.add_user(f"{body.display_name_prefix}{i}")
            ids.append(user.user_id)
            if channel is not None:
                channel.friendships[user.user_id] = "follow"
    return {"user_ids": ids}


@admin_router.get("/channels/{channel_id}/received")
def received_counts(channel_id: str, request: Request) -> Any:
    """How many messages each user received from the channel (users with none are left out),
    and the total: the record to check "every recipient exactly once" in bulk."""
    sim = state_of(request)
    channel_or_404(sim, channel_id)
    with sim.lock:
        users: dict[str, int] = {}
        for user in sim.users.values():
            n = user.received_from(channel_id)
            if n:
                users[user.user_id] = n
    return {"total": sum(users.values()), "users": users}


@admin_router.get("/users/{user_id}")
def get_user(user_id: str, request: Request) -> Any:
    sim = state_of(request)
    with sim.lock:
        user = _user(sim, user_id)
        friendships = {cid: ch.friendships[user_id] for cid, ch in sim.channels.items() if user_id in ch.friendships}
        return {**user.public(), "friendships": friendships}


@admin_router.post("/users/{user_id}/follow")
async def follow(user_id: str, body: ChannelRef, request: Request) -> Any:
    """The user adds the Official Account as a friend (or unblocks it): a ``follow`` webhook."""
    sim = state_of(request)
    channel = await channel_or_404_async(sim, body.channel_id)
    with sim.lock:
        _user(sim, user_id)
        unblocked = channel.friendships.get(user_id) == "blocked"
        channel.friendships[user_id] = "follow"
    return await _deliver(sim, channel, webhooks.follow_event(user_id, unblocked=unblocked))


@admin_router.post("/users/{user_id}/block")
async def block(user_id: str, body: ChannelRef, request: Request) -> Any:
    """The user blocks the Official Account: an ``unfollow`` webhook; later pushes reach nobody."""
    sim = state_of(request)
    channel = await channel_or_404_async(sim, body.channel_id)
    with sim.lock:
        _user(sim, user_id)
        channel.friendships[user_id] = "blocked"
    return await _deliver(sim, channel, webhooks.unfollow_event(user_id))


@admin_router.post("/users/{user_id}/message")
async def send_message(user_id: str, body: MessageIn, request: Request) -> Any:
    """The user writes to the Official Account: a ``message`` webhook (text)."""
    sim = state_of(request)
    channel = await channel_or_404_async(sim, body.channel_id)
    with sim.lock:
        _user(sim, user_id)
    return await _deliver(sim, channel, webhooks.text_message_event(user_id, body.text))


@admin_router.post("/users/{user_id}/postback")
async def postback(user_id: str, body: PostbackIn, request: Request) -> Any:
    """The user taps a postback action: a ``postback`` webhook."""
    sim = state_of(request)
    channel = await channel_or_404_async(sim, body.channel_id)
    with sim.lock:
        _user(sim, user_id)
    return await _deliver(sim, channel, webhooks.postback_event(user_id, body.data, body.params))


@admin_router.get("/webhooks")
def webhook_log(request: Request, channel_id: str | None = None) -> Any:
    sim = state_of(request)
    with sim.lock:
        return [entry for entry in sim.webhook_log if channel_id is None or entry["channel_id"] == channel_id]


@admin_router.post("/reset")
def reset(request: Request) -> Any:
    state_of(request).reset()
    return {}


# ----------------------------------------------------------------------------------------------
# The application
# ----------------------------------------------------------------------------------------------


async def _line_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LineError)
    return JSONResponse(exc.body(), status_code=exc.status_code, headers=exc.headers)


NOT_FOUND = "Not found"


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    """A path or method the simulator does not serve, answered as LINE answers it: 404
    ``{"message": "Not found"}``, 405 ``The request method, 'GET', is not supported``."""
    assert isinstance(exc, StarletteHTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        message = NOT_FOUND
    elif exc.status_code == 405:
        message = f"The request method, '{request.method}', is not supported"
    else:
        message = str(exc.detail)
    return JSONResponse({"message": message}, status_code=exc.status_code, headers=headers)


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    # LINE answers a malformed body with 400 and its error shape; the admin API reuses it
    errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
    details = [{"message": str(e.get("msg", "")), "property": ".".join(str(p) for p in e.get("loc", ())[1:])}
               for e in errors]
    return JSONResponse({"message": f"The request body has {len(details)} error(s)", "details": details},
                        status_code=400)


class RequestIdMiddleware:
    """``x-line-request-id`` on every response of LINE's API, as LINE sends it (pure ASGI)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or "/_admin" in scope.get("path", ""):
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        scope.setdefault("state", {})["line_request_id"] = request_id

        async def send_with_id(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(name.lower() == b"x-line-request-id" for name, _ in headers):
                    headers.append((b"x-line-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_id)


def create_app(state: SimulatorState | None = None, *, directory: ChannelDirectory | None = None) -> FastAPI:
    """The simulator; ``directory``: where it finds channels it was not told about (state.py)."""
    from fastapi.exceptions import RequestValidationError

    app = FastAPI(title="LINE simulator (openmaac)", docs_url="/_admin/docs", openapi_url="/_admin/openapi.json")
    app.state.sim = state or SimulatorState(directory)
    app.add_exception_handler(LineError, _line_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.include_router(line_router)
    app.include_router(messaging.router)
    app.include_router(pnp.router)
    app.include_router(admin_router)
    app.include_router(messaging.admin_router)
    app.include_router(faults.router)

    app.add_middleware(RequestIdMiddleware)
    return app


def serve(host: str = "127.0.0.1", port: int = 8100) -> None:
    import uvicorn

    from openmaac.simulators.line import validation

    validation.document()  # LINE's OpenAPI document, read now rather than by the first send
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")
