"""Django's ``APPEND_SLASH``: a path that matches a route only with a trailing slash answers
301 with ``Location`` set to that path plus ``/`` (query string kept), for every method.

MAAC is a Django service: its ``CommonMiddleware`` answers so, and clients written against it
follow (a POST or PATCH redirected so loses its body, as it does against MAAC). Starlette's
own ``redirect_slashes`` answers 307 instead, also strips slashes and builds an absolute
``Location`` from the ``Host`` header; it is turned off.
"""

from __future__ import annotations

from starlette.routing import Match, Mount, Router, get_route_path
from starlette.types import ASGIApp, Receive, Scope, Send


def install(app: ASGIApp) -> None:
    """Answer the redirect where the router finds no route for the path as sent."""
    router: Router = app.router  # type: ignore[attr-defined]
    router.redirect_slashes = False
    router.default = AppendSlash(router, router.default)


class AppendSlash:
    """The router's fallback for an unmatched request (then ``not_found``)."""

    def __init__(self, router: Router, not_found: ASGIApp) -> None:
        self.router = router
        self.not_found = not_found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._matches_with_slash(scope):
            raw_path = scope.get("raw_path")
            path = raw_path.decode("latin-1") if raw_path else scope["path"]
            location = path + "/"
            if location.startswith("//"):  # never a scheme-relative URL to another host (Django does the same)
                location = "/%2F" + location[2:]
            query = scope.get("query_string", b"")
            if query:
                location += "?" + query.decode("latin-1")
            await send({"type": "http.response.start", "status": 301, "headers": [
                (b"location", location.encode("latin-1")), (b"content-length", b"0"),
                (b"content-type", b"text/html; charset=utf-8")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await self.not_found(scope, receive, send)

    def _matches_with_slash(self, scope: Scope) -> bool:
        path = get_route_path(scope)
        if path.endswith("/"):
            return False
        # matching may note things in the scope's dicts: match a copy
        slashed = {key: dict(value) if isinstance(value, dict) else value for key, value in scope.items()}
        slashed["path"] = scope["path"] + "/"
        # routes and included routers; not mounts, which match every path under their prefix
        return any(not isinstance(route, Mount) and route.matches(slashed)[0] is not Match.NONE
                   for route in self.router.routes)
