"""What every console answer shares: its security headers, and errors as pages (a service's
``APIError``, an unknown console address, a request that needs a sign-in)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openmaac.web.errors import APIError

if TYPE_CHECKING:
    from fastapi import FastAPI

    from openmaac.config import Settings

# Scripts only from our own files (no inline script or event handler runs); styles from our
# own CSS; images also from https (LINE message previews show the brand's own image URLs).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: https:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; "
    "frame-ancestors 'none'"
)
CONSOLE_PREFIX = "/console"
_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
]


def _is_console(path: str) -> bool:
    return path == CONSOLE_PREFIX or path.startswith(CONSOLE_PREFIX + "/")


class ConsoleHeaders:
    """Adds the security headers to every console answer; pages (not static files) are also
    never stored by caches, since they show one signed-in user's data."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not _is_console(path):
            await self.app(scope, receive, send)
            return
        static = path.startswith(CONSOLE_PREFIX + "/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                # replaced, not repeated: a view that sets one of these (the API token page's
                # Cache-Control) must not answer it twice
                replaced = {h for h, _ in _HEADERS} | (set() if static else {b"cache-control"})
                headers = [(name, value) for name, value in message.get("headers", [])
                           if name.lower() not in replaced]
                headers.extend(_HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def install(app: FastAPI, settings: Settings) -> None:
    from openmaac.console.rendering import error_page, page_actor
    from openmaac.console.session import SignInRequired, sign_in_url

    previous_api = app.exception_handlers.get(APIError)
    previous_http = app.exception_handlers.get(StarletteHTTPException)

    async def api_error(request: Request, exc: Any) -> Response:
        if _is_console(request.url.path) and not request.url.path.startswith(CONSOLE_PREFIX + "/static/"):
            return error_page(request, page_actor(request), exc)
        assert previous_api is not None
        return await previous_api(request, exc)  # type: ignore[misc,no-any-return]

    async def http_error(request: Request, exc: Any) -> Response:
        path = request.url.path
        if _is_console(path) and not path.startswith(CONSOLE_PREFIX + "/static/") and exc.status_code in (404, 405):
            detail = "Not found." if exc.status_code == 404 else f'Method "{request.method}" not allowed.'
            return error_page(request, page_actor(request), APIError(exc.status_code, {"detail": detail}))
        if previous_http is None:
            raise exc
        return await previous_http(request, exc)  # type: ignore[misc,no-any-return]

    async def sign_in_required(request: Request, exc: Any) -> Response:
        target = sign_in_url(exc.next_path)
        if request.headers.get("hx-request") == "true":
            return Response(status_code=204, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    app.add_exception_handler(APIError, api_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(SignInRequired, sign_in_required)
    app.add_middleware(ConsoleHeaders)
