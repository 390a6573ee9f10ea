"""Webhook events the simulator sends to a channel's webhook URL, signed as LINE signs them."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import weakref
from typing import Any

import httpx

from openmaac.simulators.line.state import Channel, new_webhook_event_id

_ssl_context: Any = None


def ssl_context() -> Any:
    """One TLS context for every outgoing request (building one costs ~0.1 s)."""
    global _ssl_context
    if _ssl_context is None:
        _ssl_context = httpx.create_ssl_context()
    return _ssl_context


_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, httpx.AsyncClient] = weakref.WeakKeyDictionary()


def _client() -> httpx.AsyncClient:
    """One client per event loop, keeping connections alive as LINE's webhook sender does (a new
    connection per event cost the simulator and the receiver a TCP set-up and teardown each)."""
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None or client.is_closed:
        # idle connections are dropped after 2 s, before a receiver's own keep-alive timeout
        # (uvicorn: 5 s) can close one just as a request goes out on it
        client = httpx.AsyncClient(verify=ssl_context(), follow_redirects=False,
                                   limits=httpx.Limits(max_connections=32, max_keepalive_connections=16,
                                                       keepalive_expiry=2.0))
        _clients[loop] = client
    return client


def sign(channel_secret: str, body: bytes) -> str:
    """``X-Line-Signature``: base64 of HMAC-SHA256 over the raw body, keyed by the channel secret."""
    digest = hmac.new(channel_secret.encode("utf-8"), body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def base_event(event_type: str, user_id: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {
        "type": event_type,
        "mode": "active",
        "timestamp": int(time.time() * 1000),
        "webhookEventId": new_webhook_event_id(),
        "deliveryContext": {"isRedelivery": False},
    }
    if user_id is not None:
        event["source"] = {"type": "user", "userId": user_id}
    return event


def reply_token() -> str:
    import secrets

    return secrets.token_hex(16)


def follow_event(user_id: str, *, unblocked: bool) -> dict[str, Any]:
    event = base_event("follow", user_id)
    event["replyToken"] = reply_token()
    event["follow"] = {"isUnblocked": unblocked}
    return event


def unfollow_event(user_id: str) -> dict[str, Any]:
    return base_event("unfollow", user_id)


def text_message_event(user_id: str, text: str) -> dict[str, Any]:
    import secrets

    event = base_event("message", user_id)
    event["replyToken"] = reply_token()
    event["message"] = {
        "type": "text",
        "id": str(secrets.randbelow(10**17) + 10**17),
        "quoteToken": secrets.token_urlsafe(24),
        "text": text,
    }
    return event


def postback_event(user_id: str, data: str, params: dict[str, str] | None = None) -> dict[str, Any]:
    event = base_event("postback", user_id)
    event["replyToken"] = reply_token()
    event["postback"] = {"data": data}
    if params:
        event["postback"]["params"] = params
    return event


def delivery_event(user_id: str | None, data: str) -> dict[str, Any]:
    """PNP delivery completion: ``data`` is the ``X-Line-Delivery-Tag`` (or the hashed number)."""
    event = base_event("delivery", user_id)
    event["delivery"] = {"data": data}
    return event


def envelope(channel: Channel, events: list[dict[str, Any]]) -> bytes:
    # LINE sends compact JSON; the receiver must verify the signature over these exact bytes
    return json.dumps({"destination": channel.bot_user_id, "events": events},
                      ensure_ascii=False, separators=(",", ":")).encode("utf-8")


async def send(channel: Channel, events: list[dict[str, Any]], *, timeout: float = 10.0) -> dict[str, Any]:
    """POST the events to the channel's webhook URL; what the receiver answered."""
    if not channel.webhook_url:
        return {"delivered": False, "status": None, "error": "the channel has no webhook URL"}
    body = envelope(channel, events)
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "X-Line-Signature": sign(channel.channel_secret, body),
        "User-Agent": "LineBotWebhook/2.0",
    }
    try:
        try:
            response = await _client().post(channel.webhook_url, content=body, headers=headers, timeout=timeout)
        except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError):
            # a kept-alive connection the receiver closed meanwhile: once more, on a new one
            # (the receiver de-duplicates by webhookEventId should the first have got through)
            response = await _client().post(channel.webhook_url, content=body, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        return {"delivered": False, "status": None, "error": f"{type(exc).__name__}: {exc}"}
    return {"delivered": 200 <= response.status_code < 300, "status": response.status_code, "error": None}
