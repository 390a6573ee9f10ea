"""Who may use the built-in simulators on the API port.

The simulators are a shared sandbox: one LINE, one Twilio account, one Mitake account, one
WhatsApp number for every organisation. Private, answering only to

- a loopback client that came straight in (no ``X-Forwarded-For``, ``Forwarded`` or
  ``X-Real-IP``: a request relayed by a proxy is treated as remote even when the proxy runs on
  this machine), or
- a request carrying ``X-Simulator-Admin-Secret`` equal to ``OPENMAAC_SIMULATOR_ADMIN_SECRET``
  (when unset, to a key derived from ``OPENMAAC_SECRET_KEY`` that only this server's own calls
  to its simulators send),

are every simulator's admin API (``/_admin/...``: reset, faults, every message sent, channel
registration) and the whole of the SMS and WhatsApp simulators: their shared demo accounts
list every organisation's messages, and their send calls take a status-callback URL the
simulator then POSTs to from this server, so open they would let anyone aim this server at
any address. Only openmaac itself needs them. LINE's bot API stays open behind its channel
tokens, as on LINE (the simulator calls only webhook URLs registered through its admin API).
Everyone else gets 403. The simulators know nothing of this: the wrapper sits around each
mounted app.

The client address is the ASGI ``client``: with uvicorn's defaults that is the socket's peer,
or, for a connection from an address in ``FORWARDED_ALLOW_IPS`` (127.0.0.1 by default), the
address that proxy put in ``X-Forwarded-For``; either way the forwarding headers themselves
make a request non-local here.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from openmaac.config import SIMULATOR_ADMIN_HEADER

Private = Callable[[str, list[str]], bool]  # (method, path segments inside the simulator)
FORWARDING_HEADERS = (b"x-forwarded-for", b"forwarded", b"x-real-ip")
REFUSAL = ("The simulators' admin API and SMS sandbox answer only to loopback clients or to requests "
           f"carrying {SIMULATOR_ADMIN_HEADER}.")


def is_admin_path(_method: str, segments: list[str]) -> bool:
    return bool(segments) and segments[0] == "_admin"


def whole_simulator(_method: str, _segments: list[str]) -> bool:
    return True


def _route_segments(scope: Scope) -> list[str]:
    """The path inside the mounted app, as its router sees it, split into segments."""
    path: str = scope.get("path", "")
    root_path: str = scope.get("root_path", "")
    if root_path and path.startswith(root_path + "/"):
        path = path[len(root_path):]
    return [segment for segment in path.split("/") if segment]


def _is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_loopback


def direct_loopback_client(scope: Scope) -> bool:
    """A loopback client that came straight in: no forwarding header (even one set by a proxy on
    this machine) and a loopback ASGI ``client``. Also guards /metrics without a token."""
    headers = scope.get("headers") or ()
    if any(name.lower() in FORWARDING_HEADERS for name, _value in headers):
        return False
    client = scope.get("client")
    return _is_loopback(client[0] if client else None)


class SimulatorAccess:
    """ASGI wrapper: ``private`` paths of ``app`` only for local clients or the admin key."""

    def __init__(self, app: ASGIApp, admin_key: str, private: Private = is_admin_path) -> None:
        self.app = app
        self.admin_key = admin_key.encode()
        self.private = private

    def allowed(self, scope: Scope) -> bool:
        headers = dict(scope.get("headers") or [])
        offered = headers.get(SIMULATOR_ADMIN_HEADER.lower().encode())
        if offered is not None and hmac.compare_digest(offered, self.admin_key):
            return True
        return direct_loopback_client(scope)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and self.private(str(scope.get("method", "GET")).upper(),
                                                                   _route_segments(scope)):
            if not self.allowed(scope):
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await JSONResponse({"detail": REFUSAL}, status_code=403)(scope, receive, send)
                return
        await self.app(scope, receive, send)
