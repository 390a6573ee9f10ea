"""What the simulator's routers share: LINE's error type, the state, channel authentication."""

from __future__ import annotations

from typing import Any

from fastapi import Header, Request
from starlette.concurrency import run_in_threadpool

from openmaac.simulators.line.state import Channel, SimulatorState

AUTH_REQUIRED = "Authorization header required. Must follow the scheme, 'Authorization: Bearer <ACCESS TOKEN>'"
AUTH_INVALID = ("Authentication failed due to the following reason: invalid token. "
                "Confirm that the access token in the authorization header is valid.")


class LineError(Exception):
    """An error answered with LINE's body ``{"message": ..., "details": [...]}``."""

    def __init__(self, status_code: int, message: str, details: list[dict[str, str]] | None = None,
                 headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.extra = extra or {}
        self.status_code = status_code
        self.message = message
        self.details = details
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message}
        if self.details:
            body["details"] = self.details
        body.update(self.extra)
        return body


def state_of(request: Request) -> SimulatorState:
    return request.app.state.sim  # type: ignore[no-any-return]


def authenticated_channel(request: Request, authorization: str | None = Header(default=None)) -> Channel:
    """The channel whose access token is in ``Authorization: Bearer ...``; 401 as LINE answers."""
    if not authorization or not authorization.startswith("Bearer "):
        raise LineError(401, AUTH_REQUIRED)
    channel = state_of(request).channel_by_token(authorization.removeprefix("Bearer ").strip())
    if channel is None:
        raise LineError(401, AUTH_INVALID)
    return channel


def channel_or_404(sim: SimulatorState, channel_id: str) -> Channel:
    """A registered channel (or one the directory knows); 404 otherwise. Call without the lock."""
    channel = sim.channel(channel_id)
    if channel is None:
        raise LineError(404, f"channel {channel_id} is not registered with the simulator")
    return channel


async def channel_or_404_async(sim: SimulatorState, channel_id: str) -> Channel:
    """``channel_or_404`` from a coroutine: a directory look-up runs off the event loop."""
    channel = sim.known_channel(channel_id)
    return channel if channel is not None else await run_in_threadpool(channel_or_404, sim, channel_id)
