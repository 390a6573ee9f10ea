"""Request body limits per route class (``web/limits.py``), enforced while the body is read.

A pure ASGI middleware (responses keep streaming, no per-request task): a declared
``Content-Length`` over the limit is answered 413 at once, before the application runs; a
chunked body is counted as it arrives and answered 413 the moment it passes the limit, so
at most the limit (plus one chunk) is ever buffered. The 413 closes the connection
(``Connection: close``) so the server stops reading the rest of an oversized upload, and
the application, told the client went away, is not allowed to answer a second time.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaac.web.limits import RouteClass, route_class


class BodyTooLarge(Exception):
    """Raised to the application (from ``receive``) once its 413 has been sent."""


def _response(limit: RouteClass) -> tuple[Message, Message]:
    message = limit.too_large_message()
    if limit.plain_text:
        body, media_type = message.encode(), b"text/plain; charset=utf-8"
    else:
        body, media_type = orjson.dumps({"detail": message}), b"application/json"
    start: Message = {
        "type": "http.response.start",
        "status": 413,
        "headers": [(b"content-type", media_type), (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close")],
    }
    return start, {"type": "http.response.body", "body": body, "more_body": False}


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = route_class(scope.get("path", ""))
        declared = _declared_length(scope)
        if declared is not None and declared > limit.max_body_bytes:
            for message in _response(limit):
                await send(message)
            return

        received = 0
        response_started = False
        answered = False

        async def limited_receive() -> Message:
            nonlocal received, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit.max_body_bytes:
                    if response_started:
                        raise BodyTooLarge(limit.too_large_message())
                    answered = True
                    for reply in _response(limit):
                        await send(reply)
                    raise BodyTooLarge(limit.too_large_message())
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal response_started
            if answered:
                return  # the 413 is the answer; whatever the application says after it is dropped
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            # after the 413, whatever the application made of the cut-off body (FastAPI turns
            # a body error into a 400, a handler may let BodyTooLarge through) is not an error
            if not answered:
                raise
