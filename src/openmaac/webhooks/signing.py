"""Webhook bodies and signatures, with nothing but the standard library.

Bodies are serialised exactly like the spec's samples: Python's default ``json.dumps``
(separators ``", "`` and ``": "``, non-ASCII escaped as ``\\uXXXX``), so a receiver that
re-serialises the parsed JSON with Python defaults gets the same bytes we signed.
The signature is the hex HMAC-SHA256 of the exact bytes sent, keyed with the share secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import date, datetime
from typing import Any


def _default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def dumps(value: Any) -> str:
    """``json.dumps`` with its defaults (the spec's byte format)."""
    return json.dumps(value, default=_default)


def render_body(style: str, topic: str, timestamp: str, data: Any, *, event_id: str | None = None) -> str:
    """The request body for one endpoint style.

    ``maac``: ``{"timestamp", "topic", "data"}`` (file 003).
    ``cdh``: ``{"event", "timestamp", "source", ["event_id",] "data"}`` (file 004).
    ``raw``: ``data`` alone (callbacks such as the bind-link webhook of file 001).
    """
    if style == "cdh":
        envelope: dict[str, Any] = {"event": topic, "timestamp": timestamp, "source": "maac"}
        if event_id is not None:
            envelope["event_id"] = event_id
        envelope["data"] = data
        return dumps(envelope)
    if style == "raw":
        return dumps(data)
    return dumps({"timestamp": timestamp, "topic": topic, "data": data})


def sign(secret: str, body: bytes | str) -> str:
    """Hex HMAC-SHA256 of ``body`` keyed with ``secret`` (the ``CrescLab-Signature`` header)."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    return hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes | str, signature: str | None) -> bool:
    """True when ``signature`` is the ``CrescLab-Signature`` of ``body`` under ``secret``.

    Pass the raw request body (bytes as received, or the decoded text). Constant-time.
    """
    if not signature:
        return False
    return hmac.compare_digest(sign(secret, body), signature.strip().lower())
