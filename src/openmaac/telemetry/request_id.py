"""Request ids and the access log, as a pure ASGI middleware placed outermost.

Every HTTP response carries ``X-Request-ID``: the client's own when it sent a usable one (1
to ``MAX_REQUEST_ID_LENGTH`` visible ASCII characters), else 32 fresh random hex digits (as
long as a uuid4's hex; ``os.urandom`` directly, as ``uuid.uuid4()`` spends four times as long
building a UUID object only to print it, on every request's event-loop turn). The id is
in the request's context (``telemetry.context``), so every line logged while the request
is served carries it, and it ends with one access line (logger ``openmaac.access``): method,
path without the query string (queries may carry personal data), status, duration, client
address, organisation when a token authenticated the request.
"""

from __future__ import annotations

import logging
import os
import re
import time

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaac.telemetry.context import RequestContext, request_context

HEADER = b"x-request-id"
MAX_REQUEST_ID_LENGTH = 128
_USABLE = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_LENGTH}}}")

access_logger = logging.getLogger("openmaac.access")
log = logging.getLogger("openmaac.http")


def request_id_of(scope: Scope) -> str:
    for name, value in scope.get("headers") or ():
        if name == HEADER:
            candidate = value.decode("latin-1")
            if _USABLE.fullmatch(candidate):
                return candidate
            break
    return os.urandom(16).hex()


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        # taken now: routing (mounts) may rewrite the scope
        method, path, client = scope.get("method", ""), scope.get("path", ""), scope.get("client")
        context = RequestContext(request_id_of(scope))
        token = request_context.set(context)
        header = (HEADER, context.request_id.encode("ascii"))
        status: int | None = None

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = [(name, value) for name, value in message.get("headers") or () if name.lower() != HEADER]
                headers.append(header)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            if status is not None:
                raise  # the answer has begun: the server ends the connection
            # Answered here rather than by Starlette's outer error handler, so the 500
            # carries the request id and its traceback line the request's context.
            log.exception("unhandled error serving %s %s", method, path)
            body = orjson.dumps({"detail": "A server error occurred."})
            await send_with_id({"type": "http.response.start", "status": 500, "headers": [
                (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            if self.access_log:
                self._log(method, path, client, status, started)
            request_context.reset(token)

    @staticmethod
    def _log(method: str, path: str, client: tuple[str, int] | None, status: int | None, started: float) -> None:
        duration_ms = round((time.perf_counter() - started) * 1000, 2)
        address = client[0] if client else None
        # status None: the client went away before any answer
        access_logger.info("%s %s %s %.2f ms", method, path, status if status is not None else "-", duration_ms,
                        extra={"method": method, "path": path, "status": status, "duration_ms": duration_ms,
                               "client": address})
