"""Webhook bodies and signatures, with nothing but the standard library.

Bodies are serialised exactly like the spec's samples: Python's default ``json.dumps``
(separators ``", "`` and ``": "``, non-ASCII escaped as ``\\uXXXX``), so a receiver that
re-serialises the parsed JSON with Python defaults gets the same bytes we signed.
The signature is the hex HMAC-SHA256 of the exact bytes sent, keyed with the share secret.

Endpoints with the ``maac+standard`` signature scheme also get the Standard Webhooks headers
(standardwebhooks.com): ``webhook-signature`` is ``v1,`` and the base64 HMAC-SHA256 of
``"{webhook-id}.{webhook-timestamp}.{body}"``, keyed with the base64-decoded part of the
endpoint's ``whsec_`` secret; several keys give several signatures, separated by spaces.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import Any

STANDARD_SECRET_PREFIX = "whsec_"


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

    ``maac``: ``{"timestamp", "topic", "data"}`` (MAAC OpenAPI v1.1.48).
    ``cdh``: ``{"event", "timestamp", "source", ["event_id",] "data"}`` (CDH OpenAPI 2.0.1).
    ``raw``: ``data`` alone (callbacks such as the bind-link webhook of the 2021 English reference).
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


def standard_key(secret: str) -> bytes:
    """The HMAC key of a Standard Webhooks secret: the base64 after ``whsec_``."""
    encoded = secret.removeprefix(STANDARD_SECRET_PREFIX)
    try:
        key = base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)
    except binascii.Error as exc:
        raise ValueError("not a Standard Webhooks secret (whsec_ and base64)") from exc
    if not key:
        raise ValueError("empty Standard Webhooks secret")
    return key


def standard_signature(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes | str) -> str:
    """The ``webhook-signature`` header: ``v1,<base64>`` for each secret, space-separated."""
    raw = body.encode("utf-8") if isinstance(body, str) else body
    signed = msg_id.encode("utf-8") + b"." + str(timestamp).encode("ascii") + b"." + raw
    return " ".join(
        "v1," + base64.b64encode(hmac.new(standard_key(secret), signed, hashlib.sha256).digest()).decode("ascii")
        for secret in secrets
    )


def standard_headers(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes | str) -> dict[str, str]:
    """``webhook-id``, ``webhook-timestamp`` (integer seconds) and ``webhook-signature``."""
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": standard_signature(secrets, msg_id, timestamp, body)}
